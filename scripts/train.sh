#!/usr/bin/env bash
# The main job: MM-Embed's three training stages on the embedded default (tiny backbone, bundled emoji data in
# M-BEIR's layout; offline, CPU), printing held-out Recall and the wrong-modality rate after each stage.
# Arguments go to recipes/train_mmembed.py (--help lists them).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
exec python recipes/train_mmembed.py "$@"
