"""Entry point of ``train_network.py``: resolve the config, train, and turn user-facing failures into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from library.config import exit_on_config_error, parse_cli
from library.logging_setup import configure_logging

logger = logging.getLogger("furnace")


def main(argv: Sequence[str]) -> int:
    with exit_on_config_error():
        config = parse_cli(argv, program="train_network.py")
    configure_logging(config.logging.log_level)
    from library.training.errors import USER_ERRORS
    from library.training.lora_trainer import train

    try:
        final = train(config)
    except USER_ERRORS as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    if final is None:
        return 0  # stopped on request; state saved for --resume
    logger.info("done: %s", final)
    return 0
