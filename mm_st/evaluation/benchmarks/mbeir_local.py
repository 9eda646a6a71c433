"""M-BEIR's 16 local-pool test tasks read from a local root (``MMST-MBEIR-<name>``, :mod:`mm_st.evaluation.mbeir`)
and the ``M-BEIR-local`` benchmark: the paper metric as main score and mean, and the wrong-modality top-1 rate.

Data: a local M-BEIR root, ``$MM_ST_MBEIR_DATA`` / ``$MM_ST_MBEIR_IMAGES`` (:data:`DATA`).
"""

from __future__ import annotations

import os

from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation

from mm_st.evaluation.benchmark_scores import MBEIR_SCORE, MBEIRBenchmark
from mm_st.evaluation.data import SOURCES
from mm_st.evaluation.mbeir import mbeir_tasks
from mm_st.evaluation.mbeir_files import MBEIR_LOCAL_FILES, MBEIR_LOCAL_TASKS, UNIIR_CITATION
from mm_st.evaluation.mbeir_local import MBEIR_TASK_CLASSES

DATA = SOURCES["mbeir"]  # where its data come from: variables, layout, Hub default


def mbeir_local_benchmark(data: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None) -> Benchmark:
    """The 16 M-BEIR local-pool tasks over a local root (``$MM_ST_MBEIR_DATA``), with the paper metric."""
    return MBEIRBenchmark(
        name="M-BEIR-local",
        tasks=mbeir_tasks(list(MBEIR_LOCAL_TASKS), data=data, image_root=image_root),
        description="M-BEIR (UniIR) local-pool retrieval read from a local M-BEIR root, 16 tasks: the paper metric "
        f"(Recall@5, Recall@10 for Fashion200K/FashionIQ) as main score and as '{MBEIR_SCORE}', and the wrong-modality "
        "top-1 rate wherever a task's pool mixes modalities.",
        reference="https://arxiv.org/abs/2311.17136",
        citation=UNIIR_CITATION,
        aggregations=(BenchmarkAggregation.MEAN_TASK,),
    )


TASKS = tuple(MBEIR_TASK_CLASSES[f.name] for f in MBEIR_LOCAL_FILES)
BENCHMARK = mbeir_local_benchmark
