"""Search: the top ``depth`` candidates per query, streamed over the corpus one chunk at a time.

:func:`search` reads each corpus chunk once (normalised), scores it against the queries block by
block through a :class:`ChunkSearch` and merges a running top-k per query with ``torch.topk``, so
its working memory is ``query_chunk_size x chunk_size`` scores plus ``queries x depth`` results,
never queries x corpus. Collapsed duplicates and each query's excluded groups (see
:mod:`mm_st.mining.identity`) are removed before ranking. Two :class:`ChunkSearch` implementations
give the same results: :class:`TorchSearch` (a matrix product, the default) and
:class:`FaissSearch` (a FAISS flat inner-product index per chunk; needs ``faiss``).

Example:
    >>> import numpy as np, torch
    >>> from mm_st.mining.search import TorchSearch, search
    >>> from mm_st.mining.store import Embeddings
    >>> corpus = Embeddings.from_array(np.eye(3, dtype=np.float32), chunk_size=2)
    >>> queries = torch.tensor([[0.1, 0.2, 0.9]])  # closest to item 2, then 1, then 0
    >>> scores, indices = search(queries, corpus, depth=2, group=np.arange(3), is_duplicate=np.zeros(3, bool),
    ...                          excluded=np.array([[1]]), query_chunk_size=1,
    ...                          searcher=TorchSearch(1, 2, torch.device("cpu")), show_progress_bar=False)
    >>> indices.tolist()  # item 1 is excluded for this query
    [[2, 0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from mm_st.mining.store import Embeddings

__all__ = ["ChunkMask", "ChunkSearch", "FaissSearch", "ScoreCap", "TorchSearch", "make_search", "normalized", "pair_scores",
           "require_faiss", "search"]


@dataclass
class ChunkMask:
    """What one block of queries must not get from one corpus chunk (tensors on the search device).

    Attributes:
        groups: group id of each chunk column.
        duplicate: per chunk column, True for a collapsed duplicate.
        duplicate_cols: the columns where ``duplicate`` is True.
        hit_cols: columns whose group is excluded by at least one query of the block.
        excluded: ``(rows, width)`` excluded group ids per query of the block (-1 = padding).
        cap: the block's rows of a :class:`ScoreCap` (None = no cap).
    """

    groups: torch.Tensor
    duplicate: torch.Tensor
    duplicate_cols: torch.Tensor
    hit_cols: torch.Tensor
    excluded: torch.Tensor
    cap: ScoreCap | None = None


@dataclass
class ScoreCap:
    """Per query, the highest score a negative may have (``limit``; the margins and ``max_score`` of
    :func:`mm_st.mining.mine_hard_negatives`): a candidate above it is a likely false negative, removed
    BEFORE ranking (as sentence-transformers does), and counted in ``removed``.

    With ``target_bits`` (per query, a bit mask of modality ids) and ``modality`` (per chunk column), the
    cap applies only to candidates of the query's target modality (MM-Embed's type-2 side).
    """

    limit: torch.Tensor
    removed: torch.Tensor
    target_bits: torch.Tensor | None = None
    modality: torch.Tensor | None = None

    def rows(self, start: int, stop: int, modality: torch.Tensor | None) -> ScoreCap:
        """The cap of queries ``start:stop`` against one chunk (``removed`` is a view: counts add up)."""
        bits = self.target_bits[start:stop] if self.target_bits is not None else None
        return ScoreCap(self.limit[start:stop], self.removed[start:stop], bits, modality)

    def apply_(self, scores: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Set ``scores`` above the limit to ``-inf`` in place (``cols``: the chunk columns of ``scores``)."""
        over = scores > self.limit.unsqueeze(1)
        if self.target_bits is not None:
            over &= ((self.target_bits.unsqueeze(1) >> self.modality[cols]) & 1).bool()
        self.removed += over.sum(dim=1)
        return scores.masked_fill_(over, float("-inf"))


