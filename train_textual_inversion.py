#!/usr/bin/env python
"""Train a textual-inversion embedding: `python train_textual_inversion.py --config configs/ti_quickstart.toml`."""

import sys

from library.command_line import exit_without_teardown
from library.training.embedding_main import main

if __name__ == "__main__":
    exit_without_teardown(main(sys.argv[1:]))
