"""M-BEIR's union (global) pool: the ``MMST-MBEIR-global-<name>`` tasks (:mod:`mm_st.evaluation.mbeir_global`) and the
``M-BEIR-global`` benchmark (paper metric and wrong-modality rate means).

Data: a local M-BEIR root with ``cand_pool/global/mbeir_union_test_cand_pool.jsonl``, ``$MM_ST_MBEIR_DATA``
(:data:`DATA`).
"""

from __future__ import annotations

import os
from pathlib import Path

from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation

from mm_st.evaluation.benchmark_scores import MBEIR_SCORE, WRONG_MODALITY_SCORE, UnionPoolBenchmark
from mm_st.evaluation.data import SOURCES
from mm_st.evaluation.mbeir_files import UNIIR_CITATION
from mm_st.evaluation.mbeir_global import MBEIR_GLOBAL_TASK_CLASSES, MBEIR_GLOBAL_TASKS, global_task_names, global_tasks

DATA = SOURCES["mbeir"]  # where its data come from: variables, layout, Hub default


def mbeir_global_benchmark(data: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None) -> Benchmark:
    """The union-pool tasks (:mod:`mm_st.evaluation.mbeir_global`) of the root ``data`` (``$MM_ST_MBEIR_DATA``):
    one per query file there when the root has a union test pool, else M-BEIR's 16."""
    source = data if data is not None else os.environ.get(DATA.data_env)
    names = global_task_names(source) if source and Path(source).is_dir() else []
    return UnionPoolBenchmark(
        name="M-BEIR-global",
        tasks=global_tasks(names or list(MBEIR_GLOBAL_TASKS), data=data, image_root=image_root),
        description="M-BEIR (UniIR) with the union (global) candidate pool, as MM-Embed measures modality bias: each "
        "task's queries ranked against every task's candidates, all modalities (cand_pool/global/"
        f"mbeir_union_test_cand_pool.jsonl of a local root). Paper metric as main score and '{MBEIR_SCORE}', and the "
        f"wrong-modality top-1 rate ('{WRONG_MODALITY_SCORE}').",
        reference="https://arxiv.org/abs/2411.02571",
        citation=UNIIR_CITATION,
        aggregations=(BenchmarkAggregation.MEAN_TASK,),
    )


TASKS = tuple(MBEIR_GLOBAL_TASK_CLASSES.values())
BENCHMARK = mbeir_global_benchmark
