"""What the run page reads from a run's folder: the log as a terminal shows it, followed by byte offset, and the
gallery's previews grouped by step with the settings their PNGs carry (written by the sampler's own writer)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from library.gui.events import FOLLOW_TAIL_BYTES, follow_log, log_tail
from library.gui.samples import gallery
from library.sampling.files import save_png_atomic, sample_path
from library.sampling.infotext import a1111_parameters, read_a1111_parameters
from library.sampling.prompts import SamplePrompt

BAR = "train:  {:>3}%|{:<10}| {}/4"


def _bar(done: int) -> str:
    return BAR.format(done * 25, "#" * (done * 10 // 4), done)


def test_a_progress_bar_is_one_line_and_colours_are_removed(tmp_path):
    log = tmp_path / "train.log"
    log.write_bytes(b"\x1b[32mINFO\x1b[0m loading the model\n"
                    + "".join("\r" + _bar(done) for done in range(3)).encode() + b"\x1b[A")
    first = follow_log(log, None)
    assert first.lines == ["INFO loading the model"]
    assert first.partial == _bar(2)   # the bar as last redrawn, still being redrawn
    with open(log, "ab") as handle:
        handle.write(("\r" + _bar(3) + "\r" + _bar(4) + "\nINFO done: lora.safetensors\n").encode())
    second = follow_log(log, first.next)
    assert second.lines == [_bar(4), "INFO done: lora.safetensors"] and second.partial == ""
    assert follow_log(log, second.next).lines == [] and second.next == log.stat().st_size
    assert log_tail(log, 2) == f"{_bar(4)}\nINFO done: lora.safetensors\n"


def test_a_long_log_is_followed_from_its_tail_and_a_replaced_log_starts_over(tmp_path):
    log = tmp_path / "train.log"
    lines = [f"line {number:06d} " + "x" * 80 for number in range(FOLLOW_TAIL_BYTES // 50)]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tail = follow_log(log, None, lines=5)
    assert tail.lines == lines[-5:] and tail.next == log.stat().st_size
    window = follow_log(log, None, lines=10**6)
    assert window.lines == lines[-len(window.lines):] and len(window.lines) < len(lines)   # no line cut in two
    log.write_text("a new run\n", encoding="utf-8")
    assert follow_log(log, tail.next).lines == ["a new run"]
    assert follow_log(tmp_path / "missing.log", None).lines == []


def _preview(folder: Path, step: int, index: int, prompt: SamplePrompt) -> dict:
    path = save_png_atomic(Image.new("RGB", (prompt.width, prompt.height)),
                           sample_path(folder, "lora", step, index, prompt.seed), prompt)
    return {"event": "sample", "step": step, "file": str(path), "prompt": prompt.prompt}


def test_the_gallery_groups_previews_by_step_with_their_prompt_and_seed(tmp_path):
    folder = tmp_path / "run"
    cat = SamplePrompt("a cat, sitting\non a mat", negative_prompt="blurry, lowres", width=64, height=64, steps=3,
                       cfg_scale=6.5, seed=11, sampler="euler_a")
    dog = SamplePrompt("a dog", width=64, height=32, steps=2, seed=12)
    events = [_preview(folder, 10, 0, cat), _preview(folder, 10, 1, dog), _preview(folder, 20, 0, cat),
              {"event": "step", "step": 20, "loss": 0.1}, _preview(folder, 20, 1, dog)]
    (folder / "sample" / "lora_000020_01_12.png").unlink()   # a preview deleted since
    grid = save_png_atomic(Image.new("RGB", (8, 8)), folder / "compare" / "compare.png")
    events.append({"event": "compare", "file": str(grid)})
    unsaved = events + [{"event": "sample", "step": 30, "file": str(tmp_path / "elsewhere.png"), "prompt": "x"}]

    shown = gallery(folder, unsaved)
    assert [group["step"] for group in shown["steps"]] == [10, 20]
    first, second = shown["steps"][0]["images"]
    assert first == {"path": "sample/lora_000010_00_11.png", "prompt": "a cat, sitting\non a mat",
                     "negative_prompt": "blurry, lowres", "Steps": "3", "Sampler": "Euler a", "CFG scale": "6.5",
                     "Seed": "11", "Size": "64x64"}
    assert (second["prompt"], second["Seed"], second["Size"], "negative_prompt" in second) == ("a dog", "12", "64x32",
                                                                                                False)
    assert [image["path"] for image in shown["steps"][1]["images"]] == ["sample/lora_000020_00_11.png"]
    assert shown["compare"] == "compare/compare.png"
    assert read_a1111_parameters(a1111_parameters(cat))["prompt"] == cat.prompt


def test_a_preview_without_parameters_keeps_the_events_prompt(tmp_path):
    folder = tmp_path / "run"
    path = save_png_atomic(Image.new("RGB", (8, 8)), folder / "sample" / "old.png")
    shown = gallery(folder, [{"event": "sample", "step": 4, "file": str(path), "prompt": "from the event"}])
    assert shown == {"steps": [{"step": 4, "images": [{"path": "sample/old.png", "prompt": "from the event"}]}],
                     "compare": None}
