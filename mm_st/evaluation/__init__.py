"""Evaluation through mteb: MMEB (36 tasks), MMEB-V2 (+ 18 video, 24 visual-document tasks), XTD, CIRR, local and union-pool M-BEIR (with the wrong-modality rate),
mm_st models.

With mm_st installed, importing ``mteb`` registers mm_st's tasks, benchmarks and models with it
(:mod:`mm_st.evaluation.registry`), so the plain ``mteb`` command sees them::

    MM_ST_MMEB_DATA=/data/MMEB-eval mteb run -m ./my-mm_st-model -t MMEB-VOC2007
    mteb run -m ./my-mm_st-model -b MMEB --output-folder results

Importing this package, or a helper of it such as :mod:`mm_st.evaluation.data`, imports neither mteb nor
the task modules: the names below are imported on first use, and the first one that is an mteb object
(all but ``DataLayoutError``, ``MBEIR_TASKS``, ``MMEB``, ``split_instruction``) registers mm_st with mteb.

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

import importlib
from typing import Any

# public name -> the module of mm_st.evaluation defining it (imported on first use)
_EXPORTS = {
    **dict.fromkeys(("MBEIR_SCORE", "WRONG_MODALITY_SCORE", "emoji_mbeir_benchmark", "mbeir_benchmark",
                     "mbeir_global_benchmark", "mbeir_local_benchmark", "mbeir_scores", "mmeb_benchmark",
                     "xtd_benchmark"), "benchmarks"),
    **dict.fromkeys(("MMEBV2Task", "mmeb_v2_benchmark", "mmeb_v2_tasks"), "benchmarks.mmeb_v2"),
    **dict.fromkeys(("MBEIRLocalTask", "evaluate_mbeir", "mbeir_chance", "mbeir_table", "mbeir_tasks",
                     "wrong_modality_at_1"), "mbeir"),
    **dict.fromkeys(("MMSTEncoder", "load_mm_st_model", "mm_st_model_meta", "paper_models", "recipe_of"), "model"),
    **dict.fromkeys(("MMSTReranker", "evaluate_retrieve_then_rerank"), "retrieve_then_rerank"),
    **dict.fromkeys(("CIRRComposedImageRetrieval", "MMEBTask", "XTDT2IRetrieval", "check_modalities", "mmeb_tasks"),
                    "tasks"),
    "register": "registry",
}
_WITHOUT_MTEB = {"DataLayoutError": "data", **dict.fromkeys(("MBEIR_TASKS", "MMEB", "split_instruction"), "instructions"),
                 "task_inputs": "mmeb_v2_files"}

__all__ = sorted([*_EXPORTS, *_WITHOUT_MTEB])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name) or _WITHOUT_MTEB.get(name)
    if module is None:
        return _submodule(name)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    if name in _EXPORTS:  # an mteb object: mteb is imported now, so mm_st registers with it
        importlib.import_module(f"{__name__}.registry").register()
    globals()[name] = value
    return value


def _submodule(name: str) -> Any:
    """``mm_st.evaluation.<name>`` as an attribute (``mm_st.evaluation.data``), imported on first use."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
