"""Console logging for the command-line programs: our messages at the chosen level, third-party chatter quiet."""

from __future__ import annotations

import logging
import os
import sys
import warnings

_NOISY_LOGGERS = ("bitsandbytes", "diffusers", "transformers", "accelerate", "peft", "torch.distributed")


def configure_logging(level: str = "info") -> None:
    """Log ours at ``level`` through tqdm-safe handlers; libraries only at warning level and above."""
    from tqdm.contrib.logging import _TqdmLoggingHandler

    class ConsoleHandler(_TqdmLoggingHandler):
        """Writes to ``sys.stderr`` as it is when a message is logged, not as it was at set-up: a program (or a
        test harness) that replaces stderr later is followed instead of writing to a closed stream."""

        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, _value) -> None:
            pass

    handler = ConsoleHandler()
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
