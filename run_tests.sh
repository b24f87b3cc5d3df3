#!/usr/bin/env bash
# Set up .venv (pinned installs) and run the test suite. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh dev,gui,distributed
bash scripts/install_browser.sh
exec python -m pytest "$@"
