#!/usr/bin/env python
"""Train an A1111 hypernetwork: `python train_hypernetwork.py --config configs/hypernetwork_quickstart.toml`."""

import sys

from library.command_line import exit_without_teardown
from library.training.hypernetwork_main import main

if __name__ == "__main__":
    exit_without_teardown(main(sys.argv[1:]))
