"""``MMEB-V2-video``: MMEB-V2's 18 video tasks (Hit@1), with VLM2Vec's video mean and its meta-task means.

The tasks are those of :mod:`mm_st.evaluation.benchmarks.mmeb_v2` (registered there); data: ``$MM_ST_MMEB_V2_DATA``.

Example:
    >>> from mm_st.evaluation.benchmarks.mmeb_v2_video import mmeb_v2_video_benchmark
    >>> len(mmeb_v2_video_benchmark().tasks)
    18
"""

from __future__ import annotations

import os

from mteb.benchmarks.benchmark import Benchmark

from mm_st.evaluation.benchmarks.mmeb_v2 import DATA, v2_benchmark

__all__ = ["DATA", "mmeb_v2_video_benchmark"]


def mmeb_v2_video_benchmark(data: str | os.PathLike | None = None) -> Benchmark:
    """``MMEB-V2-video`` reading the root ``data`` (default ``$MM_ST_MMEB_V2_DATA``)."""
    return v2_benchmark("MMEB-V2-video", ("video",), data)


TASKS = ()  # registered by mm_st.evaluation.benchmarks.mmeb_v2
BENCHMARK = mmeb_v2_video_benchmark
