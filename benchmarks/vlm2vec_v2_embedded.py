"""VLM2Vec-V2's embedded default (``python recipes/train_vlm2vec_v2.py``): held-out Hit@1 per modality group before
and after training, over seeds.

Each run is ``run_stage(VLM2VecV2Config.embedded_default(seed=s, dataset_groups=...))`` in a scratch folder: a tiny
random Qwen2-VL, the generated layout (emoji as MMEB-train, Pillow videos as LLaVA-Hound, rendered pages as
colpali / VisRAG), V2's weights and one-dataset sub-batches; the recipe's own held-out evaluation (a quarter of the
generated items and unseen emoji, Hit@1 per dataset against its held-out targets, mean per group). Writes
``benchmarks/results/vlm2vec_v2_embedded.json`` and prints a Markdown table.

Usage::

    python benchmarks/vlm2vec_v2_embedded.py                                  # seeds 42 1 2, every group
    python benchmarks/vlm2vec_v2_embedded.py --groups image visdoc --seeds 42
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

from mm_st.training import run_stage
from mm_st.training.vlm2vec_v2 import GROUPS, VLM2VecV2Config

RESULTS = Path(__file__).parent / "results" / "vlm2vec_v2_embedded.json"


def one_run(seed: int, groups: list[str], root: Path) -> dict:
    config = VLM2VecV2Config.embedded_default(seed=seed, dataset_groups=groups, output_dir=str(root / f"seed{seed}"))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_stage(config)
    return {"seed": seed, "groups": groups, "steps": result.steps, "wall_s": round(time.perf_counter() - start, 1),
            "before": result.before, "after": result.after}


def table(runs: list[dict]) -> list[str]:
    keys = [k for k in (*(f"hit1_{g}" for g in GROUPS), "hit1_mean") if k in runs[0]["after"]]
    lines = ["| seed | steps | wall | " + " | ".join(k.removeprefix("hit1_") + " before -> after" for k in keys) + " |",
             "|---|---:|---:|" + "---|" * len(keys)]
    for run in runs:
        cells = [f"{run['before'][k]:.3f} -> {run['after'][k]:.3f}" for k in keys]
        lines.append(f"| {run['seed']} | {run['steps']} | {run['wall_s']:.0f} s | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs = [one_run(seed, args.groups, Path(scratch)) for seed in args.seeds]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
    print("\n".join(table(runs)))


if __name__ == "__main__":
    main()
