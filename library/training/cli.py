"""What the trainer entry points share: config from the command line, logging, one-line user errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from library.config import FurnaceConfig, exit_on_config_error, parse_cli
from library.logging_setup import configure_logging

logger = logging.getLogger("furnace")


def run_trainer(argv: Sequence[str], program: str, run: Callable[[FurnaceConfig], Path | None]) -> int:
    """Parse, train, report: exit 2 on a bad config, 1 on a user-fixable failure, 0 when done or stopped."""
    with exit_on_config_error():
        config = parse_cli(argv, program=program)
    configure_logging(config.logging.log_level)
    from library.training.errors import USER_ERRORS

    try:
        final = run(config)
    except USER_ERRORS as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    if final is not None:
        logger.info("done: %s", final)
    return 0
