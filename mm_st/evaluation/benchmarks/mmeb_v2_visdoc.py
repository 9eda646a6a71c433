"""``MMEB-V2-visdoc``: MMEB-V2's 24 visual-document tasks of VLM2Vec's table (nDCG@5), with VLM2Vec's
visdoc mean and its meta-task means.

The tasks are those of :mod:`mm_st.evaluation.benchmarks.mmeb_v2` (registered there); data: ``$MM_ST_MMEB_V2_DATA``.

Example:
    >>> from mm_st.evaluation.benchmarks.mmeb_v2_visdoc import mmeb_v2_visdoc_benchmark
    >>> len(mmeb_v2_visdoc_benchmark().tasks)
    24
"""

from __future__ import annotations

import os

from mteb.benchmarks.benchmark import Benchmark

from mm_st.evaluation.benchmarks.mmeb_v2 import DATA, v2_benchmark

__all__ = ["DATA", "mmeb_v2_visdoc_benchmark"]


def mmeb_v2_visdoc_benchmark(data: str | os.PathLike | None = None) -> Benchmark:
    """``MMEB-V2-visdoc`` reading the root ``data`` (default ``$MM_ST_MMEB_V2_DATA``)."""
    return v2_benchmark("MMEB-V2-visdoc", ("visdoc",), data)


TASKS = ()  # registered by mm_st.evaluation.benchmarks.mmeb_v2
BENCHMARK = mmeb_v2_visdoc_benchmark
