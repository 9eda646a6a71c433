"""Multimodal hard-negative mining: rank windows, top-k, false-negative filters (margins), and MM-Embed's modality-aware mode.

:func:`mine_hard_negatives` ranks a corpus of texts, images and image+text inputs for every query and
returns a :class:`datasets.Dataset` of ``(anchor, positive, negative_1, ..., negative_n)`` rows (or
``(anchor, positive, negative)`` triplets) whose columns are mm_st's ``{"text", "image"}`` structs
(:data:`mm_st.data.columns.INPUT_FEATURE`), ready for :class:`mm_st.losses.MultimodalInfoNCELoss`.

What sentence-transformers' text-only ``util.mine_hard_negatives`` does not do and this does:

- images and image+text inputs; a negative is never a positive of its query, never an input whose
  content equals a positive's (exact hash of text and image pixels, :func:`mm_st.inputs.content_key`)
  and never the query itself; duplicates in the corpus are collapsed, so a row never repeats a negative;
- MM-Embed's modality-aware negatives (wrong-modality candidates ranked above the positive, plus
  correct-modality candidates from a rank window) and mmE5's single-rank negatives;
- memory bounded by ``query_chunk_size x chunk_size`` scores, never by queries x corpus (the corpus is
  streamed in chunks while a running top-k per query is kept);
- a resumable, checksummed on-disk cache of the corpus (and query) embeddings, one file per finished chunk.

One module per phase, in the order :func:`mine_hard_negatives` (in :mod:`.mine`) runs them:

- :mod:`.identity` — identity and exclusion: content hashes / ids, positives resolved to corpus
  indices, collapsed duplicates, each query's excluded groups;
- :mod:`.store` — the embedding store: chunked encoding with the resumable, checksummed cache;
- :mod:`.search` — the streamed top-k search behind one :class:`~.search.ChunkSearch` interface
  (torch, or FAISS with ``use_faiss=True``);
- :mod:`.selection` — the strategies: window, top-k, modality-aware; top / random sampling;
- :mod:`.output` — the :class:`MiningReport` and the dataset.

Example:
    >>> import numpy as np
    >>> from mm_st.mining import mine_hard_negatives
    >>> corpus = ["a cat", "a kitten", "a tiger", "a lion", "a car"]
    >>> angles = np.radians([0, 10, 20, 30, 80])  # query at 0 degrees: the closer, the higher the score
    >>> corpus_embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    >>> ds = mine_hard_negatives(
    ...     queries=["a photo of a cat"], corpus=corpus, positives=[0],
    ...     query_embeddings=np.array([[1.0, 0.0]]), corpus_embeddings=corpus_embeddings,
    ...     strategy="window", ranks=(2, 3), num_negatives=2, show_progress_bar=False,
    ... )
    >>> ds.column_names
    ['anchor', 'positive', 'negative_1', 'negative_2']
    >>> [ds[0][column]["text"] for column in ds.column_names]
    ['a photo of a cat', 'a cat', 'a tiger', 'a lion']
"""

from mm_st.mining.mine import mine_hard_negatives
from mm_st.mining.output import MiningReport

__all__ = ["MiningReport", "mine_hard_negatives"]
