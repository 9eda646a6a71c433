#!/usr/bin/env bash
# Download, here (PyPI reachable), the wheels benchmarks/gpu/run.sh installs on the GPU machine, whose image has
# Python 3.12 with torch but older transformers / sentence-transformers / huggingface-hub and no mm_st
# dependencies beyond those. Versions come from requirements.lock; the folder .whl/ is git-ignored locally
# (.git/info/exclude) and travels with the device call's `carry`. torch is never carried (the machine's own runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
PACKAGES="transformers sentence-transformers peft datasets huggingface-hub tokenizers safetensors dill multiprocess
  fsspec hf-xet httpx httpcore h11 anyio typer shellingham click annotated-doc"
mkdir -p .whl
for name in $PACKAGES; do
  spec="$(grep -i "^${name}==" requirements.lock || true)"
  [ -n "$spec" ] || { echo "[wheels] $name is not in requirements.lock: skipped"; continue; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$spec"
done
du -sh .whl
