"""DeepSpeed ZeRO-2 chosen at launch (``accelerate launch --use_deepspeed``) on two CPU processes: the run really uses
DeepSpeed, ranks end identical, validation loss falls, the LoRA file is written once; settings DeepSpeed would silently
change or cannot run fail in one clear line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from launch_cli import accelerate_launch
from trainer_cli import base_args, read_events, run_cli

pytestmark = pytest.mark.slow
pytest.importorskip("deepspeed", reason="DeepSpeed is the optional 'distributed' extra")

PROBE = Path(__file__).with_name("rank_probe.py")
ZERO2 = ("--use_deepspeed", "--zero_stage", "2")


@pytest.fixture(scope="module")
def eight_images(tmp_path_factory) -> Path:
    from library.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("eight")
    write_dataset(root, count=8, repeats=1, seed=7)
    return root


def _args(tiny_sd1, dataset: Path, output: Path, **overrides) -> list[str]:
    settings = {"train_batch_size": 1, "max_train_epochs": 4, "network_train_unet_only": "true",
                "learning_rate": 5e-3, "validation_split": 0.25, **overrides}
    return base_args(tiny_sd1.folder, dataset, output, **settings)


def test_zero2_two_processes_train_one_identical_lora(tiny_sd1, eight_images, tmp_path):
    output, probe = tmp_path / "run", tmp_path / "probe"
    accelerate_launch(PROBE, [str(probe), *_args(tiny_sd1, eight_images, output)], mode=ZERO2)
    reports = [json.loads((probe / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert {(r["distributed_type"], r["world_size"]) for r in reports} == {("DEEPSPEED", 2)}
    ranks = [load_file(probe / f"rank{rank}.safetensors") for rank in range(2)]
    saved = load_file(output / "lora.safetensors")
    for tensors in (ranks[1], saved):
        assert tensors.keys() == ranks[0].keys()
        assert all(torch.equal(tensors[key], ranks[0][key]) for key in tensors)
    assert all(key.startswith("lora_unet_") for key in saved)
    events = read_events(output)
    kinds = Counter(event["event"] for event in events)
    assert kinds["start"] == kinds["done"] == kinds["checkpoint"] == 1
    validation = [event["loss"] for event in events if event["event"] == "validation"]
    assert len(validation) == 2 and validation[-1] < validation[0], validation


@pytest.mark.parametrize(
    ("script", "flags", "expected"),
    [
        ("train_network.py", ["--offload_optimizer_device", "cpu", "--optimizer_type", "Lion"], "optimizer offload"),
        ("train_dreambooth.py", ["--zero_stage", "3", "--use_ema", "true"], "dreambooth.use_ema"),
        ("train_network.py", ["--zero_stage", "3", "--network.ema_decay", "0.99"], "network.ema_decay"),
        ("train_network.py", ["--zero_stage", "3", "--compare_at_end", "true"], "sample.compare_at_end"),
    ],
)
def test_unsupported_deepspeed_settings_fail_in_one_line(tiny_sd1, eight_images, tmp_path, script, flags, expected):
    output, prompts = tmp_path / "run", tmp_path / "prompts.txt"
    prompts.write_text("frnc\n", encoding="utf-8")
    args = [*_args(tiny_sd1, eight_images, output), "--deepspeed", "true", "--sample_prompts", str(prompts), *flags]
    result = run_cli(script, args, check=False)
    assert result.returncode == 2  # config errors, whichever check finds them
    errors = [line for line in result.stderr.splitlines() if line.startswith("DeepSpeed")]
    assert errors and expected in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not output.exists() or not any(output.glob("*.safetensors"))
