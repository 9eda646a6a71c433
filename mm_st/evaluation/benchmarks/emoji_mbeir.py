"""mm_st's bundled emoji (unseen test split) as five M-BEIR tasks over one pool mixing images and texts
(``MMST-MBEIR-Emoji_<t2i|i2t|t2t|i2i|it2t>``) and the ``MMST-Emoji-MBEIR`` benchmark: Recall@1 and the
wrong-modality top-1 rate.

Data: the layout ``mm_st.training.embedded.write_mbeir`` writes, ``$MM_ST_MBEIR_DATA`` (:data:`DATA`).
"""

from __future__ import annotations

import os

from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation

from mm_st.evaluation.benchmark_scores import WRONG_MODALITY_SCORE, MixedPoolBenchmark
from mm_st.evaluation.data import SOURCES
from mm_st.evaluation.mbeir import mbeir_tasks
from mm_st.evaluation.mbeir_files import EMOJI_FILES, EMOJI_MBEIR_TASK_NAMES
from mm_st.evaluation.mbeir_local import MBEIR_TASK_CLASSES

DATA = SOURCES["mbeir"]  # where its data come from: variables, layout, Hub default


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


TASKS = tuple(MBEIR_TASK_CLASSES[f.name] for f in EMOJI_FILES)
BENCHMARK = emoji_mbeir_benchmark
