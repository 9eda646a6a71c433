"""Embedded M-BEIR evaluation: cost of the five emoji tasks, and what an untrained model scores next to chance.

Data: ``mm_st.training.embedded.write_mbeir(split="test", limit=--limit)``: five tasks over one pool
that mixes images and texts. Model: tiny LLaVA, ``mmembed`` recipe, untrained (random weights).

Protocols, same model, batch size and tasks:

- ``per task``: ``mteb.evaluate(MMSTEncoder(model), tasks)``: mteb encodes each task's pool again.
- ``evaluate_mbeir``: ``mm_st.evaluation.evaluate_mbeir(model, data=root)``: the pool that the five tasks
  share is encoded once (the document embeddings do not depend on the task for ``mmembed``).

Reported: forward inputs, wall time, the ratios, whether every score agrees, and the table the
training recipe prints (chance, untrained model).

Usage::

    .venv/bin/python benchmarks/mbeir_eval.py                 # the whole test split (391 emoji)
    .venv/bin/python benchmarks/mbeir_eval.py --limit 100 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import platform
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from encode_overhead import cpu_model  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="test emoji (default: all 391)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import datasets
    import mteb
    import transformers

    from mm_st import build_model
    from mm_st.evaluation import MMSTEncoder, evaluate_mbeir, mbeir_chance, mbeir_table, mbeir_tasks
    from mm_st.evaluation.mbeir import TABLE_METRICS, _pool_sharing_encoder
    from mm_st.testing import tiny_model
    from mm_st.training.embedded import write_mbeir

    datasets.disable_progress_bars()
    root = write_mbeir(tempfile.mkdtemp(), split="test", limit=args.limit)
    path = tiny_model("llava")
    model = build_model(path, recipe="mmembed")
    kwargs = {"batch_size": args.batch_size, "show_progress_bar": False}

    plain = MMSTEncoder(model)
    start = time.perf_counter()
    alone = mteb.evaluate(plain, mbeir_tasks(data=root), cache=None, show_progress_bar=False, encode_kwargs=kwargs)
    alone_time = time.perf_counter() - start
    alone_inputs = sum(plain.encoded.values())

    sharing = _pool_sharing_encoder(model)  # what evaluate_mbeir uses
    start = time.perf_counter()
    shared = mteb.evaluate(sharing, mbeir_tasks(data=root), cache=None, show_progress_bar=False, encode_kwargs=kwargs)
    shared_time = time.perf_counter() - start
    shared_inputs = sum(sharing.encoded.values())
    metrics = ("recall_at_1", "recall_at_5", "recall_at_10", "ndcg_at_10", "wrong_modality_at_1")
    agree = all(abs(a.scores["test"][0][m] - b.scores["test"][0][m]) < 1e-6
                for a, b in zip(alone.task_results, shared.task_results) for m in metrics)

    table = evaluate_mbeir(model, data=root, encode_kwargs=kwargs)
    chance = mbeir_chance(data=root)
    task = mbeir_tasks(["Emoji_t2i"], data=root)[0]
    task.load_data()
    pool = len(task.pool_modalities["test"])

    print("## mbeir_eval.py — embedded M-BEIR evaluation: shared pool encoded once vs per task; untrained vs chance\n")
    print(f"- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- machine: {cpu_model()}, {platform.system()} {platform.machine()}, Python {platform.python_version()}")
    print(f"- torch {torch.__version__} (threads: {torch.get_num_threads()}), transformers {transformers.__version__}, "
          f"mteb {mteb.__version__}")
    print(f"- model: tiny LLaVA ({Path(path).name}), mmembed recipe, untrained, fp32 CPU, batch size {args.batch_size}")
    print(f"- data: write_mbeir(split='test', limit={args.limit}): five tasks, one pool of {pool} candidates\n")
    print("| protocol | forward inputs | wall s |")
    print("|---|---:|---:|")
    print(f"| per task (`mteb.evaluate(MMSTEncoder(model), tasks)`) | {alone_inputs:,} | {alone_time:.1f} |")
    print(f"| shared pool once (`evaluate_mbeir`) | {shared_inputs:,} | {shared_time:.1f} |")
    print(f"| **ratio per task / shared** | **{alone_inputs / shared_inputs:.2f}x** | **{alone_time / shared_time:.2f}x** |")
    print(f"\nAll scores ({', '.join(metrics)}) equal in both protocols: {agree}.\n")
    print("```")
    print(mbeir_table({"chance": chance, "untrained": table}, metrics=TABLE_METRICS))
    print("```")


if __name__ == "__main__":
    main()
