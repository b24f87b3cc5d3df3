#!/usr/bin/env python
"""Train a LoRA for Stable Diffusion: `python train_network.py --config configs/quickstart.toml [overrides]`."""

import sys

from library.command_line import exit_without_teardown
from library.training.lora_main import main

if __name__ == "__main__":
    exit_without_teardown(main(sys.argv[1:]))
