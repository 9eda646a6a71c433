#!/usr/bin/env bash
# benchmarks/gpu/run.py on a lent GPU machine (nothing reachable there): install the wheels that
# benchmarks/gpu/wheels.sh put in .whl/ (the lock's versions of what the machine's image lacks or has older)
# into /tmp/site, check the imports, then run. Arguments go to run.py (default: --out "$OUT" or gpu-results).
# Device call: command `bash benchmarks/gpu/run.sh`, carry [".whl"], timeout 600 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
"$PY" -c "import torch, transformers, sentence_transformers, peft, datasets, mm_st.losses, mm_st.mining
print('[gpu] torch', torch.__version__, 'transformers', transformers.__version__,
      'sentence-transformers', sentence_transformers.__version__, 'peft', peft.__version__)"
if [ "$#" -eq 0 ]; then set -- --out "${OUT:-gpu-results}"; fi
exec "$PY" benchmarks/gpu/run.py "$@"
