"""Subprocess for the crash-safety test: run a slow scripted synthesis into ``argv[1]`` (killed mid-run by the test)."""

import sys

import torch

torch.set_num_threads(1)

from mm_st.synthesis import ScriptedBackend, SynthesisConfig, synthesize  # noqa: E402
from tests.synthesis_support import fake_answer  # noqa: E402

CONFIG = dict(num_samples=40, languages={"en": 0.5, "de": 0.25, "sw": 0.25}, seed=7)

if __name__ == "__main__":
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    summary = synthesize(SynthesisConfig(**CONFIG), ScriptedBackend(fake_answer, concurrency=2, delay=delay), sys.argv[1], progress=False, verbose=False)
    print("DONE", summary["accepted"], summary["rejected"], summary["pending"])
