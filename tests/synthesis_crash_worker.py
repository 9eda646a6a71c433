"""Subprocess for the crash-safety and concurrency tests: run a scripted synthesis into ``argv[1]``.

``argv[2]``: seconds each answer takes (the crash test kills the run mid-way). ``argv[3]`` (optional): a gate file;
after 4 answers the run waits until that file exists, so a test can act while the run is surely mid-way and holds
the folder's lock (no timing assumption). The restart after the kill calls :func:`run` in the test's own process.
"""

import sys
import threading
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from mm_st.synthesis import ScriptedBackend, SynthesisConfig, synthesize  # noqa: E402
from tests.synthesis_support import fake_answer  # noqa: E402

CONFIG = dict(num_samples=40, languages={"en": 0.5, "de": 0.25, "sw": 0.25}, seed=7)
ANSWERS_BEFORE_GATE = 4


def gated_answer(gate: Path, timeout: float = 300.0):
    """``fake_answer`` that, after ``ANSWERS_BEFORE_GATE`` answers, waits for ``gate`` to exist (raises at timeout)."""
    answered, count_lock = [0], threading.Lock()

    def respond(request):
        with count_lock:
            answered[0] += 1
            waits = answered[0] > ANSWERS_BEFORE_GATE
        deadline = time.monotonic() + timeout
        while waits and not gate.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"gate {gate} never opened")
            time.sleep(0.02)
        return fake_answer(request)

    return respond


def run(folder: str, delay: float = 0.05, gate: str | None = None) -> str:
    """Synthesize into ``folder``; the summary line ``DONE <accepted> <rejected> <pending>``."""
    respond = gated_answer(Path(gate)) if gate else fake_answer
    summary = synthesize(SynthesisConfig(**CONFIG), ScriptedBackend(respond, concurrency=2, delay=delay), folder,
                         progress=False, verbose=False)
    return f"DONE {summary['accepted']} {summary['rejected']} {summary['pending']}"


if __name__ == "__main__":
    print(run(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.05, sys.argv[3] if len(sys.argv) > 3 else None))
