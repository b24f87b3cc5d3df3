#!/usr/bin/env bash
# Set up .venv (pinned installs) and run the test suite, one pytest worker per core (FURNACE_TEST_WORKERS
# overrides; 0 runs in one process). Extra arguments go to pytest (e.g. -m "not slow" or a test path).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup_env.sh dev,gui,distributed
bash scripts/install_browser.sh
# A test module stays on one worker, so its module-scoped runs are shared by its tests.
exec python -m pytest -n "${FURNACE_TEST_WORKERS:-$(nproc)}" --dist loadscope "$@"
