"""Hard-negative mining at scale: ``mm_st.mining.mine_hard_negatives`` vs sentence-transformers' ``util.mine_hard_negatives``.

What it measures: wall time and peak memory of mining 5 hard negatives for 20,000 queries against a
corpus of 200,000 candidates (dim 256), for mm_st's miner and for sentence-transformers' on the
same problem, in the same run. The full queries x candidates score matrix would be
20k x 200k x 4 B = 16 GB; the point is that mm_st's working memory is bounded by its chunk size.

Data (identical in every run, from ``--seed``): 2,000 random unit cluster centres; each candidate is
a centre plus Gaussian noise, normalised; each query is its positive candidate plus noise, normalised
(so the positive and ~100 same-cluster candidates rank near the top). Embeddings are precomputed:

- mm_st gets them as ``query_embeddings=`` / ``corpus_embeddings=``, with ``queries`` = "q0".."q19999"
  and ``corpus`` = "c0".."c199999" as text content (hashed for exclusions) and positives as corpus
  indices; output = an n-tuple ``datasets.Dataset`` of {text, image} structs.
- sentence-transformers gets the text-only equivalent: a (query, positive) ``Dataset`` of the same id
  strings, ``corpus=`` the candidate id strings, and a stand-in model whose ``encode_query`` /
  ``encode_document`` return the precomputed rows of those ids (the arrays themselves, no copy,
  when asked for all rows in order) and whose ``similarity`` is ST's ``cos_sim``.

Matched settings: 5 negatives per query, top sampling, n-tuple output, rows without 5 negatives
dropped. Window: mm_st ``strategy="window", ranks=(46, 50)`` = ST ``range_min=45, range_max=50``
(both count ranks after removing the positive; MM-Embed's type-2 window). Margin (``--margin``):
mm_st ``strategy="top_k", top_k=50, margin=m`` vs ST ``range_max=50, absolute_margin=m`` (ST counts
its 50 ranks after the margin removed candidates, mm_st before, so rows can differ). The agreement
column is the share of queries whose 5 negatives (or whose dropping) are the same as in mm_st's run with
the largest chunk size, as a set and in the same order. Chunked and full-matrix float32 matmuls round
differently, so two candidates whose scores differ by ~1e-7 can swap (checked: the rows that differ
are such near-ties).

How: every configuration runs in a fresh subprocess (``--threads`` torch threads). After the data is
built, the child records VmRSS as baseline and resets the peak (``5 > /proc/self/clear_refs``); after
mining it reads VmHWM. "Peak above baseline" is the mining's own working memory (the precomputed
embeddings, 0.22 GB, are in the baseline). Where clear_refs is unavailable, ru_maxrss is used.
"Largest score block" is the biggest scores matrix the method materialises by design: mm_st
``query_chunk_size x chunk_size``, ST ``faiss_batch_size x corpus``. ST's default
``faiss_batch_size=16384`` needs a 13 GB block at full size; it runs only if MemAvailable leaves
3 GiB of headroom, otherwise it is measured at the largest scale (same query/corpus ratio) that fits.

Usage::

    .venv/bin/python benchmarks/mining.py                         # full size, 1 thread (~7 min)
    .venv/bin/python benchmarks/mining.py --scale 0.1             # 2k x 20k smoke run
    .venv/bin/python benchmarks/mining.py --chunk-sizes 16384 --st-batch-sizes 1024 --margin -1   # ~2.5 min
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from peak_memory import reset_hwm as _reset_hwm, status as _status, trim as _trim  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--corpus", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply queries, corpus and clusters (default 1)")
    parser.add_argument("--num-negatives", type=int, default=5)
    parser.add_argument("--ranks", type=int, nargs=2, default=[46, 50], help="1-based inclusive window (default 46 50)")
    parser.add_argument("--margin", type=float, default=0.02, help="margin of the top-k comparison; <0 to skip")
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[4096, 16384, 65536], help="mm_st chunk sizes")
    parser.add_argument("--query-chunk-size", type=int, default=1024, help="mm_st query_chunk_size (default 1024)")
    parser.add_argument("--st-batch-sizes", type=int, nargs="+", default=[1024, 16384],
                        help="ST faiss_batch_size values (16384 is ST's default)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--headroom-gib", type=float, default=3.0, help="free memory kept when sizing ST runs")
    # child mode (internal)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------------
# child: one configuration in a fresh process
# --------------------------------------------------------------------------------------------------


def make_data(num_queries: int, num_corpus: int, dim: int, clusters: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    assignment = rng.integers(0, clusters, num_corpus)
    corpus = centres[assignment]
    corpus += rng.standard_normal((num_corpus, dim), dtype=np.float32) * np.float32(0.6 / np.sqrt(dim))
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    positives = rng.integers(0, num_corpus, num_queries)
    queries = corpus[positives] + rng.standard_normal((num_queries, dim), dtype=np.float32) * np.float32(0.5 / np.sqrt(dim))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return queries, corpus, positives




class PrecomputedModel:
    """Stand-in SentenceTransformer for ST's miner: "q123" / "c456" -> row 123 / 456 of the arrays."""

    def __init__(self, queries: np.ndarray, corpus: np.ndarray) -> None:
        import torch
        from sentence_transformers.util import cos_sim, pairwise_cos_sim

        self.rows = {"q": queries, "c": corpus}
        self.device = torch.device("cpu")
        self.similarity = cos_sim
        self.similarity_pairwise = pairwise_cos_sim

    def _encode(self, inputs, **kwargs) -> np.ndarray:
        array = self.rows[inputs[0][0]]
        index = np.fromiter((int(s[1:]) for s in inputs), dtype=np.int64, count=len(inputs))
        if len(index) == len(array) and (index == np.arange(len(array))).all():
            return array  # all rows in order: the array itself, as a real encode would return one array
        return array[index]

    encode_query = encode_document = _encode


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    config = json.loads(args.child)
    nq, nc = config["queries"], config["corpus"]
    Q, C, pos = make_data(nq, nc, args.dim, config["clusters"], args.seed)
    query_text = [f"q{i}" for i in range(nq)]
    corpus_text = [f"c{j}" for j in range(nc)]
    first, last = args.ranks
    n = args.num_negatives
    if config["impl"] == "mm_st":
        from mm_st.mining import mine_hard_negatives
    else:
        from datasets import Dataset
        from sentence_transformers.util import mine_hard_negatives as st_mine

        st_model = PrecomputedModel(Q, C)
        pairs = Dataset.from_dict({"query": query_text, "positive": [corpus_text[p] for p in pos]})
    _trim()
    baseline = _status("VmRSS")
    has_hwm = _reset_hwm()
    if not has_hwm:
        import resource

        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    negatives = np.full((nq, n), -1, dtype=np.int64)
    if config["impl"] == "mm_st":
        kwargs = dict(strategy="window", ranks=(first, last)) if config["mode"] == "window" else dict(
            strategy="top_k", top_k=last, margin=config["margin"])
        ds, report = mine_hard_negatives(
            queries=query_text, corpus=corpus_text, positives=pos.tolist(), query_embeddings=Q, corpus_embeddings=C,
            num_negatives=n, chunk_size=config["chunk"], query_chunk_size=args.query_chunk_size,
            show_progress_bar=False, return_report=True, **kwargs)
        rows = len(ds)
        for q, negs in zip(report.query_index, report.negative_index):
            negatives[q] = negs
    else:
        kwargs = dict(range_min=first - 1, range_max=last) if config["mode"] == "window" else dict(
            range_max=last, absolute_margin=config["margin"])
        ds = st_mine(pairs, st_model, corpus=corpus_text, num_negatives=n, sampling_strategy="top",
                     output_format="n-tuple", faiss_batch_size=config["chunk"], verbose=False, **kwargs)
        rows = len(ds)
        anchors = [int(a[1:]) for a in ds["query"]]
        columns = [[int(x[1:]) for x in ds[f"negative_{i}"]] for i in range(1, n + 1)]
        negatives[anchors] = np.array(columns, dtype=np.int64).T if rows else negatives[anchors]
    seconds = time.perf_counter() - start
    if has_hwm:
        peak, method = _status("VmHWM"), "VmHWM after clear_refs"
    else:
        import resource

        peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
    np.save(args.out, negatives)
    print("RESULT " + json.dumps({**config, "seconds": seconds, "rows": rows, "baseline": baseline, "peak": peak,
                                  "method": method}), flush=True)


