#!/usr/bin/env bash
# Install Debian's chromium for the report's browser test (tests/test_report_browser.py drives it headless over the
# DevTools pipe; no driver or Playwright download). Needs root and apt (CI runs it in .ci/run); elsewhere it says
# why it did nothing and the test skips with that reason.
#   bash scripts/install_browser.sh        (make browser)
set -euo pipefail
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null; then
    echo "browser: $(command -v "$name") ($("$name" --version 2>/dev/null || true))"
    exit 0
  fi
done
if ! command -v apt-get >/dev/null; then echo "browser: no apt-get here; install chromium, or set CHROMIUM"; exit 0; fi
if [ "$(id -u)" != 0 ]; then echo "browser: not root; run: sudo apt-get install -y chromium"; exit 0; fi
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "browser: installed $(chromium --version 2>/dev/null) in $(( $(date +%s) - start ))s"
