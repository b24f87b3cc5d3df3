#!/usr/bin/env python
"""DreamBooth for Stable Diffusion: `python train_dreambooth.py --config configs/dreambooth_quickstart.toml`."""

import sys

from library.training.dreambooth_main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
