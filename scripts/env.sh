# Sourced by scripts/train.sh and scripts/test.sh: create or reuse the project's virtual environment.
# MM_ST_VENV chooses where it lives (default .venv in the checkout). The environment is installed from the committed
# lock (requirements.lock: every package, transitive ones included, at the versions the test suite passed with), so
# two new machines get identical environments. It is rebuilt from scratch when the lock, pyproject.toml, setup.py or
# this file changes. To move the lock: run scripts/check-latest.sh (the canary), then scripts/update-lock.sh (README).
# torch is pinned in the lock to the build that lies on the project's machines; MM_ST_TORCH replaces it with another
# pip spec on other machines (e.g. "torch==2.9.1 torchvision==0.24.1" on aarch64; not what CI tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MM_ST_VENV:-$ROOT/.venv}"
LOCK="$ROOT/requirements.lock"
UV_SPEC="uv==0.13.9"  # the installer itself is pinned too
TORCH_SPEC="${MM_ST_TORCH:-}"
STAMP="$VENV/.mm_st_stamp"
WANT="$(cat "$LOCK" "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT/scripts/env.sh" | sha1sum | cut -c1-16) $TORCH_SPEC"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[mm_st] setting up $VENV from requirements.lock (first run takes a few minutes)" >&2
  python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$UV_SPEC"
  uv_install() { "$VENV/bin/uv" pip install --quiet --native-tls --python "$VENV/bin/python" "$@"; }
  if [ -n "$TORCH_SPEC" ]; then
    # Another torch: let pip (with this machine's configured sources) pick it and its own CUDA/runtime packages,
    # then install the rest of the lock unchanged.
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install --quiet --disable-pip-version-check $TORCH_SPEC
    grep -Ev '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==' "$LOCK" > "$VENV/lock-without-torch.txt"
    uv_install --no-deps -r "$VENV/lock-without-torch.txt"
  else
    uv_install --no-deps -r "$LOCK"
  fi
  uv_install --no-deps --no-build-isolation -e "$ROOT"  # setuptools comes from the lock
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
