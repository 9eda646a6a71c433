"""Memory and time of the M-BEIR union-pool (global) tasks as the pool grows: 10^4, 10^5, 10^6 candidates.

What runs: the real task path of ``mteb.evaluate`` on two union-pool tasks (``MMST-MBEIR-global-WebQA_t2t``
and ``-VisualNews_t2i``, 1,000 queries each) over a generated local M-BEIR root whose
``cand_pool/global/mbeir_union_test_cand_pool.jsonl`` holds N candidates: N - 64 short texts
(``"candidate <i> about topic <i mod 997>"``) and 64 images (8x8 PNGs). Everything mm_st does is measured:
streaming and checking the pool into its memory-mapped Arrow file and id index (once, shared by both
tasks; "pool on disk"), encoding the pool
into ``mm_st.mining.store``'s chunk files (once, shared), searching it chunk by chunk with
``mm_st.mining.search`` (``UnionPoolSearch``), mteb's metrics and ``wrong_modality_at_1``.

What is NOT a model: the encoder is a stand-in mteb encoder (``HashEncoder``) that returns a fixed
pseudo-random unit vector per input (seeded by a hash of the text or the image's pixels, dim
``--dim``), so the numbers are the evaluation's own cost without a network's compute; the search
uses those precomputed-style embeddings through the same store/search path a model's would take.
With a real model add its encoding time (pool rows / its throughput); memory does not change
except for the model itself, since only one chunk of embeddings is in memory at a time.

How: each size runs in a fresh subprocess (1 torch thread). Peaks come from /proc/self/status:
VmHWM (peak resident set, reset with ``clear_refs`` before each phase) and the highest RssAnon
sampled every 20 ms (anonymous memory: without the memory-mapped chunk files' pages, which the
kernel may drop at any time). Phases: "load" = both tasks' ``load_data`` (the pool is read once);
"evaluate" = ``mteb.evaluate`` of both tasks (pool encoded once, two searches); "search alone" = the
search step by itself (1,000 random queries against the chunk files just written, memory-mapped, top 50).
"store" = the chunk files' size on disk.

Usage::

    .venv/bin/python benchmarks/mbeir_global.py                      # 10^4, 10^5, 10^6 (~10 min on a shared 2-core box)
    .venv/bin/python benchmarks/mbeir_global.py --sizes 10000         # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

QUERIES = 1000
IMAGES = 64


def _status(field: str) -> int:
    """A /proc/self/status field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class AnonPeak:
    """The highest RssAnon seen while the block runs (sampled every 20 ms)."""

    def __enter__(self):
        self.peak, self.done = _status("RssAnon"), threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, _status("RssAnon"))

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, _status("RssAnon"))


