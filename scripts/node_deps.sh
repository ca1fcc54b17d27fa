#!/usr/bin/env bash
# Installs the local runtime's Node packages (dynalite, the local DynamoDB: localrun/dynamo_local.py) into
# ./node_modules with `npm ci`, exactly as package-lock.json pins them. Runs npm only when node_modules is
# missing or package.json / package-lock.json changed since the last install (stamp file), so it is cheap to
# call before every `make run` / `make test`.
# Without Node.js (>= 20) and npm, or if the install fails, it warns and exits 0: the local runtime then falls
# back to moto's DynamoDB (with a warning of its own). NODE_DEPS_STRICT=1 makes those cases errors (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
STAMP=node_modules/.package-lock.sha

give_up() {
  if [ "${NODE_DEPS_STRICT:-0}" = 1 ]; then echo "error: $1" >&2; exit 1; fi
  echo "warning: $1; the local runtime will use moto's DynamoDB (slow with large tables)" >&2
  exit 0
}

sha() { if command -v sha256sum >/dev/null 2>&1; then sha256sum; else shasum -a 256; fi; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  give_up "Node.js >= 20 and npm are needed for dynalite (the local DynamoDB) and were not found"
fi
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  give_up "dynalite needs Node.js >= 20, this is $(node --version)"
fi

WANT=$(cat package.json package-lock.json | sha | cut -d' ' -f1)
if [ -d node_modules ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  exit 0
fi
echo "installing Node packages into node_modules (npm ci; a few seconds)" >&2
LOG=$(mktemp "${TMPDIR:-/tmp}/npm-ci.XXXXXX")
if ! npm ci --no-audit --no-fund >"$LOG" 2>&1; then
  tail -30 "$LOG" >&2
  give_up "npm ci failed (full log: $LOG)"
fi
rm -f "$LOG"
echo "$WANT" > "$STAMP"
