#!/usr/bin/env bash
# Create .venv and install Furnace's pinned dependencies; re-installs only when pyproject.toml changes.
# Usage: source scripts/setup_env.sh [extras]   (extras e.g. "dev" or "dev,gui")
set -euo pipefail

FURNACE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FURNACE_VENV:-$FURNACE_ROOT/.venv}"
EXTRAS="${1:-}"
PYTHON_BIN="${PYTHON:-}"

if [[ -z "$PYTHON_BIN" ]]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON_BIN="$candidate"; break; fi
  done
fi
if [[ -z "$PYTHON_BIN" ]]; then
  echo "furnace: no python3 found; install Python 3.11 or 3.12" >&2
  exit 1
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "furnace: creating $VENV with $PYTHON_BIN"
  "$PYTHON_BIN" -m venv "$VENV"
fi

stamp_value="$(cat "$FURNACE_ROOT/pyproject.toml" "$FURNACE_ROOT/scripts/setup_env.sh" | sha256sum | cut -c1-16)-$EXTRAS"
stamp_file="$VENV/.furnace-installed"
if [[ ! -f "$stamp_file" ]] || ! grep -qxF -- "$stamp_value" "$stamp_file"; then
  echo "furnace: installing pinned dependencies into $VENV (first run takes a few minutes)"
  # torch first and pinned: an unpinned resolver would pull a multi-GB CUDA build.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==2.13.0"
  spec="$FURNACE_ROOT"
  if [[ -n "$EXTRAS" ]]; then spec="$FURNACE_ROOT[$EXTRAS]"; fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$spec"
  # open_clip only provides the CLIP vocabulary; its torchvision dependency must not be installed.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "open_clip_torch==3.3.0"
  echo "$stamp_value" >> "$stamp_file"
fi

export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export DIFFUSERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
