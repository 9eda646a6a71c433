"""Throughput of ``mm_st.synthesis`` against a local OpenAI-compatible endpoint with fixed latency.

A stdlib stub server (:class:`tests.synthesis_support.StubOpenAIServer`) on 127.0.0.1 sleeps
``--latency`` seconds per request and returns a valid answer; the full pipeline runs (plan, image
loading from the bundled emoji pool, prompt rendering, base64 PNG images, HTTP, schema check,
fsync'ed journal). Reports samples/s at each concurrency and the speed-up over concurrency 1
(target: >= 12x at 16).

Usage::

    .venv/bin/python benchmarks/synthesis_throughput.py                       # latency 0.2 s, 1/4/16
    .venv/bin/python benchmarks/synthesis_throughput.py --latency 0.5 --samples-per-worker 8
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import tempfile

import torch

from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests' support code (the stub server)

from mm_st.synthesis import OpenAIChatBackend, SynthesisConfig, synthesize  # noqa: E402
from mm_st.synthesis.images import ImagePool  # noqa: E402
from tests.synthesis_support import StubOpenAIServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2, help="artificial seconds per request")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--samples-per-worker", type=int, default=6, help="samples per run = this x concurrency")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pool = ImagePool.open("mm_st:emoji")
    rows = []
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        n = args.samples_per_worker * concurrency
        config = SynthesisConfig(num_samples=n, seed=concurrency)
        with StubOpenAIServer(delay=args.latency) as server, tempfile.TemporaryDirectory() as run:
            backend = OpenAIChatBackend(server.base_url, "stub", concurrency=concurrency, timeout=30)
            summary = synthesize(config, backend, run, pool=pool, progress=False, verbose=False)
        assert summary["accepted"] == n, summary
        rows.append((concurrency, n, summary["seconds_this_run"], n / summary["seconds_this_run"]))
    base = rows[0][3]
    print(f"\nmm_st.synthesis throughput, stub endpoint latency {args.latency} s/request, torch threads {args.threads}, "
          f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")  # fmt: skip
    print(f"command: {shlex.join([sys.executable.split('/')[-1], *sys.argv])}\n")
    print("| concurrency | samples | seconds | samples/s | speed-up vs 1 | ideal |")
    print("|---:|---:|---:|---:|---:|---:|")
    for concurrency, n, seconds, rate in rows:
        print(f"| {concurrency} | {n} | {seconds:.2f} | {rate:.2f} | {rate / base:.1f}x | {concurrency / rows[0][0]:.0f}x |")


if __name__ == "__main__":
    main()
