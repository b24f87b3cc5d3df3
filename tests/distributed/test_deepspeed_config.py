"""DeepSpeed set in the run's own TOML (``[deepspeed]``) under a plain two-process launch.

ZeRO-3 with optimizer and weight offload trains a UNet + text-encoder LoRA with gradient accumulation to the weights
plain DDP reaches (up to the rounding of DeepSpeed's CPU Adam kernel), identically on both ranks, writes one file
and a small state that resumes bit-exactly; a DreamBooth full fine-tune (UNet + text encoder) runs under ZeRO-3,
previews included.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from launch_cli import REPO, accelerate_launch
from trainer_cli import read_events

pytestmark = pytest.mark.slow
pytest.importorskip("deepspeed", reason="DeepSpeed is the optional 'distributed' extra")

PROBE = Path(__file__).with_name("rank_probe.py")
ZERO3 = {"enabled": True, "zero_stage": 3, "offload_optimizer_device": "cpu", "offload_param_device": "cpu"}
EPOCHS = 2  # of two optimizer steps each (8 images on 2 ranks, two batches accumulated)


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory) -> Path:
    from library.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("eight")
    write_dataset(root, count=8, repeats=1, seed=7)
    return root


def _toml_value(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _write_config(path: Path, model: Path, dataset: Path, output: Path, epochs: int, deepspeed: dict | None) -> Path:
    """A sectioned run TOML: UNet + text-encoder LoRA, batch 1, two batches accumulated per step."""
    sections = {
        "model": {"pretrained_model_name_or_path": str(model)},
        "dataset": {"train_data_dir": str(dataset), "resolution": 64, "batch_size": 1},
        "network": {"dim": 4, "alpha": 2},
        "optimizer": {"learning_rate": 5e-3},
        "training": {"max_train_epochs": epochs, "gradient_accumulation_steps": 2, "seed": 1},
        "output": {"output_dir": str(output), "output_name": "lora", "save_precision": "float"},
    }
    if deepspeed:
        sections["deepspeed"] = deepspeed
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ddp_reference(tiny_sd1, eight_images, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    config = _write_config(root / "ddp.toml", tiny_sd1.folder, eight_images, root / "run", EPOCHS, None)
    accelerate_launch(REPO / "train_network.py", ["--config", str(config)])
    return load_file(root / "run" / "lora.safetensors")


@pytest.fixture(scope="module")
def zero3_run(tiny_sd1, eight_images, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("zero3")
    config = _write_config(root / "zero3.toml", tiny_sd1.folder, eight_images, root / "run", EPOCHS, ZERO3)
    accelerate_launch(PROBE, [str(root / "probe"), "--config", str(config)])
    return root / "run", root / "probe"


def test_zero3_from_the_toml_trains_what_ddp_trains(zero3_run, ddp_reference):
    output, probe = zero3_run
    reports = [json.loads((probe / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert {(report["distributed_type"], report["world_size"]) for report in reports} == {("DEEPSPEED", 2)}
    ranks = [load_file(probe / f"rank{rank}.safetensors") for rank in range(2)]
    saved = load_file(output / "lora.safetensors")
    assert saved.keys() == ranks[0].keys() == ranks[1].keys() == ddp_reference.keys()
    assert all(torch.equal(ranks[0][key], ranks[1][key]) and torch.equal(saved[key], ranks[0][key]) for key in saved)
    assert any(key.startswith("lora_te_") for key in saved) and any(key.startswith("lora_unet_") for key in saved)
    movement = max(float(ddp_reference[key].abs().max()) for key in saved if key.endswith("lora_up.weight"))
    difference = max(float((saved[key] - ddp_reference[key]).abs().max()) for key in saved)
    # The same 4 steps over the same accumulation windows. Offload swaps torch's AdamW for DeepSpeed's CPU Adam,
    # a SIMD kernel built for this CPU that rounds differently; Adam's normalisation turns rounding in near-zero
    # gradients into a visible fraction of a step (1e-4 to 4e-4 here, by CPU). Other windows or a lost
    # gradient move the weights by the order of the movement itself.
    assert movement > 1e-2 and difference < 0.03 * movement, (movement, difference)
    kinds = Counter(event["event"] for event in read_events(output))
    assert kinds["start"] == kinds["done"] == kinds["checkpoint"] == 1 and kinds["step"] == 2 * EPOCHS


def test_zero3_resume_is_exact_and_its_state_is_small(zero3_run, tiny_sd1, eight_images, tmp_path):
    """Stopped after the first epoch: the resumed run starts at step 3, where a new CPU Adam's bias correction
    (beta2 ** 3 by pow()) rounds differently from the uninterrupted one's (beta2 multiplied in once per step)."""
    uninterrupted, _ = zero3_run
    output = tmp_path / "run"
    first = _write_config(tmp_path / "first.toml", tiny_sd1.folder, eight_images, output, 1, ZERO3)
    accelerate_launch(REPO / "train_network.py", ["--config", str(first), "--save_state_on_train_end", "true"])
    state_bytes = sum(path.stat().st_size for path in (output / "state").rglob("*") if path.is_file())
    unet_bytes = sum(path.stat().st_size for path in (tiny_sd1.folder / "unet").glob("*.safetensors"))
    assert state_bytes < unet_bytes / 2, (state_bytes, unet_bytes)  # trainable tensors only, not the frozen base
    accelerate_launch(REPO / "train_network.py",
                      ["--config", str(first), "--max_train_epochs", str(EPOCHS), "--resume", "latest"])
    resumed, reference = load_file(output / "lora.safetensors"), load_file(uninterrupted / "lora.safetensors")
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[key], reference[key]) for key in resumed)


