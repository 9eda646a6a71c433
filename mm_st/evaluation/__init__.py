"""Evaluation through mteb: MMEB (36 tasks), XTD, CIRR, M-BEIR instructions, mm_st models as mteb models.

Importing this package registers everything with mteb (:mod:`mm_st.evaluation.registry`); with
mm_st installed, importing ``mteb`` does it too, so the plain ``mteb`` command sees it::

    MM_ST_MMEB_DATA=/data/MMEB-eval mteb run -m ./my-mm_st-model -t MMEB-VOC2007
    mteb run -m ./my-mm_st-model -b MMEB --output-folder results

Python:
    >>> import mteb
    >>> from mm_st import build_model
    >>> from mm_st.testing import tiny_model
    >>> from mm_st.evaluation import MMSTEncoder, mmeb_tasks
    >>> encoder = MMSTEncoder(build_model(tiny_model("llava"), recipe="vlm2vec"), name="local/tiny")
    >>> tasks = mmeb_tasks(["VOC2007"], data="/data/MMEB-eval")         # or $MM_ST_MMEB_DATA
    >>> result = mteb.evaluate(encoder, tasks, cache=mteb.ResultCache("results"))  # doctest: +SKIP
    >>> result.task_results[0].get_score()                              # doctest: +SKIP
"""

from mm_st.evaluation.benchmarks import MBEIR_SCORE, mbeir_benchmark, mbeir_scores, mmeb_benchmark, xtd_benchmark
from mm_st.evaluation.data import DataLayoutError
from mm_st.evaluation.instructions import MBEIR_TASKS, MMEB, split_instruction
from mm_st.evaluation.model import MMSTEncoder, load_mm_st_model, mm_st_model_meta, paper_models, recipe_of
from mm_st.evaluation.registry import register
from mm_st.evaluation.rerank import MMSTReranker, evaluate_retrieve_then_rerank
from mm_st.evaluation.tasks import (
    CIRRComposedImageRetrieval,
    MMEBTask,
    XTDT2IRetrieval,
    check_modalities,
    mmeb_tasks,
)

__all__ = [
    "CIRRComposedImageRetrieval",
    "DataLayoutError",
    "MBEIR_SCORE",
    "MBEIR_TASKS",
    "MMEB",
    "MMEBTask",
    "MMSTEncoder",
    "MMSTReranker",
    "XTDT2IRetrieval",
    "check_modalities",
    "evaluate_retrieve_then_rerank",
    "load_mm_st_model",
    "mbeir_benchmark",
    "mbeir_scores",
    "mm_st_model_meta",
    "mmeb_benchmark",
    "mmeb_tasks",
    "paper_models",
    "recipe_of",
    "register",
    "split_instruction",
    "xtd_benchmark",
]

register()
