"""mm_st: universal multimodal embeddings from multimodal LLMs, the sentence-transformers way.

Example:
    >>> import mm_st
    >>> from mm_st.testing import tiny_model
    >>> model = mm_st.build_model(tiny_model("llava"), recipe="e5v")
    >>> model.encode_query(["a smiling face"]).shape
    (1, 64)

Top-level names are imported on first use, so ``import mm_st`` (e.g. by the mteb start-up hook)
does not load torch or sentence-transformers.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["build_model", "build_reranker", "load_model", "push_model", "MultimodalSentenceTransformer", "__version__"]

_LAZY = {"build_model": "mm_st.builder", "load_model": "mm_st.builder", "push_model": "mm_st.hub",
         "MultimodalSentenceTransformer": "mm_st.model", "build_reranker": "mm_st.rerank"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mm_st' has no attribute {name!r}")
