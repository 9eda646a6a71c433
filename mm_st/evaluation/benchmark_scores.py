"""Scores a benchmark adds to mteb's aggregations: M-BEIR's paper metric and the wrong-modality top-1 rate.

``Benchmark`` subclasses overriding ``get_score`` (the method mteb's ``Benchmark`` documents for subclasses to
customise), used by the M-BEIR benchmark modules of :mod:`mm_st.evaluation.benchmarks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mteb.benchmarks.benchmark import Benchmark

from mm_st.evaluation.instructions import MBEIR_TASKS
from mm_st.evaluation.mbeir_files import MBEIR_LOCAL_TASKS, WRONG_MODALITY
from mm_st.evaluation.mbeir_global import MBEIR_GLOBAL_TASKS

MBEIR_SCORE = "M-BEIR::Recall@5 (@10 fashion)"
WRONG_MODALITY_SCORE = f"Mean({WRONG_MODALITY})"


def mbeir_scores(model_result: Any) -> dict[str, float]:
    """The M-BEIR paper metric per task (Recall@5; Recall@10 for Fashion200K and FashionIQ)."""
    out, paper = {}, {**MBEIR_TASKS, **MBEIR_LOCAL_TASKS, **MBEIR_GLOBAL_TASKS}
    for result in model_result.task_results:
        metric = paper.get(result.task_name)
        if metric is not None:
            values = [s[metric] for split in result.scores.values() for s in split if metric in s]
            if values:
                out[result.task_name] = sum(values) / len(values)
    return out


@dataclass
class MBEIRBenchmark(Benchmark):
    """Benchmark whose scores add the mean M-BEIR paper metric to mteb's aggregations.

    Uses ``get_score``, the method mteb's ``Benchmark`` documents for subclasses to customise; a model
    lacking a task gets ``None``.
    """

    def get_score(self, results: Any, *, raise_error: bool = False) -> dict[str, dict[str, float | None]]:
        scores = super().get_score(results, raise_error=raise_error)
        for model_result in results.join_revisions():
            paper = mbeir_scores(model_result.select_tasks(self.tasks))
            complete = len(paper) == len(self.tasks)
            scores[model_result.model_name][MBEIR_SCORE] = sum(paper.values()) / len(paper) if complete else None
        return scores


def wrong_modality_scores(model_result: Any) -> dict[str, float]:
    """``wrong_modality_at_1`` per task that reports it (tasks whose pool mixes modalities)."""
    out = {}
    for result in model_result.task_results:
        values = [s[WRONG_MODALITY] for split in result.scores.values() for s in split if s.get(WRONG_MODALITY) is not None]
        if values:
            out[result.task_name] = sum(values) / len(values)
    return out


def add_wrong_modality_mean(benchmark: Benchmark, results: Any, scores: dict[str, dict[str, float | None]]) -> dict:
    """``scores`` with each model's mean wrong-modality top-1 rate over the benchmark's tasks (None until all report it)."""
    for model_result in results.join_revisions():
        rates = wrong_modality_scores(model_result.select_tasks(benchmark.tasks))
        complete = len(rates) == len(benchmark.tasks)
        scores[model_result.model_name][WRONG_MODALITY_SCORE] = sum(rates.values()) / len(rates) if complete else None
    return scores


@dataclass
class MixedPoolBenchmark(Benchmark):
    """Benchmark whose scores add the mean wrong-modality top-1 rate over its tasks (None until all report it)."""

    def get_score(self, results: Any, *, raise_error: bool = False) -> dict[str, dict[str, float | None]]:
        return add_wrong_modality_mean(self, results, super().get_score(results, raise_error=raise_error))


@dataclass
class UnionPoolBenchmark(MBEIRBenchmark):
    """M-BEIR's paper metric mean and the mean wrong-modality top-1 rate (every union-pool task reports it)."""

    def get_score(self, results: Any, *, raise_error: bool = False) -> dict[str, dict[str, float | None]]:
        return add_wrong_modality_mean(self, results, super().get_score(results, raise_error=raise_error))

