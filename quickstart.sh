#!/usr/bin/env bash
# The main job end to end on the embedded default: set up .venv, build the tiny stand-in model and the generated
# quickstart dataset if missing, then train configs/quickstart.toml. Extra arguments go to train_network.py.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh
if [[ ! -f output/_models/tiny-sd1/model_index.json ]]; then
  python -m library.models.tiny --family sd1 --out output/_models/tiny-sd1 \
    --single-file output/_models/tiny-sd1.safetensors
fi
if [[ ! -d datasets/quickstart ]]; then
  python -m library.data.synthetic --out datasets/quickstart
fi
exec python train_network.py --config configs/quickstart.toml "$@"
