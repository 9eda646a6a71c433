"""MM-Embed's stages on the embedded default's M-BEIR emoji tasks: does stage 2 cut the modality bias?

For each batch composition (``mixed``: tasks share a batch, UniIR's union training; ``per_dataset``: one
task per batch) and each seed, on the same data, tiny backbone, batch, steps and learning rate:

- ``stage 1``: ``RandomNegativesStage`` (in-batch negatives, MultimodalInfoNCELoss);
- ``stage 2``: ``ModalityAwareStage`` (negatives mined by that stage-1 model, modality-aware, retrained
  from the base model);
- ``stage 2 + modality``: the same with ``modality_weight=0.5`` (the mined negatives reused);
- ``stock MNRL``: stage 1's data and settings trained with sentence-transformers'
  ``MultipleNegativesRankingLoss(scale=1/temperature)`` instead of mm_st's loss (the loss swapped in
  this script, nothing else);
- ``stage 3``: continual text-to-text fine-tuning from that stage-2 model (the recipe's text pairs + 50 %
  M-BEIR rows): text->text recall before/after and the multimodal tasks' change.

Each arm is evaluated on the held-out split (391 unseen emoji; five tasks over one pool mixing images and
texts) with mm_st's local M-BEIR mteb tasks: Recall@1, Recall@5 and ``wrong_modality_at_1`` (share of
queries whose top-1 candidate has the wrong modality). Printed: the mean over seeds per arm, task and
metric, with the untrained model and chance, then each seed's key values; the raw numbers go to ``--out``
(JSON). ``stock MNRL`` and ``stage 1`` compute the same loss here (in-batch negatives, no duplicate masking),
so equal numbers are expected: a check that mm_st's loss adds nothing by accident.

Usage::

    python benchmarks/mmembed_stages.py                       # 3 seeds x 2 batchings, 250 steps per stage
    python benchmarks/mmembed_stages.py --seeds 1 --steps 50 --batchings mixed
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ARMS = ("stage 1", "stage 2", "stage 2 + modality", "stock MNRL", "stage 3")
METRICS = ("recall_at_1", "recall_at_5", "wrong_modality_at_1")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--batchings", nargs="+", default=["mixed", "per_dataset"])
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps of stages 1 and 2 and the stock arm")
    parser.add_argument("--text-steps", type=int, default=120, help="stage-3 steps")
    parser.add_argument("--modality-weight", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="where runs go (default: a new temporary directory)")
    parser.add_argument("--out", default=None, help="JSON file for the raw results")
    return parser.parse_args()


def stock_loss(plan, model):
    """sentence-transformers' MultipleNegativesRankingLoss at the recipe's temperature (the stock arm)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    return MultipleNegativesRankingLoss(model, scale=1.0 / plan.config.temperature)


def run_arm(stage, swap_loss=False):
    """One stage run; the flattened held-out scores before and after, and the wall time."""
    from mm_st.training import stage as stage_module
    from mm_st.training.stage import run_stage

    original = stage_module.build_loss
    if swap_loss:
        stage_module.build_loss = stock_loss
    start = time.perf_counter()
    try:
        result = run_stage(stage)
    finally:
        stage_module.build_loss = original
    return {"before": result.before, "after": result.after, "seconds": time.perf_counter() - start}


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    import logging

    logging.basicConfig(level=logging.WARNING)
    from mm_st.training import MMEmbedConfig
    from mm_st.training.evaluators import MBEIREvaluator
    from mm_st.training.mmembed import MMEmbedRun

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mm_st_mmembed_stages_"))
    started = time.perf_counter()
    runs: dict[str, dict[int, dict[str, dict]]] = {}
    heldout = None
    for batching in args.batchings:
        for seed in args.seeds:
            config = MMEmbedConfig.embedded_default(
                seed=seed, batch_mixing=batching, max_steps=args.steps, text_steps=args.text_steps,
                save_steps=10**6, logging_steps=50, threads=args.threads,
                output_dir=str(workdir / batching / f"seed{seed}"))
            recipe = MMEmbedRun(config)
            inputs = recipe.inputs()
            heldout = inputs.eval_data
            arms = runs.setdefault(batching, {}).setdefault(seed, {})
            arms["stage 1"] = run_arm(recipe.stage_config(1, inputs))
            stage2 = recipe.stage_config(2, inputs)
            stage2.mined_negatives = str(recipe.root / "mined-negatives")
            arms["stage 2"] = run_arm(stage2)
            weighted = recipe.stage_config(2, inputs)
            weighted.mined_negatives, weighted.modality_weight = stage2.mined_negatives, args.modality_weight
            weighted.output_dir = str(recipe.root / "stage2-modality")
            arms["stage 2 + modality"] = run_arm(weighted)
            stock = recipe.stage_config(1, inputs)
            stock.output_dir = str(recipe.root / "stock-mnrl")
            arms["stock MNRL"] = run_arm(stock, swap_loss=True)
            arms["stage 3"] = run_arm(recipe.stage_config(3, inputs))
            print(f"{batching} seed {seed}: " + ", ".join(f"{arm} {r['seconds']:.0f} s" for arm, r in arms.items()),
                  flush=True)

    def summary(batching: str) -> list[str]:
        per_seed = runs[batching]
        columns = {"untrained": _mean([r["stage 1"]["before"] for r in per_seed.values()])}
        for arm in ARMS:
            columns[arm] = _mean([r[arm]["after"] for r in per_seed.values()])
        columns["stage 3 start"] = _mean([r["stage 3"]["before"] for r in per_seed.values()])
        return MBEIREvaluator.summary(columns, heldout)

    command = "python benchmarks/mmembed_stages.py " + shlex.join(sys.argv[1:])
    print(f"\n{command}\nmachine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), "
          f"seeds {args.seeds}, {args.steps} steps per stage (stage 3: {args.text_steps}), "
          f"{(time.perf_counter() - started) / 60:.1f} min")
    for batching in runs:
        print(f"\n## batches: {batching} (mean over {len(args.seeds)} seeds; 'stage 3 start' = the stage-2 model "
              "stage 3 starts from)")
        print("\n".join(summary(batching)))
        print("\nper seed, wrong_modality_at_1 (t2i, i2t) and recall_at_1 (t2i, t2t):")
        for seed, arms in runs[batching].items():
            cells = []
            for arm in ("stage 1", "stage 2", "stage 2 + modality", "stock MNRL", "stage 3"):
                after = arms[arm]["after"]
                cells.append(f"{arm}: " + " ".join(
                    f"{after.get(f'mbeir/{t}/{m}', float('nan')):.2f}" for t, m in (
                        ("Emoji_t2i", "wrong_modality_at_1"), ("Emoji_i2t", "wrong_modality_at_1"),
                        ("Emoji_t2i", "recall_at_1"), ("Emoji_t2t", "recall_at_1"))))
            print(f"  seed {seed}: " + " | ".join(cells))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": command, "runs": runs}, indent=2) + "\n", encoding="utf-8")


def _mean(flats: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted(set().union(*flats))
    return {k: statistics.fmean(f[k] for f in flats if k in f) for k in keys}


if __name__ == "__main__":
    main()
