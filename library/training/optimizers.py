"""One registry of optimizers and learning-rate schedules, by the names sd-scripts users know.

Each optimizer entry knows which package provides it and which keyword arguments it accepts, so a config can pass
``betas``/``eps``/``momentum`` generically and an unsupported combination fails with a clear message before any
training starts.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from library.config import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build one named optimizer."""

    name: str
    factory: Callable[[], type]  # imported lazily: bitsandbytes/prodigy load only when chosen
    description: str
    cuda_only: bool = False


def _bnb(class_name: str) -> Callable[[], type]:
    def load() -> type:
        import bitsandbytes.optim

        return getattr(bitsandbytes.optim, class_name)

    return load


def _prodigy() -> type:
    from prodigyopt import Prodigy

    return Prodigy


def _adafactor() -> type:
    from transformers.optimization import Adafactor

    return Adafactor


OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec("AdamW", lambda: torch.optim.AdamW, "torch AdamW"),
        OptimizerSpec("AdamW8bit", _bnb("AdamW8bit"), "bitsandbytes 8-bit AdamW (less optimizer memory)"),
        OptimizerSpec("Lion", _bnb("Lion"), "Lion (sign-based; use ~3-10x smaller learning rates than AdamW)"),
        OptimizerSpec("Lion8bit", _bnb("Lion8bit"), "bitsandbytes 8-bit Lion"),
        OptimizerSpec("Prodigy", _prodigy, "Prodigy (learning-rate free; set learning_rate to 1.0)"),
        OptimizerSpec("Adafactor", _adafactor, "Adafactor (factored second moments)"),
        OptimizerSpec("SGD", lambda: torch.optim.SGD, "SGD with optional momentum"),
    )
}

SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial")


def build_optimizer(
    name: str,
    param_groups: Iterable[dict],
    learning_rate: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] | None = None,
    eps: float | None = None,
    momentum: float | None = None,
    extra_args: dict | None = None,
) -> torch.optim.Optimizer:
    """Instantiate ``name`` over ``param_groups`` (each may carry its own ``lr``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    optimizer_class = OPTIMIZERS[name].factory()
    accepted = inspect.signature(optimizer_class.__init__).parameters
    kwargs: dict[str, object] = {"lr": learning_rate}
    candidates = {"weight_decay": weight_decay, "betas": betas, "eps": eps, "momentum": momentum}
    for key, value in candidates.items():
        if value is None:
            continue
        if key in accepted and _same_shape(accepted[key].default, value):
            kwargs[key] = value
        elif key != "weight_decay":
            logger.warning("optimizer %s has no %r option; ignoring it", name, key)
    for key, value in (extra_args or {}).items():
        if key not in accepted and not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
            raise ConfigError([
                f"optimizer.args: {name} has no option {key!r}; it accepts "
                f"{', '.join(k for k in accepted if k not in ('self', 'params'))}"
            ])
        kwargs[key] = value
    if name == "Adafactor":
        # Adafactor computes its own step size unless told to use the given lr.
        kwargs.setdefault("relative_step", False)
        kwargs.setdefault("scale_parameter", False)
        kwargs.setdefault("warmup_init", False)
    return optimizer_class(list(param_groups), **kwargs)


def _same_shape(default: object, value: object) -> bool:
    """Generic options apply only where they mean the same: Adafactor's ``eps`` is a pair, not one number."""
    return not isinstance(default, tuple) or isinstance(value, tuple)


def build_lr_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    num_cycles: int = 1,
    power: float = 1.0,
):
    """A diffusers learning-rate schedule over ``total_steps`` optimizer steps."""
    from diffusers.optimization import get_scheduler

    if name not in SCHEDULERS:
        raise ValueError(f"unknown lr_scheduler {name!r}; expected one of {', '.join(SCHEDULERS)}")
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=warmup_steps,
        num_training_steps=total_steps,
        num_cycles=num_cycles,
        power=power,
    )
