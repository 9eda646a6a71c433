"""Old home of :mod:`mm_st.evaluation.retrieve_then_rerank` (retrieve with an embedder, rerank its top ``k`` inside
mteb); :mod:`mm_st.rerank` builds the reranker itself."""

from mm_st.evaluation.retrieve_then_rerank import MMSTReranker, evaluate_retrieve_then_rerank

__all__ = ["MMSTReranker", "evaluate_retrieve_then_rerank"]
