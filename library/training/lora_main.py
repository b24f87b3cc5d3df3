"""Entry point of ``train_network.py``: resolve the config, load the base model, report what will run."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from library.config import exit_on_config_error, parse_cli
from library.models.errors import ModelLoadError

logger = logging.getLogger("furnace")


def main(argv: Sequence[str]) -> int:
    with exit_on_config_error():
        config = parse_cli(argv, program="train_network.py")
    logging.basicConfig(level=config.logging.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from library.models.loader import load_base_model

    try:
        model = load_base_model(
            config.model.pretrained_model_name_or_path,
            family=config.model.family,
            vae=config.model.vae,
            config_dir=config.model.config_dir,
        )
    except ModelLoadError as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    for line in model.summary_lines():
        logger.info("%s", line)
    return 0
