"""``model.fp8_base`` through the real trainer: the frozen base stays in float8 for the whole run (previews, validation
and gradient checkpointing included), the UNet and text-encoder adapters train, the file says so and diffusers loads
it; SDXL trains with fp32 compute; the combinations that cannot work are refused in one line."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from trainer_cli import base_args, probe, read_events, run_cli

from library.networks import read_lora_file
from library.training import lora_main

FP8, BF16, FP32 = "torch.float8_e4m3fn", "torch.bfloat16", "torch.float32"


def _trained(path) -> dict[str, float]:
    """Per key prefix (lora_unet, lora_te...): the share of the zero-initialised up factors that moved."""
    tensors, _ = read_lora_file(path)
    ups = {key: bool(tensor.any()) for key, tensor in tensors.items() if key.endswith(".lora_up.weight")}
    prefixes = {key.split("_")[1] for key in ups}
    return {prefix: sum(moved for key, moved in ups.items() if key.split("_")[1] == prefix)
            / sum(key.split("_")[1] == prefix for key in ups) for prefix in prefixes}


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


@pytest.fixture(scope="module")
def sd1_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    """A 4-step bf16 SD1 run of UNet and text-encoder LoRA with gradient checkpointing, a preview and validation."""
    root = tmp_path_factory.mktemp("fp8-sd1")
    prompts = root / "prompts.txt"
    prompts.write_text("frnc --s 2 --w 64 --h 64\n", encoding="utf-8")
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, root / "out", max_train_steps=4,
                     mixed_precision="bf16", gradient_checkpointing="true", fp8_base="true", sample_prompts=prompts,
                     sample_every_n_steps=4, **{"dataset.validation_split": 0.25,
                                                "training.validation_every_n_steps": 2})
    return probe(args, fresh=False), root / "out"


@pytest.mark.slow
def test_the_base_stays_fp8_and_both_parts_train(sd1_run):
    facts, output = sd1_run
    assert facts["base_dtypes"] == {"unet": [BF16, FP8], "text_encoder_0": [BF16, FP8]}
    assert _trained(output / "lora.safetensors") == {"unet": 1.0, "te": 1.0}
    events = [event["event"] for event in read_events(output)]
    assert "sample" in events and events.count("validation") >= 2
    assert list((output / "sample").glob("*.png"))
    metadata = _metadata(output / "lora.safetensors")
    assert (metadata["ss_fp8_base"], metadata["ss_mixed_precision"]) == ("True", "bf16")


@pytest.mark.slow
def test_diffusers_loads_the_file(sd1_run, tiny_model_factory):
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(tiny_model_factory("sd1").folder, safety_checker=None,
                                                       local_files_only=True)
    before = {name: p.clone() for name, p in pipeline.unet.named_parameters() if "attn1.to_q" in name}
    pipeline.load_lora_weights(str(sd1_run[1] / "lora.safetensors"))
    pipeline.fuse_lora()
    after = dict(pipeline.unet.named_parameters())
    assert before and all(not torch.equal(after[name.replace(".weight", ".base_layer.weight")], tensor)
                          for name, tensor in before.items() if name.endswith("to_q.weight"))


@pytest.mark.slow
def test_sdxl_trains_with_fp32_compute(tiny_model_factory, concept_dataset, tmp_path):
    args = base_args(tiny_model_factory("sdxl").folder, concept_dataset, tmp_path / "out", max_train_steps=3,
                     fp8_base="true", mixed_precision="no")
    facts = probe(args, fresh=False)
    assert facts["base_dtypes"] == {name: [FP32, FP8] for name in ("unet", "text_encoder_0", "text_encoder_1")}
    trained = _trained(tmp_path / "out" / "lora.safetensors")
    assert trained["unet"] == 1.0 and trained["te2"] == 1.0
    # SDXL reads the first encoder's penultimate layer: only its last layer's adapters get no gradient
    tensors, _ = read_lora_file(tmp_path / "out" / "lora.safetensors")
    still = {re.search(r"layers_(\d+)_", key).group(1) for key, tensor in tensors.items()
             if key.startswith("lora_te1_") and key.endswith(".lora_up.weight") and not tensor.any()}
    config = json.loads((tiny_model_factory("sdxl").folder / "text_encoder" / "config.json").read_text())
    assert 0 < trained["te1"] < 1 and still == {str(config["num_hidden_layers"] - 1)}
    assert _metadata(tmp_path / "out" / "lora.safetensors")["ss_fp8_base"] == "True"


FULL_REFUSAL = ('model.fp8_base: stores frozen weights in float8, but dreambooth.train_method = "full" trains them; '
                'set model.fp8_base = false, or train with dreambooth.train_method = "lora"')
DORA_REFUSAL = ("model.fp8_base: DoRA (network.use_dora) computes with the base weights themselves; set "
                "network.use_dora = false, or model.fp8_base = false")


@pytest.mark.slow
@pytest.mark.parametrize(("script", "extra", "line"), [
    ("train_dreambooth.py", ["--train_method", "full", "--instance_prompt", "frnc"], FULL_REFUSAL),
    ("train_network.py", ["--network.use_dora", "true"], DORA_REFUSAL),
], ids=["full-fine-tune", "dora"])
def test_refusals_are_one_line(tiny_model_factory, concept_dataset, tmp_path, script, extra, line):
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path / "out", fp8_base="true")
    result = run_cli(script, args + extra, check=False)
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (2, line)
    assert not (tmp_path / "out").exists()


def test_a_torch_without_float8_is_refused(tiny_model_factory, concept_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(torch, "float8_e4m3fn")
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path / "out", fp8_base="true")
    assert lora_main.main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"model.fp8_base: this torch build ({torch.__version__}) has no float8_e4m3fn; install torch 2.1 or later, "
        "or set model.fp8_base = false"
    )
