"""sample.compare_at_end: a LoRA run writes the compare grid of its saved files at the end (real trainer CLI)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from trainer_cli import base_args, read_events, run_cli

from library.sampling.grid import make_grid
from library.tools.compare import collect_loras


@pytest.mark.slow
def test_lora_run_writes_the_grid_of_its_files(tiny_sd1, small_dataset, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("frnc, red circle --d 3\nfrnc, red circle, blue background --d 4\n", encoding="utf-8")
    output = tmp_path / "out"
    # 4 steps per epoch: a step file at 3, an epoch file at 4 (its name's number, 1, sorts before 3), the final at 6
    args = base_args(tiny_sd1.folder, small_dataset, output, max_train_steps=6, save_every_n_steps=3,
                     save_every_n_epochs=1, learning_rate=5e-2, sample_prompts=prompts)
    args += ["--sample.steps", "2", "--sample.compare_at_end", "true", "--sample.compare_strengths", "[0.5, 1.5]"]
    run_cli("train_network.py", args)

    files = ["lora-step00000003", "lora-000001", "lora"]
    assert [path.stem for path in collect_loras([output])] == files  # the tool's order for the run folder
    compare = output / "compare"
    singles = {path.name for path in (compare / "singles").glob("*.png")}
    cells = [(stem, s, p) for stem in files for s in ("0.5", "1.5") for p in (0, 1)]
    expected = {f"{stem}_s{s}_p{p:02d}_{3 + p}.png" for stem, s, p in cells}
    assert singles == expected  # files x strengths x prompts

    def cell(stem: str, strength: str, prompt: int) -> Image.Image:
        return Image.open(compare / "singles" / f"{stem}_s{strength}_p{prompt:02d}_{3 + prompt}.png")

    def pixels(image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB"), dtype=np.int16)

    rows = [[cell(stem, s, p) for s in ("0.5", "1.5")] for stem in files for p in (0, 1)]
    labels = [f"{stem}: {line.split(' --')[0]}" for stem in files for line in prompts.read_text().splitlines()]
    in_tool_order = make_grid(rows, labels, ["strength 0.5", "strength 1.5"])
    assert np.array_equal(pixels(Image.open(compare / "compare.png")), pixels(in_tool_order))  # same rows, same order
    assert rows[0][0].size == (64, 64)
    assert np.abs(pixels(rows[0][0]) - pixels(rows[0][1])).max() > 0  # strength changes the picture
    assert np.abs(pixels(rows[0][1]) - pixels(rows[4][1])).max() > 0  # so does the file (step 3 vs final)
    event = next(event for event in read_events(output) if event["event"] == "compare")
    assert event["images"] == 12 and event["file"].endswith("compare.png")
    assert [event["event"] for event in read_events(output)][-1] == "done"