def write_root(root: Path, size: int, seed: int = 0) -> None:
    """A local M-BEIR root: 1,000 WebQA_t2t and 1,000 VisualNews_t2i queries and a union pool of ``size``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "mbeir_images").mkdir(parents=True)
    for i in range(IMAGES):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / f"mbeir_images/{i}.png")
    (root / "cand_pool/global").mkdir(parents=True)
    with open(root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", "w", encoding="utf-8") as handle:
        for i in range(IMAGES):
            handle.write(json.dumps({"did": f"0:{i}", "txt": None, "img_path": f"mbeir_images/{i}.png",
                                     "modality": "image"}) + "\n")
        for i in range(size - IMAGES):
            handle.write(json.dumps({"did": f"2:{i}", "txt": f"candidate {i} about topic {i % 997}", "img_path": None,
                                     "modality": "text"}) + "\n")
    (root / "query/test").mkdir(parents=True)
    texts = rng.integers(0, size - IMAGES, QUERIES)
    with open(root / "query/test/mbeir_webqa_task1_test.jsonl", "w", encoding="utf-8") as handle:
        for q, i in enumerate(texts):
            handle.write(json.dumps({"qid": f"2:q{q}", "query_txt": f"candidate {i} about topic {i % 997}",
                                     "query_img_path": None, "query_modality": "text",
                                     "pos_cand_list": [f"2:{i}"]}) + "\n")
    with open(root / "query/test/mbeir_visualnews_task0_test.jsonl", "w", encoding="utf-8") as handle:
        for q in range(QUERIES):
            handle.write(json.dumps({"qid": f"0:q{q}", "query_txt": f"a picture number {q % IMAGES}",
                                     "query_img_path": None, "query_modality": "text",
                                     "pos_cand_list": [f"0:{q % IMAGES}"]}) + "\n")


def hash_encoder(dim: int):
    """An mteb encoder returning a fixed pseudo-random unit vector per input (text, else image pixels)."""
    import numpy as np
    from mteb.models import ModelMeta
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ScoringFunction

    class HashEncoder(AbsEncoder):
        def __init__(self):
            self.mteb_model_meta = ModelMeta.create_empty(overwrites=dict(
                name="bench/hash", revision="1", modalities=["image", "text"], framework=["NumPy"],
                similarity_fn_name=ScoringFunction.COSINE))
            self.encoded = 0

        def instruction(self, task_metadata, prompt_type):
            return None  # no instructions (an MMSTEncoder says which it gives): tasks share the pool's encoding

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            out = []
            for batch in inputs:
                n = len(batch["id"])
                texts, images = batch.get("text") or [None] * n, batch.get("image") or [None] * n
                for text, image in zip(texts, images):
                    key = image.tobytes() if image is not None else text.encode()
                    vec = np.random.default_rng(zlib.crc32(key)).standard_normal(dim).astype(np.float32)
                    out.append(vec / np.linalg.norm(vec))
                self.encoded += n
            return np.stack(out)

    return HashEncoder()


def search_alone(cache: Path, dim: int) -> tuple[float, int, int]:
    """The search step by itself: 1,000 random queries against the chunk files the evaluation wrote
    (memory-mapped), top 50, through the same ``ranked`` / ``TorchSearch`` the tasks use."""
    import numpy as np
    import torch

    from mm_st.evaluation.mbeir_global import DEFAULT_CHUNK_SIZE, QUERY_CHUNK_SIZE, ranked
    from mm_st.mining.search import TorchSearch
    from mm_st.mining.store import Embeddings

    store = Embeddings([np.load(p, mmap_mode="r") for p in sorted(cache.rglob("chunk-*.npy"))])
    queries = torch.nn.functional.normalize(torch.randn(QUERIES, dim, generator=torch.Generator().manual_seed(0)), dim=1)
    _reset_peak()
    start = time.perf_counter()
    with AnonPeak() as anon:
        ranked(queries, store, 50, QUERY_CHUNK_SIZE, TorchSearch(QUERY_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, torch.device("cpu")))
    return time.perf_counter() - start, _status("VmHWM"), anon.peak


def measure(size: int, dim: int) -> dict:
    import torch

    torch.set_num_threads(1)
    import mteb
    import sentence_transformers  # noqa: F401  (mteb.evaluate imports it: not part of what is measured)

    from mm_st.evaluation.mbeir_global import global_tasks

    with tempfile.TemporaryDirectory() as folder:
        root, cache = Path(folder) / "M-BEIR", Path(folder) / "cache"
        write_root(root, size)
        encoder = hash_encoder(dim)
        base = _status("VmRSS")
        tasks = global_tasks(["WebQA_t2t", "VisualNews_t2i"], data=root, cache_dir=cache)
        _reset_peak()
        start = time.perf_counter()
        with AnonPeak() as load_anon:
            for task in tasks:
                task.load_data()
        load_s, load_peak = time.perf_counter() - start, _status("VmHWM")
        _reset_peak()
        start = time.perf_counter()
        with AnonPeak() as eval_anon:
            result = mteb.evaluate(encoder, tasks, cache=None, show_progress_bar=False,
                                   encode_kwargs={"batch_size": 512, "show_progress_bar": False})
        eval_s, eval_peak = time.perf_counter() - start, _status("VmHWM")
        store = sum(p.stat().st_size for p in cache.glob("corpus-*/*.npy"))
        pool = sum(p.stat().st_size for p in cache.glob("pool-*/*"))
        search_s, search_peak, search_anon = search_alone(cache, dim)
        scores = {r.task_name: r.scores["test"][0] for r in result.task_results}
    return {"size": size, "dim": dim, "queries": 2 * QUERIES, "encoded_documents": encoder.encoded - 2 * QUERIES,
            "baseline_rss_gb": base / 1e9, "load_s": load_s, "load_peak_rss_gb": load_peak / 1e9,
            "load_peak_anon_gb": load_anon.peak / 1e9, "evaluate_s": eval_s, "evaluate_peak_rss_gb": eval_peak / 1e9,
            "evaluate_peak_anon_gb": eval_anon.peak / 1e9, "store_gb": store / 1e9, "pool_gb": pool / 1e9, "search_s": search_s,
            "search_peak_rss_gb": search_peak / 1e9, "search_peak_anon_gb": search_anon / 1e9,
            "recall_at_1": {k: v["recall_at_1"] for k, v in scores.items()},
            "wrong_modality_at_1": {k: v["wrong_modality_at_1"] for k, v in scores.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.dim)))
        return
    rows = []
    for size in args.sizes:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        out = subprocess.run([sys.executable, __file__, "--one", str(size), "--dim", str(args.dim)], env=env,
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| candidates | load (s) | load peak RSS / anon (GB) | evaluate 2 tasks (s) | evaluate peak RSS / anon (GB) "
          "| search alone, 1,000 queries (s) | search peak RSS / anon (GB) | store on disk (GB) | pool on disk (GB) "
          "| documents encoded |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']:,} | {r['load_s']:.1f} | {r['load_peak_rss_gb']:.2f} / {r['load_peak_anon_gb']:.2f} | "
              f"{r['evaluate_s']:.1f} | {r['evaluate_peak_rss_gb']:.2f} / {r['evaluate_peak_anon_gb']:.2f} | "
              f"{r['search_s']:.1f} | {r['search_peak_rss_gb']:.2f} / {r['search_peak_anon_gb']:.2f} | "
              f"{r['store_gb']:.3f} | {r['pool_gb']:.3f} | {r['encoded_documents']:,} |")


if __name__ == "__main__":
    main()
