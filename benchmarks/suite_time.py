"""Time the test suite as CI runs it (``bash scripts/test.sh``): wall time, the CPU time of the whole process tree,
the machine's load while it ran, and pytest's summary and slowest tests.

On a shared machine the wall time depends on what else runs; the CPU seconds do not much, and
``cpu / cores`` is about what the suite needs on a quiet machine when the workers stay busy. The load average
(sampled every 5 s) says how quiet the machine was.

    python benchmarks/suite_time.py                          # the whole suite, as CI runs it
    python benchmarks/suite_time.py -m "not slow"            # the quick tier
    MM_ST_TEST_WORKERS=0 python benchmarks/suite_time.py     # in one process (the suite before pytest-xdist)

Extra arguments go to pytest. Prints one JSON line last.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sample_load(samples: list[float], stop: threading.Event) -> None:
    while not stop.wait(5):
        samples.append(os.getloadavg()[0])


def main(argv: list[str]) -> int:
    samples: list[float] = [os.getloadavg()[0]]
    stop = threading.Event()
    threading.Thread(target=_sample_load, args=(samples, stop), daemon=True).start()
    start = time.monotonic()
    run = subprocess.run(["bash", "scripts/test.sh", "--durations=40", *argv], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    stop.set()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(run.stdout, run.stderr[-3000:], sep="\n")
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", run.stdout, flags=re.M)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    record = {"commit": commit.strip(), "args": argv, "workers": os.environ.get("MM_ST_TEST_WORKERS", "2"), "returncode": run.returncode,
              "summary": summary[-1] if summary else None, "wall_s": round(wall, 1),
              "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "cores": os.cpu_count(),
              "load_avg_1min": {"start": samples[0], "mean": round(sum(samples) / len(samples), 2), "max": max(samples)}}
    print(json.dumps(record))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
