"""Benchmarks: MMEB (overall, meta-task and IND/OOD means), XTD (mmE5's 7-language mean), M-BEIR.

All are mteb ``Benchmark`` objects; grouped scores come from ``CustomGrouping`` and read back with
``Benchmark.get_score(results)``:

- ``MMEB``: ``Mean(Task)`` (overall), ``Meta-task::Classification|VQA|Retrieval|Grounding``,
  ``Distribution::IND|OOD``.
- ``XTD``: ``Mean(Task)`` over all languages and ``mmE5 languages::es,it,ko,pl,ru,tr,zh``.
- ``M-BEIR``: mteb's 16 local-pool tasks; ``Mean(Task)`` of mteb's main score (nDCG@10) beside
  ``M-BEIR::Recall@5 (@10 fashion)``, the paper metric (:func:`mbeir_scores` per task).
- ``M-BEIR-local``: the same 16 tasks read from a local M-BEIR root (:mod:`mm_st.evaluation.mbeir`);
  ``Mean(Task)`` of their main score, the paper metric itself, beside ``M-BEIR::Recall@5 (@10 fashion)``.
- ``MMST-Emoji-MBEIR``: the five embedded emoji M-BEIR tasks; ``Mean(Task)`` (Recall@1) and
  ``Mean(wrong_modality_at_1)``.
- ``M-BEIR-global``: the union-pool tasks (:mod:`mm_st.evaluation.mbeir_global`) of a local root; ``Mean(Task)``,
  ``M-BEIR::Recall@5 (@10 fashion)`` and ``Mean(wrong_modality_at_1)``.

Example:
    >>> from mm_st.evaluation import mmeb_benchmark
    >>> bench = mmeb_benchmark(data="/path/to/MMEB-eval")
    >>> len(bench.tasks), [g.label for g in bench.aggregations[1].groups]
    (36, ['Classification', 'VQA', 'Retrieval', 'Grounding'])
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation, CustomGroup, CustomGrouping

from mm_st.evaluation.data import ENV
from mm_st.evaluation.instructions import MBEIR_TASKS, META_TASKS, MMEB
from mm_st.evaluation.mbeir import EMOJI_MBEIR_TASK_NAMES, MBEIR_LOCAL_TASKS, UNIIR_CITATION, WRONG_MODALITY, mbeir_tasks
from mm_st.evaluation.tasks import MME5_XTD_LANGUAGES, VLM2VEC_CITATION, XTDT2IRetrieval, mmeb_tasks

MBEIR_SCORE = "M-BEIR::Recall@5 (@10 fashion)"
WRONG_MODALITY_SCORE = f"Mean({WRONG_MODALITY})"


def mmeb_benchmark(data: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None) -> Benchmark:
    """The 36-task MMEB v1 benchmark with its grouped means (data as in :func:`mmeb_tasks`)."""
    tasks = mmeb_tasks(data=data, image_root=image_root)
    by_name = {t.entry.name: t for t in tasks}

    def group(label: str, names: list[str]) -> CustomGroup:
        return CustomGroup(label=label, tasks=[by_name[n] for n in names])

    return Benchmark(
        name="MMEB",
        aliases=("MMEB(v1)",),
        tasks=tasks,
        description="MMEB v1 (VLM2Vec): 36 image-text embedding datasets in 4 meta-tasks; Precision@1 against "
        "each query's own candidates. Reports the overall mean, meta-task means and IND/OOD means.",
        reference="https://arxiv.org/abs/2410.05160",
        citation=VLM2VEC_CITATION,
        aggregations=(
            BenchmarkAggregation.MEAN_TASK,
            CustomGrouping(
                name="Meta-task",
                groups=tuple(group(m, [n for n, e in MMEB.items() if e.meta_task == m]) for m in META_TASKS),
            ),
            CustomGrouping(
                name="Distribution",
                groups=tuple(group(d, [n for n, e in MMEB.items() if e.distribution == d]) for d in ("IND", "OOD")),
            ),
        ),
    )


def xtd_benchmark(data: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None) -> Benchmark:
    """XTD with the mean over all languages and over mmE5's seven (es, it, ko, pl, ru, tr, zh)."""
    task = XTDT2IRetrieval(data=data, image_root=image_root)
    mme5 = XTDT2IRetrieval(data=data, image_root=image_root).filter_languages(None, hf_subsets=list(MME5_XTD_LANGUAGES))
    return Benchmark(
        name="XTD",
        tasks=[task],
        description="XTD10 multilingual text-to-image retrieval, Recall@10.",
        reference="https://github.com/adobe-research/Cross-lingual-Test-Dataset-XTD10",
        aggregations=(
            BenchmarkAggregation.MEAN_TASK,
            CustomGrouping(name="mmE5 languages", groups=(CustomGroup(label=",".join(MME5_XTD_LANGUAGES), tasks=[mme5]),)),
        ),
    )


def mbeir_scores(model_result: Any) -> dict[str, float]:
    """The M-BEIR paper metric per task (Recall@5; Recall@10 for Fashion200K and FashionIQ)."""
    from mm_st.evaluation.mbeir_global import MBEIR_GLOBAL_TASKS

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


def mbeir_benchmark() -> Benchmark:
    """mteb's 16 M-BEIR local-pool tasks, reporting Recall@5/@10 (the paper metric) beside nDCG@10."""
    import mteb

    return MBEIRBenchmark(
        name="M-BEIR",
        tasks=mteb.get_tasks(tasks=list(MBEIR_TASKS)),
        description="M-BEIR (UniIR) local-pool retrieval, 16 tasks over 8 modality configurations. mteb's main "
        "score is nDCG@10; the paper metric (Recall@5, Recall@10 for Fashion200K/FashionIQ) is reported as "
        f"'{MBEIR_SCORE}'.",
        reference="https://arxiv.org/abs/2311.17136",
        aggregations=(BenchmarkAggregation.MEAN_TASK,),
    )


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


def mbeir_global_benchmark(data: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None) -> Benchmark:
    """The union-pool tasks (:mod:`mm_st.evaluation.mbeir_global`) of the root ``data`` (``$MM_ST_MBEIR_DATA``):
    one per query file there when the root has a union test pool, else M-BEIR's 16."""
    from mm_st.evaluation.mbeir_global import MBEIR_GLOBAL_TASKS, global_task_names, global_tasks

    source = data if data is not None else os.environ.get(ENV["mbeir"][0])
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


def emoji_mbeir_benchmark(data: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None) -> Benchmark:
    """The five embedded emoji M-BEIR tasks (``write_mbeir``'s test split): mean Recall@1 and wrong-modality rate."""
    return MixedPoolBenchmark(
        name="MMST-Emoji-MBEIR",
        tasks=mbeir_tasks(list(EMOJI_MBEIR_TASK_NAMES), data=data, image_root=image_root),
        description="mm_st's bundled emoji (unseen test split) as five M-BEIR tasks over one pool mixing images and "
        f"texts: Recall@1 ('Mean(Task)') and the wrong-modality top-1 rate ('{WRONG_MODALITY_SCORE}').",
        reference="https://arxiv.org/abs/2411.02571",
        aggregations=(BenchmarkAggregation.MEAN_TASK,),
    )