# --------------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------------


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def run_child(args: argparse.Namespace, config: dict, workdir: Path) -> dict:
    out = workdir / f"{len(list(workdir.iterdir()))}.npy"
    argv = [sys.executable, __file__, "--child", json.dumps(config), "--out", str(out), "--threads", str(args.threads),
            "--dim", str(args.dim), "--seed", str(args.seed), "--num-negatives", str(args.num_negatives),
            "--ranks", *map(str, args.ranks), "--query-chunk-size", str(args.query_chunk_size)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {**config, "error": (proc.stderr or proc.stdout)[-800:].strip().splitlines()[-1:] or [f"rc {proc.returncode}"]}
    result = json.loads(lines[-1][len("RESULT "):])
    result["negatives"] = np.load(out)
    return result


def gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    import sentence_transformers
    import torch

    nq, nc, clusters = (max(1, round(x * args.scale)) for x in (args.queries, args.corpus, args.clusters))
    first, last = args.ranks
    t_start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mm_st_mining_bench_"))
    modes = ["window"] + (["margin"] if args.margin >= 0 else [])
    results = []
    for mode in modes:
        base = dict(mode=mode, margin=args.margin if mode == "margin" else None, queries=nq, corpus=nc, clusters=clusters)
        chunks = args.chunk_sizes if mode == "window" else [max(args.chunk_sizes)]
        for chunk in chunks:
            results.append(run_child(args, {**base, "impl": "mm_st", "chunk": chunk}, workdir))
            print(f"[{time.perf_counter() - t_start:6.0f}s] {format_line(results[-1])}", flush=True)
        st_batches = args.st_batch_sizes if mode == "window" else [min(args.st_batch_sizes)]
        for batch in st_batches:
            config = {**base, "impl": "st", "chunk": batch}
            need = min(batch, nq) * nc * 4 + 2 * nc * args.dim * 4 + (args.headroom_gib * 2**30)
            if need > mem_available():  # scale down, same query/corpus ratio, until the score block fits
                factor = 1.0
                while factor > 0.01 and min(batch, nq * factor) * nc * factor * 4 + args.headroom_gib * 2**30 > mem_available():
                    factor /= 2
                config.update(queries=round(nq * factor), corpus=round(nc * factor), clusters=max(1, round(clusters * factor)),
                              note=f"full size needs {gb(need)} GB with headroom, MemAvailable {gb(mem_available())} GB")
            results.append(run_child(args, config, workdir))
            print(f"[{time.perf_counter() - t_start:6.0f}s] {format_line(results[-1])}", flush=True)

    print()
    print(f"Mining {nq:,} queries x {nc:,} candidates, dim {args.dim}, {clusters:,} clusters; "
          f"{args.num_negatives} negatives per query; {args.threads} torch thread(s). Full score matrix "
          f"{nq:,} x {nc:,} x 4 B = {gb(nq * nc * 4)} GB.")
    print()
    print("| method | setting | size (q x c) | largest score block | wall s | peak above baseline GB | peak total GB | rows | same negatives as mm_st: set / order |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for mode in modes:
        ours = [r for r in results if r["mode"] == mode and r["impl"] == "mm_st" and "error" not in r]
        reference = ours[-1]["negatives"] if ours else None
        for r in (r for r in results if r["mode"] == mode):
            print(table_row(r, args, reference))
    print()
    print(f"Setting: window = mm_st `strategy='window', ranks=({first}, {last})` vs ST `range_min={first - 1}, "
          f"range_max={last}`; margin = mm_st `strategy='top_k', top_k={last}, margin={args.margin}` vs ST "
          f"`range_max={last}, absolute_margin={args.margin}`. mm_st `query_chunk_size={args.query_chunk_size}`.")
    print(f"Peak memory: {results[0].get('method', '?')} minus VmRSS before mining (fresh process per row; "
          f"the precomputed embeddings, {gb((nq + nc) * args.dim * 4)} GB, are in the baseline).")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{gb(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))} GB RAM; Python {platform.python_version()}, "
          f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}.")
    print(f"Command: python benchmarks/mining.py {shlex.join(sys.argv[1:])}  (total {time.perf_counter() - t_start:.0f} s)")


