#!/usr/bin/env python
"""DreamBooth for Stable Diffusion: `python train_dreambooth.py --config configs/dreambooth_quickstart.toml`."""

import sys

from library.command_line import exit_without_teardown
from library.training.dreambooth_main import main

if __name__ == "__main__":
    exit_without_teardown(main(sys.argv[1:]))
