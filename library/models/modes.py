"""Train/eval modes of a model's modules for passes that must not behave like training steps.

A module's mode switches dropout (peft's LoRA dropout among it) and transformers' activation checkpointing, which
engages only in training mode. Validation and previews run in eval mode and must hand the modules back exactly as
they found them: a trained module in training mode, a frozen one in eval.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch


@contextlib.contextmanager
def evaluating(modules: Iterable[torch.nn.Module]) -> Iterator[None]:
    """Eval mode inside the block; afterwards every sub-module gets back its own previous mode."""
    modules = list(modules)
    modes = [(sub, sub.training) for module in modules for sub in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training
