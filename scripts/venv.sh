#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and prints its python path.
# Finds a Python 3.12 (the Lambda runtime): $PYTHON, pyenv's 3.12.x, python3.12 on PATH; falls back to any
# python3 >= 3.11 with a warning. Reinstalls only when requirements files changed (stamp file).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

find_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    local v
    v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -1 || true)
    if [ -n "$v" ]; then echo "$(pyenv root)/versions/$v/bin/python3.12"; return; fi
  fi
  if command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys' >/dev/null 2>&1; then
    command -v python3.12; return
  fi
  if python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "warning: Python 3.12 not found; using $(python3 --version) (Lambda runs 3.12)" >&2
    command -v python3; return
  fi
  echo "error: need Python 3.12 (or >= 3.11); set PYTHON=/path/to/python3.12" >&2
  exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY=$(find_python)
  echo "creating $VENV with $PY" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha"
WANT=$(cat requirements-dev.txt layers/common/requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "installing packages into $VENV (first run takes about a minute)" >&2
  if ! { "$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$VENV/bin/python" -m pip install --disable-pip-version-check -r requirements-dev.txt; } >"$VENV/pip.log" 2>&1; then
    tail -30 "$VENV/pip.log" >&2; echo "error: package install failed (full log: $VENV/pip.log)" >&2; exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
echo "$VENV/bin/python"