class ChunkSearch:
    """Interface: the top-``k`` columns of one corpus chunk for a block of queries, masked columns removed.

    :meth:`set_chunk` is called once per chunk (rows normalised), then :meth:`top` once per query block;
    :meth:`top` returns ``(scores, chunk-local indices)`` of shape ``(rows, <= k)``, a masked column
    having score ``-inf`` if it is returned at all.
    """

    def set_chunk(self, chunk: torch.Tensor) -> None:
        raise NotImplementedError

    def top(self, queries: torch.Tensor, k: int, mask: ChunkMask) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class TorchSearch(ChunkSearch):
    """Exact scores by a matrix product into one reused ``max_rows x max_cols`` buffer, then ``topk``."""

    def __init__(self, max_rows: int, max_cols: int, device: torch.device) -> None:
        self.buffer = torch.empty(max_rows * max_cols, device=device)
        self.chunk: torch.Tensor | None = None

    def set_chunk(self, chunk: torch.Tensor) -> None:
        self.chunk = chunk

    def top(self, queries: torch.Tensor, k: int, mask: ChunkMask) -> tuple[torch.Tensor, torch.Tensor]:
        rows, size = queries.size(0), self.chunk.size(0)
        scores = torch.mm(queries, self.chunk.T, out=self.buffer[: rows * size].view(rows, size))
        if mask.duplicate_cols.numel():
            scores[:, mask.duplicate_cols] = float("-inf")
        if mask.hit_cols.numel():
            hit = (mask.groups[mask.hit_cols].view(1, -1, 1) == mask.excluded.unsqueeze(1)).any(-1)
            scores[:, mask.hit_cols] = scores[:, mask.hit_cols].masked_fill(hit, float("-inf"))
        if mask.cap is not None:
            mask.cap.apply_(scores, torch.arange(size, device=scores.device))
        return scores.topk(min(k, size), dim=1)


class FaissSearch(ChunkSearch):
    """A FAISS ``IndexFlatIP`` per chunk; asks for ``k`` plus as many as may be masked, then masks."""

    def __init__(self, device: torch.device) -> None:
        self.faiss = require_faiss()
        self.device = device
        self.index = None
        self.size = 0

    def set_chunk(self, chunk: torch.Tensor) -> None:
        self.index = self.faiss.IndexFlatIP(chunk.size(1))
        self.index.add(np.ascontiguousarray(chunk.cpu().numpy()))
        self.size = chunk.size(0)

    def top(self, queries: torch.Tensor, k: int, mask: ChunkMask) -> tuple[torch.Tensor, torch.Tensor]:
        # with a cap, any number of columns may be removed: every column of the chunk is scored
        want = self.size if mask.cap is not None else min(self.size, k + mask.duplicate_cols.numel() + mask.hit_cols.numel())
        found_scores, found_index = self.index.search(np.ascontiguousarray(queries.cpu().numpy()), want)
        scores = torch.from_numpy(found_scores).to(self.device)
        local = torch.from_numpy(found_index).to(device=self.device, dtype=torch.long)
        safe = local.clamp_min(0)
        drop = (local < 0) | mask.duplicate[safe]
        if mask.hit_cols.numel():
            drop |= (mask.groups[safe].unsqueeze(-1) == mask.excluded.unsqueeze(1)).any(-1)
        scores = scores.masked_fill(drop, float("-inf"))
        if mask.cap is not None:
            mask.cap.apply_(scores, safe)
        top_scores, order = scores.topk(min(k, want), dim=1)
        return top_scores, local.gather(1, order)


def make_search(use_faiss: bool, max_rows: int, max_cols: int, device: torch.device) -> ChunkSearch:
    """:class:`FaissSearch` with ``use_faiss``, else :class:`TorchSearch`."""
    return FaissSearch(device) if use_faiss else TorchSearch(max_rows, max_cols, device)