def format_line(r: dict) -> str:
    if "error" in r:
        return f"{r['impl']} {r['mode']} chunk {r['chunk']}: ERROR {r['error']}"
    return (f"{r['impl']} {r['mode']} chunk/batch {r['chunk']} ({r['queries']}x{r['corpus']}): {r['seconds']:.1f} s, "
            f"peak +{gb(r['peak'] - r['baseline'])} GB, {r['rows']} rows")


def table_row(r: dict, args: argparse.Namespace, reference) -> str:
    name = "mm_st `mine_hard_negatives`" if r["impl"] == "mm_st" else "ST `util.mine_hard_negatives`"
    if r["impl"] == "mm_st":
        setting = f"{r['mode']}, chunk_size={r['chunk']}"
        block = min(args.query_chunk_size, r["queries"]) * min(r["chunk"], r["corpus"]) * 4
    else:
        setting = f"{r['mode']}, faiss_batch_size={r['chunk']}" + (" (ST default)" if r["chunk"] == 16384 else "")
        block = min(r["chunk"], r["queries"]) * r["corpus"] * 4
    size = f"{r['queries']:,} x {r['corpus']:,}"
    if "error" in r:
        return f"| {name} | {setting} | {size} | {gb(block)} GB | failed: {r['error']} | | | | |"
    if reference is not None and r["negatives"].shape == reference.shape:
        same_set = (np.sort(r["negatives"], axis=1) == np.sort(reference, axis=1)).all(axis=1).mean()
        agreement = f"{same_set:.4f} / {(r['negatives'] == reference).all(axis=1).mean():.4f}"
    else:
        agreement = "n/a (other size)" + (f"; {r['note']}" if "note" in r else "")
    return (f"| {name} | {setting} | {size} | {gb(block)} GB | {r['seconds']:.1f} | {gb(r['peak'] - r['baseline'])} | "
            f"{gb(r['peak'])} | {r['rows']:,} | {agreement} |")


if __name__ == "__main__":
    main()
