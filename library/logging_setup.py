"""Console logging for the command-line programs: our messages at the chosen level, third-party chatter quiet."""

from __future__ import annotations

import logging
import os
import warnings

_NOISY_LOGGERS = ("bitsandbytes", "diffusers", "transformers", "accelerate", "peft", "torch.distributed")


def configure_logging(level: str = "info") -> None:
    """Log ours at ``level`` through tqdm-safe handlers; libraries only at warning level and above."""
    from tqdm.contrib.logging import _TqdmLoggingHandler

    handler = _TqdmLoggingHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("library", "preprocess", "furnace", "__main__"):
        logging.getLogger(name).setLevel(level.upper())
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")