def require_faiss():
    """The ``faiss`` module, or an ImportError that says what to install."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("use_faiss=True needs the faiss package (pip install faiss-cpu).") from exc
    return faiss


def search(Q: torch.Tensor, store: Embeddings, depth: int, group: np.ndarray, is_duplicate: np.ndarray,
           excluded: np.ndarray, query_chunk_size: int, searcher: ChunkSearch,
           show_progress_bar: bool, cap: ScoreCap | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``depth`` (scores, corpus indices) per query (rows of ``Q``, normalised), excluded groups,
    duplicates and candidates above ``cap`` removed; missing entries have score ``-inf`` and index -1."""
    device = Q.device
    num_queries = Q.size(0)
    vals = torch.full((num_queries, depth), float("-inf"), device=device)
    idx = torch.full((num_queries, depth), -1, dtype=torch.long, device=device)
    group_t = torch.from_numpy(group).to(device)
    duplicate_t = torch.from_numpy(is_duplicate).to(device)
    excluded_t = torch.from_numpy(excluded).to(device)
    block_groups = []  # per query block: the excluded groups of any of its queries
    for qs in range(0, num_queries, query_chunk_size):
        block = excluded_t[qs : qs + query_chunk_size]
        block_groups.append(torch.unique(block[block >= 0]))
    with tqdm(total=len(store), desc="Searching", unit="candidate", disable=not show_progress_bar) as bar:
        for start, part in store.chunks():
            chunk = normalized(torch.tensor(np.asarray(part, dtype=np.float32)), "corpus", start).to(device)
            size = chunk.size(0)
            searcher.set_chunk(chunk)
            chunk_groups = group_t[start : start + size]
            duplicate = duplicate_t[start : start + size]
            duplicate_cols = duplicate.nonzero().flatten()
            modality = cap.modality[start : start + size] if cap is not None and cap.modality is not None else None
            for number, qs in enumerate(range(0, num_queries, query_chunk_size)):
                rows = min(query_chunk_size, num_queries - qs)
                mask = ChunkMask(chunk_groups, duplicate, duplicate_cols,
                                 torch.isin(chunk_groups, block_groups[number]).nonzero().flatten(),
                                 excluded_t[qs : qs + rows],
                                 cap.rows(qs, qs + rows, modality) if cap is not None else None)
                top_scores, top_index = searcher.top(Q[qs : qs + rows], depth, mask)
                merged_scores = torch.cat([vals[qs : qs + rows], top_scores], dim=1)
                merged_index = torch.cat([idx[qs : qs + rows], top_index + start], dim=1)
                best, order = merged_scores.topk(depth, dim=1)
                vals[qs : qs + rows] = best
                idx[qs : qs + rows] = merged_index.gather(1, order)
            bar.update(size)
    idx[~torch.isfinite(vals)] = -1
    return vals, idx


def normalized(matrix: torch.Tensor, role: str, offset: int) -> torch.Tensor:
    """L2-normalise the rows in place (the caller owns ``matrix``), refusing NaN / inf rows."""
    bad = ~torch.isfinite(matrix).all(dim=1)
    if bad.any():
        raise ValueError(f"The {role} embedding of item {offset + int(bad.nonzero()[0])} holds NaN or inf.")
    return matrix.div_(matrix.norm(dim=1, keepdim=True).clamp_min(1e-12))


def pair_scores(Q: torch.Tensor, store: Embeddings, pair_q: np.ndarray, pair_p: np.ndarray,
                block: int = 65536) -> torch.Tensor:
    """Cosine score of each (query ``pair_q[i]``, corpus item ``pair_p[i]``) pair (``Q`` normalised)."""
    scores = []
    for start in range(0, len(pair_q), block):
        rows = pair_p[start : start + block]
        p = torch.from_numpy(store.gather(rows))
        bad = ~torch.isfinite(p).all(dim=1)
        if bad.any():
            raise ValueError(f"The corpus embedding of item {int(rows[int(bad.nonzero()[0])])} holds NaN or inf.")
        p = normalized(p, "corpus", 0).to(Q.device)
        q = Q[torch.from_numpy(pair_q[start : start + block]).to(Q.device)]
        scores.append((q * p).sum(dim=1))
    return torch.cat(scores) if scores else torch.zeros(0, device=Q.device)
