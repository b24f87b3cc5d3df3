#!/usr/bin/env bash
# Create .venv and install Furnace's pinned dependencies (with the "distributed" extra, also build DeepSpeed's ops);
# installs only when pyproject.toml (or this script) changed or an extra is asked for that the venv does not have yet.
# Usage: source scripts/setup_env.sh EXTRAS   (EXTRAS e.g. "", "gui" or "dev,gui"; always given, as a sourced script
# without arguments would see its caller's)
set -euo pipefail

FURNACE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FURNACE_VENV:-$FURNACE_ROOT/.venv}"
EXTRAS="${1:-}"
if [[ ! "$EXTRAS" =~ ^[a-z,]*$ ]]; then
  echo "furnace: scripts/setup_env.sh takes extras such as \"gui\" or \"dev,gui\", got \"$EXTRAS\" (a caller's" \
       "arguments?): source it with its extras as the first argument" >&2
  return 2 2>/dev/null || exit 2
fi
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

# The stamp is one line, "<hash of pyproject.toml and this script> <installed extras, sorted>": a venv set up with
# dev,gui,distributed satisfies a request for gui, so scripts asking for fewer extras do not reinstall.
sources_hash="$(cat "$FURNACE_ROOT/pyproject.toml" "$FURNACE_ROOT/scripts/setup_env.sh" | sha256sum | cut -c1-16)"
stamp_file="$VENV/.furnace-installed"
stamp_hash="" installed=""
if [[ -f "$stamp_file" ]]; then read -r stamp_hash installed < "$stamp_file" || true; fi
if [[ "$stamp_hash" != "$sources_hash" ]]; then installed=""; fi
wanted="$(printf '%s' "$installed,$EXTRAS" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
if [[ "$stamp_hash" != "$sources_hash" || "$wanted" != "$installed" ]]; then
  echo "furnace: installing pinned dependencies into $VENV (first run takes a few minutes)"
  # torch first and pinned: an unpinned resolver would pull a multi-GB CUDA build.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==2.13.0"
  spec="$FURNACE_ROOT"
  if [[ -n "$wanted" ]]; then spec="$FURNACE_ROOT[$wanted]"; fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$spec"
  # open_clip only provides the CLIP vocabulary; its torchvision dependency must not be installed.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "open_clip_torch==3.3.0"
  if [[ ",$wanted," == *",distributed,"* ]]; then
    # DeepSpeed compiles its ops on first use; building them here (into <venv>/torch_extensions, where runs look)
    # keeps that out of the first training run.
    echo "furnace: building DeepSpeed's ops (a few minutes)"
    if ! "$VENV/bin/python" -m library.training.deepspeed_ops; then
      echo "furnace: building DeepSpeed's ops failed (see above; they need a C++ compiler and ninja)" >&2
      return 1 2>/dev/null || exit 1
    fi
  fi
  printf '%s %s\n' "$sources_hash" "$wanted" > "$stamp_file.tmp" && mv "$stamp_file.tmp" "$stamp_file"
fi

export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export DIFFUSERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
