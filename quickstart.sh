#!/usr/bin/env bash
# The main job end to end on the embedded default: set up .venv, write the generated quickstart dataset if missing,
# then train configs/quickstart.toml on the toy-world base model (models/toyworld-sd1.safetensors) and print where
# its compare grid is. Extra arguments go to train_network.py.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh ""  # no extras; without an argument it would see this script's arguments
if [[ ! -d datasets/quickstart ]]; then
  python -m library.toyworld dataset --out datasets/quickstart
fi
python train_network.py --config configs/quickstart.toml "$@"
grid=output/quickstart/compare/compare.png
if [[ -f "$grid" ]]; then
  echo "quickstart: the compare grid (base at strength 0, the LoRA at 0.5 and 1, per saved file) is $grid"
fi
