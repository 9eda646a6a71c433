"""CPU seconds of a process that imports mteb with mm_st installed and looks up a task (what each recipe process
that evaluates, each `mteb run -t` and each pytest worker does), before and after a change, back to back:

    python benchmarks/mteb_start_time.py --before <commit> [--repeat 3]

exports ``<commit>`` (``git archive``) to a temporary folder and puts it first on ``PYTHONPATH`` (its mm_st, ahead of
the venv's editable install of this checkout), then runs the same process with this checkout's mm_st, alternating,
``--repeat`` times each; also ``import mteb`` with ``MM_ST_MTEB_PLUGIN=0`` (mteb alone). One torch thread, bytecode kept (as
scripts/test.sh). Prints each run's CPU seconds (user + sys) and one JSON line with the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = "import mteb; mteb.get_task('MMEB-VOC2007')"


def cpu_seconds(env: dict[str, str]) -> float:
    """CPU (user + sys) of one ``python -c CODE`` process (``import mteb`` alone where the plugin is off)."""
    code = "import mteb" if env.get("MM_ST_MTEB_PLUGIN") == "0" else CODE
    start = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tempfile.gettempdir())
    end = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = {**os.environ, "OMP_NUM_THREADS": "1"}
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    base.setdefault("PYTHONPYCACHEPREFIX", str(Path(sys.prefix) / "pycache"))
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        envs = {"before": {**base, "PYTHONPATH": tmp}, "after": {**base, "PYTHONPATH": str(ROOT)},
                "mteb alone": {**base, "PYTHONPATH": str(ROOT), "MM_ST_MTEB_PLUGIN": "0"}}
        for env in envs.values():  # bytecode written once, outside the figures
            cpu_seconds(env)
        runs: dict[str, list[float]] = {name: [] for name in envs}
        for _ in range(args.repeat):
            for name, env in envs.items():
                runs[name].append(cpu_seconds(env))
                print(name, runs[name][-1], flush=True)
    print(json.dumps({"code": CODE, "before_commit": args.before, "cpu_s": runs,
                      "median_cpu_s": {name: statistics.median(values) for name, values in runs.items()}}))


if __name__ == "__main__":
    main()
