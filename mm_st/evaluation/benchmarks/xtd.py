"""XTD10 multilingual text-to-image retrieval: the ``XTDT2IRetrieval`` task and the ``XTD`` benchmark (mean over all
languages and over mmE5's seven).

Data: ``$MM_ST_XTD_DATA`` / ``$MM_ST_XTD_IMAGES`` (:data:`DATA`).
"""

from __future__ import annotations

import os

from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation, CustomGroup, CustomGrouping

from mm_st.evaluation.data import SOURCES
from mm_st.evaluation.tasks import MME5_XTD_LANGUAGES, XTDT2IRetrieval

DATA = SOURCES["xtd"]  # where its data come from: variables, layout, Hub default


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


TASKS = (XTDT2IRetrieval,)
BENCHMARK = xtd_benchmark