def test_dreambooth_full_fine_tune_under_zero3(tiny_sd1, eight_images, tmp_path):
    from library.models.loader import load_base_model

    output, prompts = tmp_path / "run", tmp_path / "prompts.txt"
    prompts.write_text("a photo of frnc circle --s 2\n", encoding="utf-8")
    args = [
        "--pretrained_model_name_or_path", str(tiny_sd1.folder), "--train_data_dir", str(eight_images),
        "--output_dir", str(output), "--output_name", "tuned", "--resolution", "64", "--train_batch_size", "1",
        "--max_train_steps", "3", "--learning_rate", "1e-4", "--train_text_encoder", "true",
        "--instance_prompt", "a photo of frnc circle", "--class_prompt", "a photo of a circle",
        "--class_data_dir", str(tmp_path / "class"), "--num_class_images", "2",
        "--dreambooth.class_generation_steps", "2", "--deepspeed", "true", "--zero_stage", "3",
        "--sample_prompts", str(prompts), "--sample.steps", "2",
    ]
    result = accelerate_launch(REPO / "train_dreambooth.py", args)
    assert "accelerate: DEEPSPEED, 2 process(es)" in result.stderr
    events = read_events(output)
    assert Counter(event["event"] for event in events)["checkpoint"] == 1
    steps = [event for event in events if event["event"] == "step"]
    assert len(steps) == 3 and any("prior_loss" in event for event in steps)
    samples = [event for event in events if event["event"] == "sample"]  # every rank ran the preview's forwards
    assert samples and all(Path(event["file"]).is_file() for event in samples)
    tuned, base = load_base_model(output / "tuned.safetensors"), load_base_model(tiny_sd1.folder)
    for tuned_part, base_part in ((tuned.unet, base.unet), (tuned.text_encoders[0], base.text_encoders[0])):
        tuned_tensors, base_tensors = tuned_part.state_dict(), base_part.state_dict()
        assert tuned_tensors.keys() == base_tensors.keys()  # gathered whole from the ZeRO-3 shards
        assert any(not torch.equal(tuned_tensors[key], base_tensors[key]) for key in base_tensors)
