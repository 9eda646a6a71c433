"""Subprocess for the crash-safety test: run a slow scripted synthesis into ``argv[1]`` (killed mid-run by the test).
The restart after the kill calls :func:`run` in the test's own process (no interpreter start-up)."""

import sys

import torch

torch.set_num_threads(1)

from mm_st.synthesis import ScriptedBackend, SynthesisConfig, synthesize  # noqa: E402
from tests.synthesis_support import fake_answer  # noqa: E402

CONFIG = dict(num_samples=40, languages={"en": 0.5, "de": 0.25, "sw": 0.25}, seed=7)


def run(folder: str, delay: float = 0.05) -> str:
    """Synthesize into ``folder``; the summary line ``DONE <accepted> <rejected> <pending>``."""
    summary = synthesize(SynthesisConfig(**CONFIG), ScriptedBackend(fake_answer, concurrency=2, delay=delay), folder,
                         progress=False, verbose=False)
    return f"DONE {summary['accepted']} {summary['rejected']} {summary['pending']}"


if __name__ == "__main__":
    print(run(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.05))
