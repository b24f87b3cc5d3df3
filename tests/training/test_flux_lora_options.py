"""FLUX.1 LoRA options through train_network.py on the tiny FLUX.1-dev model: sd-scripts' block selection
(``network_args``), DoRA, and the frozen transformer in fp8; LoKr and impossible block indices are refused in one
line before loading."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from trainer_cli import REPO, run_cli

pytestmark = pytest.mark.slow  # these tests start trainers

DOUBLE_0 = {f"lora_unet_double_blocks_0_{stream}_{part}" for stream in ("img", "txt")
            for part in ("attn_qkv", "attn_proj", "mlp_0", "mlp_2", "mod_lin")}


def _single(index: int) -> set[str]:
    return {f"lora_unet_single_blocks_{index}_{part}" for part in ("linear1", "linear2", "modulation_lin")}


def _args(model, dataset, output, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / "flux1_quickstart.toml"), "--pretrained_model_name_or_path",
            str(model), "--train_data_dir", str(dataset), "--output_dir", str(output), "--output_name", "lora",
            "--max_train_steps", "2", "--save_every_n_steps", "100", "--save_precision", "float", *extra]


def _modules(path) -> set[str]:
    return {key.split(".")[0] for key in load_file(path)}


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


@pytest.fixture(scope="module")
def dora_run(tiny_model_factory, concept_dataset, tmp_path_factory):
    """DoRA on single block 1 and the double block, selected as sd-scripts' FLUX.1 network_args say it."""
    model = tiny_model_factory("flux1-dev").folder
    output = tmp_path_factory.mktemp("flux-dora")
    run_cli("train_network.py", _args(model, concept_dataset, output, "--network_module", "networks.lora_flux",
                                      "--network_args", "train_single_block_indices=1", "--network.use_dora", "true"))
    return model, output / "lora.safetensors"


def test_block_indices_leave_the_other_blocks_out_of_the_file(dora_run):
    _, lora = dora_run
    assert _modules(lora) == DOUBLE_0 | _single(1)
    assert json.loads(_metadata(lora)["ss_network_args"]) == {
        "dora_wd": "True", "train_blocks": "all", "train_double_block_indices": "all",
        "train_single_block_indices": "1"}


def _velocity(model) -> torch.Tensor:
    from library.models.text_encoding import TextConditioning
    from library.training.flow_step import flux_prediction

    generator = torch.Generator().manual_seed(0)
    config = model.unet.config
    conditioning = TextConditioning(torch.randn(1, 6, config.joint_attention_dim, generator=generator),
                                    torch.randn(1, config.pooled_projection_dim, generator=generator))
    with torch.no_grad():
        return flux_prediction(model.unet, model.family, torch.randn(1, 16, 8, 8, generator=generator),
                               torch.tensor([0.6]), conditioning, 3.5)


def test_a_dora_file_in_the_bfl_layout_merges_as_its_live_adapters_compute(dora_run):
    """Every fused BFL module carries one magnitude per output row; split back and merged, it gives what the
    adapters it came from give."""
    from library.models.loader import load_base_model
    from library.networks import LoraOptions, merge_lora_into
    from library.networks.network import inject_lora

    model_dir, lora = dora_run
    tensors = load_file(lora)
    assert all(tensors[f"{name}.dora_scale"].shape == (tensors[f"{name}.lora_up.weight"].shape[0], 1)
               for name in _modules(lora))
    live = load_base_model(model_dir)
    options = LoraOptions(dim=4, alpha=4.0, use_dora=True, train_unet_only=True, train_single_block_indices="1")
    inject_lora(live.family, live.unet, live.text_encoders, options).load_file(lora)
    merged = load_base_model(model_dir)
    assert merge_lora_into(merged.family, merged.unet, merged.text_encoders, tensors) == 14 + 6  # q, k, v split apart
    assert torch.allclose(_velocity(live), _velocity(merged), atol=1e-5)
    assert not torch.allclose(_velocity(merged), _velocity(load_base_model(model_dir)))


def test_single_blocks_train_on_a_transformer_stored_in_fp8(tiny_model_factory, concept_dataset, tmp_path):
    """(Which weights an fp8 FLUX.1 load stores in fp8: tests/models/test_fp8.py.)"""
    output = tmp_path / "out"
    run_cli("train_network.py", _args(tiny_model_factory("flux1-dev").folder, concept_dataset, output,
                                      "--fp8_base", "true", "--network_args", "train_blocks=single"))
    assert _modules(output / "lora.safetensors") == _single(0) | _single(1)
    tensors = load_file(output / "lora.safetensors")
    assert all(tensor.any() for key, tensor in tensors.items() if key.endswith(".lora_up.weight"))
    assert _metadata(output / "lora.safetensors")["ss_fp8_base"] == "True"


@pytest.mark.parametrize(("extra", "line"), [
    (["--network.module", "lokr"], "network.module: LoKr adapters cannot be written in FLUX.1 [dev]'s LoRA layout "
     "(q, k, v fused in one module, which a Kronecker product cannot hold); use network.module = 'lora'"),
    (["--network_args", "train_single_block_indices=0-2"], "network.train_single_block_indices: block 2 does not "
     "exist; this FLUX.1 [dev] model has 2 single blocks (0-1)"),
], ids=["lokr", "block-index"])
def test_refusals_are_one_line_before_loading(tiny_model_factory, concept_dataset, tmp_path, extra, line):
    result = run_cli("train_network.py", _args(tiny_model_factory("flux1-dev").folder, concept_dataset,
                                               tmp_path / "out", *extra), check=False)
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (1, f"error: {line}")
    assert "model load" not in result.stderr
