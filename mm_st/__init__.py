"""mm_st: universal multimodal embeddings from multimodal LLMs, the sentence-transformers way.

Example:
    >>> import mm_st
    >>> from mm_st.testing import tiny_model
    >>> model = mm_st.build_model(tiny_model("llava"), recipe="e5v")
    >>> model.encode_query(["a smiling face"]).shape
    (1, 64)
"""

from mm_st.builder import build_model, load_model
from mm_st.model import MultimodalSentenceTransformer

__version__ = "0.1.0"
__all__ = ["build_model", "load_model", "MultimodalSentenceTransformer", "__version__"]
