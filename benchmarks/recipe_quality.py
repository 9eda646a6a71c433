"""Held-out quality of each recipe's embedded default vs the same run trained with stock ST MNRL.

For each recipe (``E5VConfig``, ``VLM2VecConfig``, ``MME5Config``) and each seed:

- ``recipe``: ``run_stage(Cls.embedded_default(seed=s, ...))``: the recipe's loss
  (``MultimodalInfoNCELoss`` with its temperature and hard-negative scope), trainer arguments and
  data, evaluated by ``XTDEvaluator`` (held-out emoji, text->image, mteb ``XTDT2IRetrieval``, mean
  over the 8 languages) before and after training.
- ``stock MNRL``: the same tiny backbone (same seed), the same training rows (``plan_stage`` +
  ``mm_st.training.data.training_dataset``; for mmE5 the MMEB-train negatives mined by
  ``mine_mme5_negatives`` with the untrained base model, i.e. the rows the recipe trained on, read
  back from the recipe run's mining cache; for E5-V the texts cut to ``max_text_tokens`` as the
  recipe does), the same batch size, steps, learning rate, warm-up, scheduler, gradient clipping and
  seed, trained with sentence-transformers' ``MultipleNegativesRankingLoss`` at its defaults
  (scale 20, every hard-negative column shared by all queries) through a hand-built
  ``SentenceTransformerTrainer`` + ``SentenceTransformerTrainingArguments``; evaluated with the same
  ``XTDEvaluator``.

E5-V trains on text only (NLI-layout triplets: English emoji name -> its name in another language),
so its text->image score stays near chance for both arms on a random backbone. For E5-V the script
also reports a held-out text->text score (NOT an mteb task, computed here): the emoji test split
(391 emoji unseen in training), English name -> the name in each of es, it, ko, pl, ru, tr, zh among
all 391 names of that language, Recall@1 averaged over the 7 languages (chance 1/391 = 0.0026).

Steps: the embedded defaults' (E5-V 135, VLM2Vec 150, mmE5 100); 3 recipes x 3 seeds x 2 arms took
22 min wall on the shared 2-core box. ``--max-steps N`` overrides them for both arms.

Checkpoints are not written (``save_steps`` above the step count in both arms): that changes no
training value. Both arms use 1 torch thread.

Usage::

    python benchmarks/recipe_quality.py                                  # 3 recipes x 3 seeds, default steps
    python benchmarks/recipe_quality.py --recipes vlm2vec --seeds 1 2 --max-steps 50
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_overhead import cpu_model  # noqa: E402

TEXT_LANGUAGES = ("es", "it", "ko", "pl", "ru", "tr", "zh")
NO_SAVE = 10**6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["e5v", "vlm2vec", "mme5"], choices=["e5v", "vlm2vec", "mme5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds (default 1 2 3)")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="optimizer steps (0, the default: the embedded default's: e5v 135, vlm2vec 150, mme5 100)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--workdir", default=None, help="where runs are written (default: a temporary directory)")
    parser.add_argument("--json", default=None, help="also write the raw scores to this JSON file")
    return parser.parse_args()


def make_config(recipe: str, seed: int, max_steps: int, workdir: Path):
    from mm_st.training import CONFIGS

    values = {"seed": seed, "output_dir": str((workdir / f"{recipe}-seed{seed}").resolve()), "resume": "never",
              "save_steps": NO_SAVE}
    if max_steps:
        values["max_steps"] = max_steps
    return CONFIGS[recipe].embedded_default(**values)


def text_to_text_recall(model) -> float:
    """English emoji name -> its name in another language, Recall@1 over the 391 test emoji, mean over languages."""
    from mm_st.data import load_emoji

    ds = load_emoji("test")
    english = ds["name_en"]
    queries = model.encode(english, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
    scores = []
    for lang in TEXT_LANGUAGES:
        names = ds[f"name_{lang}"]
        corpus = model.encode(names, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
        top = (queries @ corpus.T).argmax(dim=1).tolist()
        scores.append(sum(names[j] == names[i] for i, j in enumerate(top)) / len(names))
    return sum(scores) / len(scores)


def recipe_arm(config) -> dict:
    from mm_st.training import run_stage

    start = time.process_time()
    result = run_stage(config)
    out = {"before": result.before, "after": result.after, "steps": result.steps}
    if config.recipe == "e5v":
        out["after"] = {**out["after"], "text_recall_at_1": text_to_text_recall(result.model)}
    out["cpu_s"] = time.process_time() - start
    return out


def stock_arm(config, steps: int) -> dict:
    """Same model, rows, batch, steps, lr schedule and seed; ST's ``MultipleNegativesRankingLoss()``."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    from mm_st.training import plan_stage
    from mm_st.training.data import training_dataset
    from mm_st.training.stage import build_stage_model

    start = time.process_time()
    plan, named = plan_stage(config)
    set_seed(config.seed)
    model = build_stage_model(plan)
    out: dict = {}
    named = config.prepare(model, named, plan.context())  # the recipe's own preparation (mmE5 mining, E5-V cut), as run_stage
    if config.recipe == "e5v":
        out["before_text_recall_at_1"] = text_to_text_recall(model)
    train = training_dataset(named, config.batch_mixing, config.seed)
    c = config
    args = SentenceTransformerTrainingArguments(
        output_dir=str(plan.output_dir / "stock-mnrl-checkpoints"), per_device_train_batch_size=plan.per_device_batch,
        learning_rate=c.learning_rate, max_steps=steps, warmup_steps=c.warmup if c.warmup < 1 else int(c.warmup),
        max_grad_norm=c.max_grad_norm, lr_scheduler_type=c.lr_scheduler_type, weight_decay=c.weight_decay,
        seed=c.seed, dataloader_drop_last=True, save_strategy="no", report_to=["none"], use_cpu=True,
        logging_steps=c.logging_steps)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=MultipleNegativesRankingLoss(model))
    trainer.train()
    evaluator = c.evaluator(plan.sources, plan.output_dir / "stock-mnrl-eval")  # the recipe's (XTD; MM-Embed: M-BEIR)
    out["after"] = evaluator(model, steps=trainer.state.global_step)
    if c.recipe == "e5v":
        out["after"]["text_recall_at_1"] = text_to_text_recall(model)
    out["steps"] = trainer.state.global_step
    out["columns"] = train.column_names
    out["cpu_s"] = time.process_time() - start
    return out


