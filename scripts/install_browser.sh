#!/usr/bin/env bash
# The GUI's browser test drives Debian's chromium (Playwright cannot download its own browser here).
# Installs it when missing and this user may; otherwise the browser test skips and says why.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
  echo "furnace: installing Debian chromium for the browser test"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "furnace: could not install chromium; the browser test will be skipped" >&2
else
  echo "furnace: chromium not installed (apt-get install chromium); the browser test will be skipped" >&2
fi
