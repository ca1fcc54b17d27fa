#!/usr/bin/env bash
# Installs Debian's Chromium and its chromedriver for the admin page's browser test
# (tests/e2e/test_admin_ui.py), only when they are missing. CI runs as root with Debian's package registry
# reachable; elsewhere it uses passwordless sudo if there is one, else it says what to run and the test skips
# (outside CI; in CI the test fails without a browser).
set -euo pipefail
CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver
if [ -x "$CHROMIUM" ] && [ -x "$DRIVER" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "warning: $CHROMIUM or $DRIVER is missing and this is not root: the browser test will be skipped" >&2
    echo "         (install them with: sudo apt-get install chromium chromium-driver)" >&2
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: no apt-get here: install Chromium and chromedriver at $CHROMIUM and $DRIVER" >&2
  exit 0
fi
LOG="${TMPDIR:-/tmp}/jastipin-chromium-install.log"
echo "installing chromium and chromium-driver (Debian packages) for the browser test" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -q && $SUDO apt-get install -y -q chromium chromium-driver; } \
    >"$LOG" 2>&1; then
  tail -20 "$LOG" >&2
  echo "error: installing chromium failed (full log: $LOG)" >&2
  exit 1
fi
