"""Helpers for the tool tests: making LoRA files, running the tool CLI, comparing LoRA updates."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import torch
from trainer_cli import run_python

from library.models.families import get_family
from library.models.tiny import build_components, tiny_configs
from library.networks import LoraOptions, inject_lora, lora_metadata, read_lora_file, split_modules
from library.networks.lora_file import ModuleWeights
from library.networks.metadata import TrainingInfo

def make_lora_file(family_name: str, path: Path, seed: int = 1, **options: object) -> Path:
    """A LoRA (or, with ``module="lokr"``, LoKr) file for the tiny ``family_name`` model (seed-0 weights) whose
    adapter tensors that start at zero (LoRA's up, LoKr's last w2 factor) are random instead."""
    family = get_family(family_name)
    components = build_components(family, tiny_configs(family), seed=0)
    lora_options = LoraOptions(**{"dim": 4, "alpha": 2.0, **options})
    network = inject_lora(family, components.unet, components.text_encoders, lora_options)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.trainable_parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    info = TrainingInfo(output_name=path.stem, resolution=(64, 64), learning_rate=1e-4, training_started_at=time.time())
    network.save(path, "float", lora_metadata(family, lora_options, info))
    return path


def run_tool(*args: object, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m library.tools ARGS`` as a user runs it; on unexpected failure show its output."""
    return run_python(["-m", "library.tools", *map(str, args)], "tool", timeout, check, env={"OMP_NUM_THREADS": "1"})


def lora_deltas(path: Path, ratio: float = 1.0) -> dict[str, torch.Tensor]:
    """Each module's update ``ratio * alpha/rank * up @ down`` (flattened to 2-D) read from a LoRA file."""
    tensors, _ = read_lora_file(path)
    deltas = {}
    for name, weights in split_modules(tensors, str(path)).items():
        up = weights.up.float().reshape(weights.up.shape[0], -1)
        down = weights.down.float().reshape(weights.rank, -1)
        deltas[name] = (up @ down) * weights.scale * ratio
    return deltas


def module_update(weights: ModuleWeights) -> torch.Tensor:
    """A module's update ``up @ down * alpha/rank`` as a 2-D float64 matrix (convs flattened)."""
    up = weights.up.double().reshape(weights.up.shape[0], weights.rank)
    return up @ weights.down.double().reshape(weights.rank, -1) * weights.scale


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-12))


@torch.no_grad()
def model_outputs(model, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(text encoder hidden states, UNet prediction) of ``model`` on fixed inputs: what a LoRA changes."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 1000, (1, 77), generator=generator)
    hidden = model.text_encoders[0](ids).last_hidden_state
    config = model.unet.config
    latents = torch.randn(1, config.in_channels, 8, 8, generator=generator)
    context = torch.randn(1, 77, config.cross_attention_dim, generator=generator)
    return hidden, model.unet(latents, 500, encoder_hidden_states=context).sample
