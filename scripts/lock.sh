#!/usr/bin/env bash
# Re-makes layers/common/requirements.txt, the lock of the layer's runtime dependencies, from
# layers/common/requirements.in: installs it into a clean throwaway venv with the Lambda runtime's Python
# (3.12) and writes every installed package with its exact version. `sam build` installs the lock into the
# layer and scripts/venv.sh installs the same lock into the dev venv (tests/artefact checks both agree).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(PYTHON=${PYTHON:-} bash -c 'source /dev/stdin <<<"$(sed -n "/^find_python()/,/^}/p" scripts/venv.sh)"; find_python')
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install --disable-pip-version-check -q -r layers/common/requirements.in
{
  echo "# Lock of the layer's runtime dependencies: made by scripts/lock.sh from requirements.in; do not edit."
  echo "# $("$TMP/venv/bin/python" --version) ($(uname -m)); sam build installs exactly these into the layer."
  "$TMP/venv/bin/python" -m pip freeze --disable-pip-version-check --exclude pip --exclude setuptools | LC_ALL=C sort -f
} > layers/common/requirements.txt
echo "wrote layers/common/requirements.txt ($(grep -vc '^#' layers/common/requirements.txt) packages)" >&2
