"""MMEB v1 (VLM2Vec): the 36 ``MMEB-<dataset>`` tasks and the ``MMEB`` benchmark (overall, meta-task and IND/OOD
means).

Data: ``$MM_ST_MMEB_DATA`` / ``$MM_ST_MMEB_IMAGES`` (:data:`DATA`), default the Hub's ``TIGER-Lab/MMEB-eval``.

Example:
    >>> from mm_st.evaluation.benchmarks.mmeb import mmeb_benchmark
    >>> bench = mmeb_benchmark(data="/path/to/MMEB-eval")
    >>> len(bench.tasks), [g.label for g in bench.aggregations[1].groups]
    (36, ['Classification', 'VQA', 'Retrieval', 'Grounding'])
"""

from __future__ import annotations

import os

from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation, CustomGroup, CustomGrouping

from mm_st.evaluation.data import SOURCES
from mm_st.evaluation.instructions import META_TASKS, MMEB
from mm_st.evaluation.tasks import MMEB_TASK_CLASSES, VLM2VEC_CITATION, mmeb_tasks

DATA = SOURCES["mmeb"]  # where its data come from: variables, layout, Hub default


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


TASKS = tuple(MMEB_TASK_CLASSES.values())
BENCHMARK = mmeb_benchmark