def both_arms(make_config, threads: int) -> dict:
    """The recipe arm, then the stock-MNRL arm for as many steps, each on a fresh ``make_config()``."""
    ours = recipe_arm(make_config())
    torch.set_num_threads(threads)
    return {"recipe": ours, "stock": stock_arm(make_config(), ours["steps"])}


def record(label: str, arms: dict, runs: dict, json_path: str | None) -> None:
    """Print one finished pair of arms; rewrite the raw scores file (if any) with every run so far."""
    print(f"RUN {label}: recipe {json.dumps(arms['recipe']['after'])}, stock {json.dumps(arms['stock']['after'])}",
          flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(runs, indent=1, default=str) + "\n", encoding="utf-8")


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {std:.4f} ({min(values):.4f}..{max(values):.4f})"


def report(runs: dict, args: argparse.Namespace, seconds: float) -> None:
    import sentence_transformers
    import transformers

    print("\n| recipe | metric | before (untrained) | recipe after | stock MNRL after | recipe - stock (paired) |")
    print("|---|---|---:|---:|---:|---:|")
    for recipe, per_seed in runs.items():
        metrics = ["xtd_recall_at_1", "xtd_recall_at_10"] + (["text_recall_at_1"] if recipe == "e5v" else [])
        for metric in metrics:
            if metric == "text_recall_at_1":
                before = [r["stock"]["before_text_recall_at_1"] for r in per_seed.values()]
            else:
                before = [r["recipe"]["before"][metric] for r in per_seed.values()]
            ours = [r["recipe"]["after"][metric] for r in per_seed.values()]
            stock = [r["stock"]["after"][metric] for r in per_seed.values()]
            diff = [a - b for a, b in zip(ours, stock)]
            label = metric if metric != "text_recall_at_1" else "text->text R@1 (not mteb)"
            print(f"| {recipe} | {label} | {spread(before)} | {spread(ours)} | {spread(stock)} | {spread(diff)} |")
    print("\nmean ± std (min..max) over seeds " + " ".join(map(str, args.seeds)))
    for recipe, per_seed in runs.items():
        first = next(iter(per_seed.values()))
        print(f"- {recipe}: {first['recipe']['steps']} steps (stock arm {first['stock']['steps']}), stock columns "
              f"{first['stock']['columns']}; CPU s per seed: recipe "
              f"{statistics.mean(r['recipe']['cpu_s'] for r in per_seed.values()):.0f}, stock "
              f"{statistics.mean(r['stock']['cpu_s'] for r in per_seed.values()):.0f}")
    print(f"- {torch.get_num_threads()} torch thread(s); CPU {cpu_model()}; {os.cpu_count()} cores; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}, "
          f"Python {platform.python_version()}; wall {seconds / 60:.1f} min")
    print(f"- command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`")


def quiet(threads: int) -> None:
    """One benchmark set-up: thread count, no warnings, no progress bars, only errors from transformers."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    logging.getLogger("mm_st").setLevel(logging.WARNING)
    datasets.disable_progress_bars()


def main() -> None:
    args = parse_args()
    quiet(args.threads)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="recipe-quality-"))
    start = time.perf_counter()
    runs: dict = {}
    for recipe in args.recipes:
        runs[recipe] = {}
        for seed in args.seeds:
            arms = runs[recipe][seed] = both_arms(lambda: make_config(recipe, seed, args.max_steps, workdir), args.threads)
            record(f"{recipe} seed {seed}", arms, runs, args.json)
    report(runs, args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
