"""Evaluation through mteb: MMEB (36 tasks), XTD, CIRR, local and union-pool M-BEIR (with the wrong-modality rate),
mm_st models.

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

from mm_st.evaluation.benchmarks import (
    MBEIR_SCORE,
    WRONG_MODALITY_SCORE,
    emoji_mbeir_benchmark,
    mbeir_benchmark,
    mbeir_global_benchmark,
    mbeir_local_benchmark,
    mbeir_scores,
    mmeb_benchmark,
    xtd_benchmark,
)
from mm_st.evaluation.data import DataLayoutError
from mm_st.evaluation.instructions import MBEIR_TASKS, MMEB, split_instruction
from mm_st.evaluation.mbeir import (
    MBEIRLocalTask,
    evaluate_mbeir,
    mbeir_chance,
    mbeir_table,
    mbeir_tasks,
    wrong_modality_at_1,
)
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
    "MBEIRLocalTask",
    "MMEB",
    "MMEBTask",
    "MMSTEncoder",
    "MMSTReranker",
    "WRONG_MODALITY_SCORE",
    "XTDT2IRetrieval",
    "check_modalities",
    "emoji_mbeir_benchmark",
    "evaluate_mbeir",
    "evaluate_retrieve_then_rerank",
    "load_mm_st_model",
    "mbeir_benchmark",
    "mbeir_chance",
    "mbeir_global_benchmark",
    "mbeir_local_benchmark",
    "mbeir_scores",
    "mbeir_table",
    "mbeir_tasks",
    "mm_st_model_meta",
    "mmeb_benchmark",
    "mmeb_tasks",
    "paper_models",
    "recipe_of",
    "register",
    "split_instruction",
    "wrong_modality_at_1",
    "xtd_benchmark",
]

register()
