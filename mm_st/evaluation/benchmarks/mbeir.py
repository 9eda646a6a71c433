"""mteb's own 16 M-BEIR local-pool tasks as the ``M-BEIR`` benchmark, reporting the paper metric (Recall@5, @10 for
fashion) beside mteb's nDCG@10. Its tasks are mteb's (none registered here).
"""

from __future__ import annotations

import mteb
from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation

from mm_st.evaluation.benchmark_scores import MBEIR_SCORE, MBEIRBenchmark
from mm_st.evaluation.instructions import MBEIR_TASKS


def mbeir_benchmark() -> Benchmark:
    """mteb's 16 M-BEIR local-pool tasks, reporting Recall@5/@10 (the paper metric) beside nDCG@10."""
    return MBEIRBenchmark(
        name="M-BEIR",
        tasks=mteb.get_tasks(tasks=list(MBEIR_TASKS)),
        description="M-BEIR (UniIR) local-pool retrieval, 16 tasks over 8 modality configurations. mteb's main "
        "score is nDCG@10; the paper metric (Recall@5, Recall@10 for Fashion200K/FashionIQ) is reported as "
        f"'{MBEIR_SCORE}'.",
        reference="https://arxiv.org/abs/2311.17136",
        aggregations=(BenchmarkAggregation.MEAN_TASK,),
    )


DATA = None  # mteb's own tasks read their Hub data
TASKS = ()
BENCHMARK = mbeir_benchmark
