"""The exponential moving average (EMA) of trained weights, for both weights strategies: a LoRA run's adapters
(``network.ema_*``) and a full fine-tune's UNet (``dreambooth.use_ema``).

The average is kept in fp32 whatever dtype the weights train in, and is updated after optimizer steps from the
weights alone, so every process of a multi-process run computes the same average without communicating. With
the warm-up, the decay of update ``n`` (counting from 0) is 0 for the first (the average starts as the weights
after it) and ``min(decay, (1 + n) / (10 + n))`` after it, as diffusers' ``EMAModel``, OneTrainer and torch-ema
ramp it; without, it is ``decay`` from the start and the average starts at the initial weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from library.atomic_files import atomic_path
from library.config import ConfigError, FurnaceConfig
from library.networks import EmaInfo

Saved = Literal["ema", "raw", "both"]
_UPDATES_KEY = "updates"


@dataclass(frozen=True)
class EmaSettings:
    """How a run averages its weights, and which weights its saved files hold."""

    decay: float
    update_every: int = 1
    warmup: bool = True
    save: Saved = "ema"

    def decay_of_update(self, updates_done: int) -> float:
        """The decay applied by the update that follows ``updates_done`` earlier ones."""
        if not self.warmup:
            return self.decay
        if updates_done == 0:
            return 0.0
        return min(self.decay, (1 + updates_done) / (10 + updates_done))

    def samples_ema(self, use_ema: bool | None) -> bool:
        """Whether previews and the compare grid show the EMA (``sample.use_ema``; unset: what is saved)."""
        return use_ema if use_ema is not None else self.save != "raw"

    def info(self, weights: Literal["ema", "raw"]) -> EmaInfo:
        """The metadata record of a file holding ``weights``."""
        return EmaInfo(ema_decay=self.decay, ema_update_every=self.update_every, ema_warmup=self.warmup,
                       weights=weights)


def ema_settings(config: FurnaceConfig, lora_run: bool) -> EmaSettings | None:
    """The run's EMA (None: off). Each strategy has its own options; the other's, or ``sample.use_ema`` without
    an EMA, are refused (entry points call this before any model loads)."""
    network, dreambooth = config.network, config.dreambooth
    problems = []
    if lora_run and dreambooth.use_ema:
        problems.append("dreambooth.use_ema: applies to a full fine-tune; a LoRA run keeps its EMA with "
                        "network.ema_decay (e.g. 0.999)")
    if not lora_run and network.ema_decay:
        problems.append("network.ema_decay: applies to LoRA runs; a full fine-tune keeps its own EMA: set "
                        "dreambooth.use_ema = true (and dreambooth.ema_decay)")
    if problems:
        raise ConfigError(problems)
    if lora_run and network.ema_decay:
        settings = EmaSettings(network.ema_decay, network.ema_update_every, network.ema_warmup, network.ema_save)
    elif not lora_run and dreambooth.use_ema:
        settings = EmaSettings(dreambooth.ema_decay)
    else:
        settings = None
    if settings is None and config.sample.use_ema:
        where = "network.ema_decay > 0" if lora_run else "dreambooth.use_ema = true"
        raise ConfigError([f"sample.use_ema: there is no EMA to render from; set {where}, or unset sample.use_ema"])
    return settings


class ExponentialMovingAverage:
    """fp32 averages of named tensors (the trained weights), updated every ``update_every`` optimizer steps."""

    def __init__(self, weights: Mapping[str, torch.Tensor], settings: EmaSettings) -> None:
        self.weights, self.settings = dict(weights), settings
        self.average = {name: weight.detach().to(torch.float32, copy=True) for name, weight in self.weights.items()}
        self.updates = 0

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Fold the weights into the average when optimizer step ``step`` (counting from 1) is an update step."""
        if step % self.settings.update_every:
            return
        weight = 1.0 - self.settings.decay_of_update(self.updates)
        for name, tensor in self.weights.items():
            self.average[name].lerp_(tensor.detach().float(), weight)
        self.updates += 1

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Inside the block the weights hold the average (in their own dtype); afterwards exactly what they held."""
        with torch.no_grad():
            kept = {name: tensor.detach().to("cpu", copy=True) for name, tensor in self.weights.items()}
            for name, tensor in self.weights.items():
                tensor.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, tensor in self.weights.items():
                    tensor.copy_(kept[name])

    def save(self, path: Path) -> None:
        """The averages (fp32, the weights' names) and the update count, for an exact resume."""
        tensors = {name: average.detach().cpu().contiguous() for name, average in self.average.items()}
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary), metadata={_UPDATES_KEY: str(self.updates)})

    @torch.no_grad()
    def load(self, path: Path) -> None:
        """Restore what :meth:`save` wrote (the state manifest has checked the file and the tensors' shapes)."""
        with safe_open(str(path), framework="pt") as handle:
            for name, average in self.average.items():
                average.copy_(handle.get_tensor(name))
            self.updates = int(handle.metadata()[_UPDATES_KEY])
