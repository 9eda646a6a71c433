#!/usr/bin/env bash
# Run the whole test suite (offline, CPU) in the project's virtual environment.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec python -m pytest -q "$@"
