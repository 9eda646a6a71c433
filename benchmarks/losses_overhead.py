"""Training-step overhead of ``MultimodalInfoNCELoss`` vs. sentence-transformers' ``MultipleNegativesRankingLoss``.

One training step = ``model.preprocess`` of every column + forward + loss + backward + AdamW step
(+ ``zero_grad``). Every variant gets its own model, loaded from the same tiny Qwen2-VL checkpoint
(``mm_st.testing.tiny_model("qwen2_vl")``, E5-V recipe), so all start from identical weights, and its
own AdamW optimiser; all variants see the SAME batches in the same order.

Batches: ``--batch-size`` rows of (emoji image anchor, its English name as positive, another emoji's
name as hard negative), from ``mm_st.data.load_emoji("train")``; ``--duplicates`` rows per batch repeat
an earlier row of the batch (same image, same name), so duplicate masking has work to do.

Variants:

- ``ST MNRL``: ``MultipleNegativesRankingLoss(model, scale=1/temperature)``, features from
  ``model.preprocess(column, content_keys=False)`` (no content hashing).
- ``mm_st InfoNCE (defaults)``: ``MultimodalInfoNCELoss(model, temperature)`` (mask_duplicates=True;
  ``model.preprocess(column)`` also hashes every input's content, as in the trainer's collator).
- ``mm_st InfoNCE (no masking)``: ``mask_duplicates=False``, ``content_keys=False`` (the subclass alone).
- ``mm_st InfoNCE (mw=0.1, symmetric)``: ``modality_weight=0.1, symmetric=True``.

After ``--warmup`` steps per variant, variants are interleaved (A B C D A B C D ...) for ``--steps``
steps each; the median per-step time is reported, plus the median preprocess part, and the ratio to
the ST baseline (target <= 1.05).

Usage::

    .venv/bin/python benchmarks/losses_overhead.py                  # batch 32, 30 steps, 1 thread
    .venv/bin/python benchmarks/losses_overhead.py --steps 60 --batch-size 64 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import platform
import random
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_overhead import cpu_model  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up steps per variant (default 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch (default 32)")
    parser.add_argument("--duplicates", type=int, default=4, help="rows per batch repeating an earlier row (default 4)")
    parser.add_argument("--num-batches", type=int, default=8, help="distinct batches, cycled (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--temperature", type=float, default=0.02)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=1.05, help="target mm_st/ST step-time ratio")
    return parser.parse_args()


def make_batches(data, batch_size: int, duplicates: int, num_batches: int, seed: int) -> list[list[list]]:
    """``num_batches`` batches of [anchor images, positive names, hard-negative names]."""
    rng = random.Random(seed)
    n = len(data)
    unique = batch_size - duplicates
    if unique < 1 or unique + 1 > n:
        raise ValueError(f"batch_size {batch_size} / duplicates {duplicates} do not fit {n} rows")
    images, names = data["image"], data["name_en"]
    batches = []
    for _ in range(num_batches):
        picked = rng.sample(range(n), unique)
        rows = picked + [rng.choice(picked) for _ in range(duplicates)]
        rng.shuffle(rows)
        in_batch = set(rows)
        negatives = []
        for row in rows:  # another emoji's name, not in the batch when possible
            while True:
                other = rng.randrange(n)
                if other != row and (other not in in_batch or len(in_batch) >= n - 1):
                    break
            negatives.append(names[other])
        batches.append([[images[r] for r in rows], [names[r] for r in rows], negatives])
    return batches


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    import sentence_transformers
    import transformers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from mm_st import build_model
    from mm_st.data import load_emoji
    from mm_st.losses import MultimodalInfoNCELoss
    from mm_st.testing import tiny_model

    t_start = time.perf_counter()
    data = load_emoji("train")
    batches = make_batches(data, args.batch_size, args.duplicates, args.num_batches, args.seed)
    path = tiny_model("qwen2_vl")

    # (loss, whether preprocess adds content keys)
    specs = {
        "ST MNRL (baseline)": (lambda m: MultipleNegativesRankingLoss(m, scale=1.0 / args.temperature), False),
        "mm_st InfoNCE (defaults)": (lambda m: MultimodalInfoNCELoss(m, temperature=args.temperature), True),
        "mm_st InfoNCE (no masking)": (
            lambda m: MultimodalInfoNCELoss(m, temperature=args.temperature, mask_duplicates=False), False),
        "mm_st InfoNCE (mw=0.1, symmetric)": (lambda m: MultimodalInfoNCELoss(
            m, temperature=args.temperature, modality_weight=0.1, symmetric=True), True),
    }
    variants = {}
    num_params = None
    for name, (make_loss, keys) in specs.items():
        torch.manual_seed(args.seed)
        model = build_model(path, recipe="e5v")
        model.train()
        loss = make_loss(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        variants[name] = (model, loss, optimizer, keys)
        num_params = sum(p.numel() for p in model.parameters())
    # identical starting weights?
    ref = next(iter(variants.values()))[0].state_dict()
    for model, *_ in variants.values():
        assert all(torch.equal(ref[k], v) for k, v in model.state_dict().items()), "weights differ"

    def step(name: str, batch) -> tuple[float, float, float]:
        model, loss_fn, optimizer, keys = variants[name]
        start = time.perf_counter()
        features = [model.preprocess(column, content_keys=keys) for column in batch]
        prep = time.perf_counter()
        loss = loss_fn(features, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        return end - start, prep - start, loss.item()

    # sanity: the baseline's features carry no content keys, the defaults' do
    model = variants["ST MNRL (baseline)"][0]
    assert "mm_st_content_key" in model.preprocess(batches[0][1])
    assert "mm_st_content_key" not in model.preprocess(batches[0][1], content_keys=False)

    names = list(variants)
    for i in range(args.warmup):
        for name in names:
            step(name, batches[i % len(batches)])
    times = {name: [] for name in names}
    preps = {name: [] for name in names}
    losses = {name: [] for name in names}
    for i in range(args.steps):
        batch = batches[i % len(batches)]
        for name in names:
            total, prep, value = step(name, batch)
            times[name].append(total)
            preps[name].append(prep)
            losses[name].append(value)
    elapsed = time.perf_counter() - t_start

    base = statistics.median(times[names[0]])
    print("## losses_overhead.py — training step, mm_st MultimodalInfoNCELoss vs ST MultipleNegativesRankingLoss\n")
    print(f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- machine: {cpu_model()}, {platform.system()} {platform.machine()}, Python {platform.python_version()}")
    print(f"- torch {torch.__version__} (threads: {torch.get_num_threads()}), transformers {transformers.__version__}, "
          f"sentence-transformers {sentence_transformers.__version__}")
    print(f"- model: tiny Qwen2-VL ({path}), E5-V recipe, {num_params:,} parameters, fp32 CPU; one model + AdamW "
          f"(lr {args.lr}) per variant, identical initial weights")
    print(f"- batches: {args.batch_size} x (image anchor, name positive, other emoji's name as hard negative), "
          f"{args.duplicates} duplicate rows per batch, {args.num_batches} distinct batches cycled; temperature "
          f"{args.temperature}")
    print(f"- {args.warmup} warm-up + {args.steps} timed steps per variant, interleaved; step = preprocess of "
          f"all columns + forward + loss + backward + AdamW step; total runtime {elapsed:.1f}s\n")
    print("| variant | median s / step | preprocess s (median) | ratio vs ST (median) | paired-median ratio | first loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        median = statistics.median(times[name])
        paired = statistics.median(a / b for a, b in zip(times[name], times[names[0]]))
        print(f"| {name} | {median:.4f} | {statistics.median(preps[name]):.4f} | **{median / base:.3f}** | "
              f"{paired:.3f} | {losses[name][0]:.4f} |")
    worst = max(statistics.median(times[n]) / base for n in names[1:])
    print(f"\nTarget: ratio <= {args.target:.2f}; worst mm_st ratio {worst:.3f} -> "
          f"{'MET' if worst <= args.target else 'NOT MET'}.")


if __name__ == "__main__":
    main()
