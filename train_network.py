#!/usr/bin/env python
"""Train a LoRA for Stable Diffusion: `python train_network.py --config configs/quickstart.toml [overrides]`."""

import sys

from library.training.lora_main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
