"""What the trainer entry points share: config from the command line, logging, one-line user errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from library.config import ConfigError, FurnaceConfig, parse_cli
from library.logging_setup import configure_logging

logger = logging.getLogger("furnace")


def run_trainer(argv: Sequence[str], program: str, run: Callable[[FurnaceConfig], Path | None]) -> int:
    """Parse, train, report: exit 2 on a bad config, whether parsing finds it or a check after it (settings that
    only conflict once the dataset or the trainer is known); 1 on another user-fixable failure; 0 when done or
    stopped. Both kinds are reported as their message alone, never a traceback."""
    try:
        config = parse_cli(argv, program=program)
        configure_logging(config.logging.log_level)
        return _train(config, run)
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        return 2


def _train(config: FurnaceConfig, run: Callable[[FurnaceConfig], Path | None]) -> int:
    from library.training.errors import USER_ERRORS

    try:
        final = run(config)
    except USER_ERRORS as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    except OSError as error:  # a write the saves do not cover (progress log, previews) on a full or read-only disk
        sys.stderr.write(f"error: {error}\n")
        return 1
    if final is not None:
        logger.info("done: %s", final)
    return 0
