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

Before and after a change, back to back on the same machine (what a shared machine allows: the CPU seconds and the
per-test seconds of the tests a change touches):

    MM_ST_TEST_WORKERS=0 python benchmarks/suite_time.py --before <commit> tests/test_x.py -k name

exports ``<commit>`` (``git archive``) to a temporary folder, runs the tests there, then in this checkout, both with
this checkout's virtual environment (so the commit must have the same lock, pyproject.toml, setup.py and
scripts/env.sh), and prints each test's seconds (setup + call + teardown) before and after, and one JSON line.
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


ENV_FILES = ("requirements.lock", "pyproject.toml", "setup.py", "scripts/env.sh")


def seconds_by_test(junit: Path) -> dict[str, float]:
    """Each test's time (setup, call and teardown) from pytest's JUnit report, by test id."""
    if not junit.is_file():
        return {}
    return {f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}": float(case.get("time") or 0)
            for case in ET.parse(junit).iter("testcase")}


def timed_run(root: Path, argv: list[str], junit: Path) -> dict:
    """``bash scripts/test.sh`` in ``root`` with this checkout's venv: wall and CPU (process tree), per-test seconds."""
    env = {**os.environ, "MM_ST_VENV": os.environ.get("MM_ST_VENV", str(ROOT / ".venv"))}
    # root's mm_st in every process, ahead of the venv's editable install of this checkout (a console script such as
    # `mteb`, or a process started elsewhere than root, would otherwise import this checkout's mm_st in the before run)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    run = subprocess.run(["bash", "scripts/test.sh", f"--junitxml={junit}", *argv], cwd=root, env=env,
                         capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", run.stdout, flags=re.M)
    return {"returncode": run.returncode, "summary": summary[-1] if summary else run.stdout[-2000:] + run.stderr[-2000:],
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_avg_1min_at_end": os.getloadavg()[0],
            "tests": seconds_by_test(junit)}


def compare(commit: str, argv: list[str]) -> int:
    """The tests of ``argv`` at ``commit`` (before), then in this checkout (after), back to back."""
    for name in ENV_FILES:
        old = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=ROOT, capture_output=True).stdout
        if old != (ROOT / name).read_bytes():
            sys.exit(f"{commit} has another {name}: its tests need their own venv (this would rebuild this one)")
    with tempfile.TemporaryDirectory() as tmp:
        before_root = Path(tmp) / "before"
        before_root.mkdir()
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before_root)], input=archive, check=True)
        runs = {"before": timed_run(before_root, argv, Path(tmp) / "before.xml"),
                "after": timed_run(ROOT, argv, Path(tmp) / "after.xml")}
    ids = sorted(set(runs["before"]["tests"]) | set(runs["after"]["tests"]),
                 key=lambda t: -max(runs["before"]["tests"].get(t, 0), runs["after"]["tests"].get(t, 0)))
    print("| test | before s | after s |\n|---|---:|---:|")
    for test in ids:
        cells = [f"{runs[k]['tests'][test]:.2f}" if test in runs[k]["tests"] else "-" for k in ("before", "after")]
        print(f"| {test} | {cells[0]} | {cells[1]} |")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for label in ("before", "after"):
        print(f"{label}: {runs[label]['summary']}; wall {runs[label]['wall_s']} s, CPU {runs[label]['cpu_s']} s")
    print(json.dumps({"before_commit": commit, "after_commit": head, "args": argv, "workers": os.environ.get("MM_ST_TEST_WORKERS", "2"),
                      **{label: {k: v for k, v in run.items() if k != "tests"} for label, run in runs.items()}}))
    return max(runs["before"]["returncode"], runs["after"]["returncode"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--before"]:
        sys.exit(compare(sys.argv[2], sys.argv[3:]))
    sys.exit(main(sys.argv[1:]))
