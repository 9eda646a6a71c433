"""Time the test suite as CI runs it (``bash scripts/test.sh``): wall time, the CPU time of the whole process tree,
the machine's load while it ran, pytest's summary and slowest tests, and the test time summed by file (from
pytest's JUnit report: which files to make faster first).

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
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sample_load(samples: list[float], stop: threading.Event) -> None:
    while not stop.wait(5):
        samples.append(os.getloadavg()[0])


def seconds_by_file(junit: Path, top: int = 15) -> dict[str, float]:
    """Each test file's summed test time (setup, call and teardown of its tests), largest first."""
    if not junit.is_file():
        return {}
    totals: Counter = Counter()
    for case in ET.parse(junit).iter("testcase"):
        totals[case.get("classname", "").split("::")[0]] += float(case.get("time") or 0)
    return {name: round(seconds, 1) for name, seconds in totals.most_common(top)}


def main(argv: list[str]) -> int:
    samples: list[float] = [os.getloadavg()[0]]
    stop = threading.Event()
    threading.Thread(target=_sample_load, args=(samples, stop), daemon=True).start()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        run = subprocess.run(["bash", "scripts/test.sh", "--durations=40", f"--junitxml={junit}", *argv], cwd=ROOT,
                             capture_output=True, text=True)
        wall = time.monotonic() - start
        by_file = seconds_by_file(junit)
    stop.set()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(run.stdout, run.stderr[-3000:], sep="\n")
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", run.stdout, flags=re.M)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    record = {"commit": commit.strip(), "args": argv, "workers": os.environ.get("MM_ST_TEST_WORKERS", "2"), "returncode": run.returncode,
              "summary": summary[-1] if summary else None, "wall_s": round(wall, 1),
              "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "cores": os.cpu_count(),
              "load_avg_1min": {"start": samples[0], "mean": round(sum(samples) / len(samples), 2), "max": max(samples)},
              "test_s_by_file": by_file}
    print(json.dumps(record))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
