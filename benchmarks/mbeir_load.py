"""``mm_st.data.load_mbeir`` on an M-BEIR-sized layout: load time and peak memory (RSS), before/after issue 28.5.

Layout (written once per size under ``--work-dir``), M-BEIR's own file names and shape: the real union test pool
(``cand_pool/global/mbeir_union_test_cand_pool.jsonl``, 5.6M candidates) is the union of the local pools
(``cand_pool/local/mbeir_<dataset>_task<k>_cand_pool.jsonl``), so here ``--pool-rows`` short text candidates are
split over 4 local pools and written again, identical, as the union test pool. ``--queries`` text->text queries
per split (``query/train/mbeir_<dataset>_train.jsonl``, ``query/test/mbeir_<dataset>_task1_test.jsonl``), each
naming one candidate as its positive (``neg_cand_list`` empty, as most of M-BEIR's).

Measured: ``load_mbeir(root, split=..., instructions="none")`` in a fresh process per (code, size, split): wall
seconds, the process's peak RSS (``VmHWM``) and that peak minus the RSS after ``import mm_st.data`` (what the
load itself holds). ``--before REF`` also measures the code of a git ref (``git archive REF mm_st`` into a
temporary folder, imported ahead of this checkout): the code before issue 28.5 read every pool file of the root
into one dict, for any split.

Usage::

    .venv/bin/python benchmarks/mbeir_load.py --pool-rows 100000 1000000 --before cbd1d52
    .venv/bin/python benchmarks/mbeir_load.py --pool-rows 5600000           # this checkout only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL_POOLS = ("visualnews_task0", "webqa_task1", "oven_task6", "infoseek_task6")
DATASET_IDS = {"visualnews_task0": "0", "webqa_task1": "2", "oven_task6": "5", "infoseek_task6": "6"}


def write_layout(root: Path, pool_rows: int, queries: int) -> Path:
    """The layout described in the module docstring (skipped when ``root`` already holds it)."""
    done = root / "written.json"
    if done.is_file():
        return root
    per_pool = pool_rows // len(LOCAL_POOLS)
    for folder in ("cand_pool/local", "cand_pool/global", "query/train", "query/test", "instructions"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    with open(root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl", "w", encoding="utf-8") as union:
        for name in LOCAL_POOLS:
            dataset = DATASET_IDS[name]
            lines = [json.dumps({"did": f"{dataset}:{i}", "txt": f"candidate {i} of {name}", "img_path": None,
                                 "modality": "text"}) + "\n" for i in range(per_pool)]
            (root / f"cand_pool/local/mbeir_{name}_cand_pool.jsonl").write_text("".join(lines), encoding="utf-8")
            union.writelines(lines)
    step = max(1, per_pool // max(1, queries // len(LOCAL_POOLS)))
    for split, offset in (("train", 0), ("test", 1)):
        for name in LOCAL_POOLS:
            dataset = DATASET_IDS[name]
            rows = [{"qid": f"{dataset}:{split}{i}", "query_txt": f"query {i}", "query_img_path": None,
                     "query_modality": "text", "pos_cand_list": [f"{dataset}:{(i * step + offset) % per_pool}"],
                     "neg_cand_list": [], "task_id": 1} for i in range(queries // len(LOCAL_POOLS))]
            stem = name.split("_")[0]
            path = root / "query" / split / (f"mbeir_{stem}_train.jsonl" if split == "train" else f"mbeir_{name}_test.jsonl")
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "instructions/query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\n"
        + "".join(f"text\ttext\t{n}\t{d}\tRetrieve a passage.\n" for n, d in DATASET_IDS.items()), encoding="utf-8")
    done.write_text(json.dumps({"pool_rows": pool_rows, "queries": queries}), encoding="utf-8")
    return root


def _status_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB. Not ``ru_maxrss``: on Linux it keeps the peak of
    the process image before ``exec``, i.e. of the parent that spawned the measurement (which wrote the layout)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(source: str, root: str, split: str) -> None:
    """One measurement in this (fresh) process: prints a JSON line."""
    if source:
        sys.path.insert(0, source)
    import mm_st.data

    imported = _status_mib("VmRSS")
    start = time.perf_counter()
    named = mm_st.data.load_mbeir(root, split=split, instructions="none")
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "load_mib": peak - imported,
                      "rows": sum(len(ds) for ds in named.values()), "code": str(Path(mm_st.__file__).parent)}))


def measure(source: str, root: Path, split: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", source, str(root), split], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--splits", nargs="+", default=["train", "test"])
    parser.add_argument("--before", help="git ref of the code to compare with (e.g. the commit before issue 28.5)")
    parser.add_argument("--work-dir", help="where the layouts are written (default: a temporary folder)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="mbeir-load-"))
    codes = {"this checkout": ""}
    if args.before:
        folder = Path(tempfile.mkdtemp(prefix="mbeir-load-before-"))
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "mm_st"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
        codes = {f"before ({args.before})": str(folder), **codes}
    print("| pool rows | queries | split | code | load s | peak RSS MiB | RSS held by the load MiB | rows |")
    print("|---:|---:|---|---|---:|---:|---:|---:|")
    for rows in args.pool_rows:
        start = time.perf_counter()
        root = write_layout(work / f"pool-{rows}", rows, args.queries)
        print(f"<!-- layout {rows} written in {time.perf_counter() - start:.0f} s -->", flush=True)
        for split in args.splits:
            for label, source in codes.items():
                r = measure(source, root, split)
                if "error" in r:
                    print(f"| {rows:,} | {args.queries:,} | {split} | {label} | error: {r['error']} | | | |", flush=True)
                    continue
                assert (source or str(ROOT)) in r["code"], r["code"]  # the code measured is the one named
                print(f"| {rows:,} | {args.queries:,} | {split} | {label} | {r['seconds']:.1f} | {r['peak_mib']:.0f} "
                      f"| {r['load_mib']:.0f} | {r['rows']:,} |", flush=True)


if __name__ == "__main__":
    main()
