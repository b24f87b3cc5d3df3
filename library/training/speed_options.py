"""The speed options of a run: CPU thread counts, channels-last UNet weights, ``torch.compile`` of the UNet.

``bench/speed_options.py`` measures each against off. All are off (torch's thread defaults) unless set: on the
2-core CPU they were measured on, none made a full-size SD1.5 step faster (figures in the README's
"Benchmarks"). Threads are set before the model loads (torch refuses a new inter-op thread count once parallel
work has run); the model options apply to the UNet after the adapters are injected, so the adapter layers are
converted and compiled with it.
"""

from __future__ import annotations

import logging
import os
import shutil

import torch

from library.config.sections_train import TrainingSection
from library.training.exceptions import TrainingSetupError

logger = logging.getLogger(__name__)


def apply_process_settings(training: TrainingSection) -> None:
    """``training.cpu_threads`` / ``cpu_interop_threads`` (0 keeps torch's default); and a run that will compile
    without a compiler fails here, before anything is loaded."""
    if training.torch_compile:
        _require_compiler()
    if training.cpu_threads:
        torch.set_num_threads(training.cpu_threads)
    wanted = training.cpu_interop_threads
    if wanted and torch.get_num_interop_threads() != wanted:
        try:
            torch.set_num_interop_threads(wanted)
        except RuntimeError:
            raise TrainingSetupError(
                "training.cpu_interop_threads: torch already started its inter-op thread pool in this process; "
                "set it before anything else runs (start a fresh process) or leave it at 0"
            ) from None
    logger.info("CPU threads: %d intra-op, %d inter-op", torch.get_num_threads(), torch.get_num_interop_threads())


def apply_model_options(training: TrainingSection, unet: torch.nn.Module) -> None:
    """``training.channels_last`` and ``training.torch_compile``, in place on the UNet."""
    if training.channels_last:
        unet.to(memory_format=torch.channels_last)
        logger.info("UNet weights in channels-last memory format")
    if training.torch_compile:
        _require_compiler()
        unet.compile()
        logger.info("UNet compiled with torch.compile; the first steps include the compile time")


def _require_compiler() -> None:
    """Inductor builds C++ kernels on CPU: without a compiler the first step would fail deep inside torch."""
    if torch.cuda.is_available():
        return
    compiler = os.environ.get("CXX") or "g++"  # the compiler inductor runs (it reads $CXX the same way)
    if shutil.which(compiler) is None:
        raise TrainingSetupError(
            f"training.torch_compile needs a C++ compiler on CPU ({compiler} not found; $CXX names another); "
            "install one (e.g. the g++ package) or set training.torch_compile = false"
        )
