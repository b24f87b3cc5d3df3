#!/usr/bin/env bash
# The web front-end: set up .venv (with the GUI's pinned extras) and the quickstart dataset, then serve the form, the
# run queue and TensorBoard.
# Usage: ./run_gui.sh [--host 127.0.0.1] [--port 28000] [--listen --token T] [--tensorboard-port 6006]
#        [--max-concurrent N] [--models-root DIR] [--datasets-root DIR] [--runs-root DIR] [--launcher accelerate]
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh gui
if [[ ! -d datasets/quickstart ]]; then  # the quickstart presets train on it
  python -m library.toyworld dataset --out datasets/quickstart
fi
exec python -m library.gui "$@"
