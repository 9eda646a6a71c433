#!/usr/bin/env bash
# Recompile requirements.lock: the newest versions that pyproject.toml's ranges (and the dev extra) allow, plus the
# pins in scripts/lock/extra.in, resolved by uv for CI's platform (CPython 3.11, x86_64 Linux).
# Run scripts/check-latest.sh first (the canary); after this, run `bash scripts/test.sh` (it rebuilds .venv from the
# new lock because the stamp includes the lock) and commit the lock only if the whole suite passes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${MM_ST_LOCK_TOOLS:-${TMPDIR:-/tmp}/mm_st-lock-tools}"
[ -x "$TOOLS/bin/uv" ] || { python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install --quiet "uv==0.13.9"; }
cd "$ROOT"
"$TOOLS/bin/uv" pip compile --native-tls --quiet pyproject.toml scripts/lock/extra.in --extra dev \
  --override scripts/lock/overrides.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --custom-compile-command "bash scripts/update-lock.sh" --upgrade -o requirements.lock
echo "requirements.lock: $(grep -c '==' requirements.lock) packages; git diff requirements.lock shows what moved."
