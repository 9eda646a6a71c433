#!/usr/bin/env bash
# Run the test suite (offline, CPU) in the project's virtual environment: what CI runs (.ci/run) and the README's
# test command. Tests run on MM_ST_TEST_WORKERS worker processes (pytest-xdist; default 2, one torch thread each;
# 0 = in this process, e.g. for --pdb). Arguments go to pytest:
#   bash scripts/test.sh                          # everything
#   bash scripts/test.sh -m "not slow"            # the quick tier for the development loop (tests/conftest.py)
#   bash scripts/test.sh tests/test_x.py -k name  # one file / test
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
# Compiled bytecode is kept (in the venv, out of the checkout): each worker and each process a test starts (recipes,
# torchrun ranks, mteb) would otherwise compile torch, transformers, mteb and mm_st from source again, seconds of CPU
# each, wherever PYTHONDONTWRITEBYTECODE is set (issue 30).
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$VENV/pycache}"
exec python -m pytest -q -n "${MM_ST_TEST_WORKERS:-2}" --dist worksteal "$@"
