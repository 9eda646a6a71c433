#!/usr/bin/env bash
# The main job: build a tiny model, train it on the bundled emoji data, print Recall@1 before/after.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec python recipes/demo.py "$@"
