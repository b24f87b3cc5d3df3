"""The accelerate setup of a run: device, precision, process group; and the checks CPU-only machines need.

Gradient accumulation is done by the loop itself (windows never cross an epoch boundary, which keeps resume
exact), so accelerate is created with an accumulation of 1.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from library.config import FurnaceConfig
from library.training.exceptions import TrainingSetupError

logger = logging.getLogger(__name__)


_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """``autocast``: the forward pass precision; ``frozen``: storage dtype of weights that do not train."""

    autocast: str
    frozen: torch.dtype


def choose_precision(config: FurnaceConfig, cuda_available: bool) -> Precision:
    """fp16 needs CUDA (CPU autocast has no fp16 path worth using); frozen weights follow the autocast dtype."""
    mode = config.training.mixed_precision
    if mode == "fp16" and not cuda_available:
        raise TrainingSetupError(
            "training.mixed_precision = \"fp16\" needs a CUDA GPU; on this machine use \"bf16\" or \"no\""
        )
    return Precision(autocast=mode, frozen=_DTYPES[mode])


def build_accelerator(config: FurnaceConfig):
    """An ``Accelerator`` for this run (gloo process group on CPU so multi-process CPU runs work; DeepSpeed when
    launched with it, see :mod:`library.training.deepspeed_setup`)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from library.training.deepspeed_setup import build_deepspeed_plugin

    cuda = torch.cuda.is_available()
    precision = choose_precision(config, cuda)
    deepspeed_plugin = build_deepspeed_plugin(config)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = [InitProcessGroupKwargs(backend="gloo")] if distributed and not cuda else []
    accelerator = Accelerator(
        mixed_precision=precision.autocast,
        gradient_accumulation_steps=1,
        step_scheduler_with_optimizer=False,
        cpu=not cuda and deepspeed_plugin is None,  # cpu=True would bypass DeepSpeed
        kwargs_handlers=handlers,
        deepspeed_plugin=deepspeed_plugin,
    )
    logger.info("accelerate: %s, %d process(es), device %s", accelerator.distributed_type.value,
                accelerator.num_processes, accelerator.device)
    return accelerator, precision
