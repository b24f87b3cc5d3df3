"""Speed and memory options through the real trainer on the tiny model: each one's effect on the process/model."""

from __future__ import annotations

import pytest
from trainer_cli import base_args, probe, run_cli

pytestmark = pytest.mark.slow  # these tests start processes or trainers


def test_threads_channels_last_and_release_after_caching(tiny_model_factory, concept_dataset, tmp_path):
    """Thread counts are set, the UNet's convs (LoCon adapters included) are channels-last, and with both caches on
    and no previews the VAE and the frozen text encoder are freed -- and the run still trains to its final file."""
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path / "out", max_train_steps=3,
                     cache_latents="true", cache_text_encoder_outputs="true", network_train_unet_only="true")
    # 3 intra-op threads: neither torch's default here (one per core) nor the test runner's (OMP_NUM_THREADS=1).
    facts = probe(args + ["--training.cpu_threads", "3", "--training.cpu_interop_threads", "1",
                          "--training.channels_last", "true", "--network.conv_dim", "4"])
    assert (facts["threads"], facts["interop_threads"]) == (3, 1)
    assert facts["convs"] > 0 and facts["channels_last_convs"] == facts["convs"]
    assert facts["contiguous_convs"] == 0  # really re-laid out, not 1x1-degenerate
    assert not facts["vae_holds_weights"] and facts["text_encoders_hold_weights"] == [False]
    assert facts["final"] and (tmp_path / "out" / "lora.safetensors").is_file()


def test_bf16_frozen_weights_compile_and_previews_keep_the_vae(tiny_model_factory, concept_dataset, tmp_path):
    """bf16 loads the frozen UNet in bf16; torch_compile compiles the UNet in place; with previews configured
    the cached-away VAE and text encoder are kept (the previews need them)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("frnc --s 2\n", encoding="utf-8")
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path / "out", cache_latents="true",
                     cache_text_encoder_outputs="true", network_train_unet_only="true", mixed_precision="bf16",
                     sample_prompts=prompts, sample_every_n_steps=4)
    facts = probe(args + ["--training.torch_compile", "true"], setup_only=True)
    assert facts["unet_dtype"] == "torch.bfloat16"
    assert facts["unet_compiled"]
    assert facts["vae_holds_weights"] and facts["text_encoders_hold_weights"] == [True]


def test_torch_compile_without_a_compiler_fails_with_one_line(tiny_model_factory, concept_dataset, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    args = base_args(tiny_model_factory("sd1").folder, concept_dataset, tmp_path / "out")
    result = run_cli("train_network.py", args + ["--training.torch_compile", "true"], check=False)
    assert result.returncode == 1
    assert "training.torch_compile needs a C++ compiler" in result.stderr
    assert "no-such-compiler" in result.stderr and "Traceback" not in result.stderr
