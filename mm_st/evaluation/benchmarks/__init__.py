"""The benchmarks, one module each: MMEB (overall, meta-task and IND/OOD means), XTD (mmE5's 7-language mean), CIRR,
M-BEIR.

Every module of this package is a benchmark: :func:`mm_st.evaluation.registry.register` scans the package
(``pkgutil``, modules whose name starts with ``_`` left out) and hands each module's ``TASKS`` (task classes) and
``BENCHMARK`` (a function returning an mteb ``Benchmark``, or None) to mteb; ``DATA``
(:class:`~mm_st.evaluation.data.DataSource`: variables, layout, Hub default) says where its data come from. Adding a benchmark is adding a module here (docs/architecture.md,
"Add a benchmark").

All are mteb ``Benchmark`` objects; grouped scores come from ``CustomGrouping`` and read back with
``Benchmark.get_score(results)``:

- ``MMEB``: ``Mean(Task)`` (overall), ``Meta-task::Classification|VQA|Retrieval|Grounding``,
  ``Distribution::IND|OOD``.
- ``MMEB-V2`` (also ``MMEB-V2-video``, ``MMEB-V2-visdoc``): ``Mean(Task)`` (VLM2Vec's overall: the mean over the 78
  datasets), ``Modality::Image|Video|VisDoc``, ``Meta-task::Video CLS|QA|RET|MRET`` ... (:mod:`.mmeb_v2`).
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

from mm_st.evaluation.benchmark_scores import (
    MBEIR_SCORE,
    WRONG_MODALITY_SCORE,
    MBEIRBenchmark,
    MixedPoolBenchmark,
    UnionPoolBenchmark,
    add_wrong_modality_mean,
    mbeir_scores,
    wrong_modality_scores,
)
from mm_st.evaluation.benchmarks.emoji_mbeir import emoji_mbeir_benchmark
from mm_st.evaluation.benchmarks.mbeir import mbeir_benchmark
from mm_st.evaluation.benchmarks.mbeir_global import mbeir_global_benchmark
from mm_st.evaluation.benchmarks.mbeir_local import mbeir_local_benchmark
from mm_st.evaluation.benchmarks.mmeb import mmeb_benchmark
from mm_st.evaluation.benchmarks.xtd import xtd_benchmark

__all__ = [
    "MBEIR_SCORE",
    "WRONG_MODALITY_SCORE",
    "MBEIRBenchmark",
    "MixedPoolBenchmark",
    "UnionPoolBenchmark",
    "add_wrong_modality_mean",
    "emoji_mbeir_benchmark",
    "mbeir_benchmark",
    "mbeir_global_benchmark",
    "mbeir_local_benchmark",
    "mbeir_scores",
    "mmeb_benchmark",
    "wrong_modality_scores",
    "xtd_benchmark",
]
