#!/usr/bin/env bash
# Install Debian's chromium for tests/test_browser.py when it is missing (CI; needs root or sudo and an apt mirror).
# Playwright drives this system browser (executable_path=/usr/bin/chromium); it never downloads its own.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then echo "chromium present: $(chromium --version 2>/dev/null || true)"; exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "ci_browser_setup: not root and no sudo; cannot install chromium (tests/test_browser.py will skip)"; exit 0; fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci_browser_setup: no apt-get on this system; install chromium yourself (tests/test_browser.py will skip)"; exit 0
fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium \
  || { echo "ci_browser_setup: apt-get could not install chromium (tests/test_browser.py will skip)"; exit 0; }
chromium --version
