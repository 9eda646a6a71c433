"""Selection: which of each query's ranked candidates become its negatives.

Given the top ``depth`` candidates per query (from :mod:`mm_st.mining.search`; rank r = 1-based
position after the exclusions), :func:`select` marks the negatives of one of three strategies:

- ``"window"``: ranks ``first..last`` (MM-Embed's type-2 window 46-50; mmE5's single rank 70); with
  ``fallback="nearest"``, a query with too few candidates there takes the candidates ranked closest
  above the window instead (rank ``first - 1``, then ``first - 2``, ...: a small pool's lowest-ranked
  non-positive candidates);
- ``"top_k"``: ranks ``1..top_k``; with a margin, NV-Retriever's TopK-MarginPos;
- ``"modality_aware"`` (MM-Embed): type-1 = wrong-modality candidates within ``top_k`` that score
  above the positive, type-2 = target-modality candidates in the window.

Likely false negatives are removed BEFORE ranking, in the search (:class:`~mm_st.mining.search.ScoreCap`;
sentence-transformers' ``mine_hard_negatives`` semantics): a candidate scoring above
``positive - absolute_margin``, above ``positive - |positive| * relative_margin`` (NV-Retriever's
TopK-PercPos; 0.05 = above 95% of the positive's score) or above ``max_score`` is never a negative and
the ranks count the candidates that remain (modality-aware mode: the target-modality candidates only;
type-1 candidates are wrong-modality by definition). ``sampling="top"`` takes the highest-ranked
candidates (type-1 first, at most ``max_wrong_modality``), ``"random"`` draws them (``seed``). With
``fallback="nearest"`` a query short of negatives takes the remaining candidates nearest the window.

Example:
    >>> import torch
    >>> from mm_st.mining.selection import SelectionOptions, select
    >>> vals = torch.tensor([[0.9, 0.8, 0.7, 0.6]])  # one query, its candidates at ranks 1-4
    >>> idx = torch.tensor([[5, 3, 8, 1]])
    >>> options = SelectionOptions(strategy="window", ranks=(2, 4), num_negatives=2)
    >>> chosen, kinds = select(vals, idx, torch.tensor([0.95]), options, None, None)
    >>> idx[chosen].tolist()
    [3, 8]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mm_st.mining.identity import modality_id

__all__ = ["SAMPLINGS", "STRATEGIES", "SelectionOptions", "check_ranks", "select", "target_modality_bits"]

STRATEGIES = ("window", "top_k", "modality_aware")
SAMPLINGS = ("top", "random")
FALLBACKS = ("none", "nearest")


@dataclass(frozen=True)
class SelectionOptions:
    """The strategy options of :func:`mm_st.mining.mine_hard_negatives` (same names), checked on creation.

    ``ranks`` is stored as a ``(first, last)`` pair.
    """

    strategy: str = "window"
    ranks: Any = (46, 50)
    num_negatives: int = 1
    absolute_margin: float | None = None
    relative_margin: float | None = None
    max_score: float | None = None
    top_k: int = 50
    max_wrong_modality: int | None = None
    sampling: str = "top"
    seed: int = 0
    fallback: str = "none"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {self.strategy!r}; choose one of {', '.join(map(repr, STRATEGIES))}.")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"Unknown sampling {self.sampling!r}; choose 'top' or 'random'.")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"Unknown fallback {self.fallback!r}; choose 'none' or 'nearest'.")
        if self.fallback != "none" and self.strategy == "top_k":
            raise ValueError("fallback='nearest' applies to strategy='window' and 'modality_aware'.")
        object.__setattr__(self, "ranks", check_ranks(self.ranks))
        check_positive_ints(num_negatives=self.num_negatives, top_k=self.top_k)
        if self.max_wrong_modality is not None and (not isinstance(self.max_wrong_modality, int)
                                                    or self.max_wrong_modality < 0):
            raise ValueError(f"max_wrong_modality must be None or an int >= 0, got {self.max_wrong_modality!r}.")
        first, last = self.ranks
        n = self.num_negatives
        if self.strategy == "window" and n > last - first + 1:
            raise ValueError(f"num_negatives={n} does not fit in ranks ({first}, {last}): "
                             f"{last - first + 1} candidate(s) per query at most.")
        if self.strategy == "top_k" and n > self.top_k:
            raise ValueError(f"num_negatives={n} exceeds top_k={self.top_k}.")
        if self.strategy == "modality_aware" and n > self.depth:
            raise ValueError(f"num_negatives={n} exceeds the {self.depth} ranks considered "
                             f"(top_k={self.top_k}, ranks=({first}, {last})).")
        if self.strategy != "modality_aware" and self.max_wrong_modality is not None:
            raise ValueError("target_modality and max_wrong_modality only apply to strategy='modality_aware'.")
        for name in ("absolute_margin", "relative_margin", "max_score"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                                      or not np.isfinite(value)):
                raise ValueError(f"{name} must be a finite number or None, got {value!r}.")
        if self.relative_margin is not None and self.relative_margin < 0:
            raise ValueError(f"relative_margin must be >= 0 (0.05 = a negative scores at most 95% of the positive's "
                             f"score), got {self.relative_margin!r}.")

    @property
    def filters(self) -> bool:
        """Whether a margin or ``max_score`` removes likely false negatives."""
        return any(v is not None for v in (self.absolute_margin, self.relative_margin, self.max_score))

    def score_limit(self, ref: torch.Tensor) -> torch.Tensor:
        """Per query, the highest score a negative may have (``ref``: its lowest positive score; +inf = none)."""
        limit = torch.full_like(ref, float("inf"))
        if self.absolute_margin is not None:
            limit = torch.minimum(limit, ref - self.absolute_margin)
        if self.relative_margin is not None:
            limit = torch.minimum(limit, ref - ref.abs() * self.relative_margin)
        if self.max_score is not None:
            limit = limit.clamp_max(self.max_score)
        return limit

    @property
    def depth(self) -> int:
        """How many ranks the search must return per query."""
        first, last = self.ranks
        return {"window": last, "top_k": self.top_k}.get(self.strategy, max(self.top_k, last))


def check_ranks(ranks: Any) -> tuple[int, int]:
    """``k`` or ``(first, last)`` (1-based, inclusive) -> ``(first, last)``."""
    def is_int(x: Any) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if is_int(ranks):
        pair = (int(ranks), int(ranks))
    elif isinstance(ranks, (tuple, list)) and len(ranks) == 2 and all(is_int(r) for r in ranks):
        pair = (int(ranks[0]), int(ranks[1]))
    else:
        pair = None
    if pair is None or not 1 <= pair[0] <= pair[1]:
        raise ValueError("ranks must be one rank k >= 1 or a (first, last) pair with 1 <= first <= last "
                         f"(1-based, inclusive); got {ranks!r}.")
    return pair


def check_positive_ints(**values: Any) -> None:
    """Each value must be an int >= 1 (the error names it)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}.")


def target_modality_bits(target_modality: str | Sequence[str | None] | None, all_positives: list[list[int]],
                         corpus_modality: np.ndarray) -> np.ndarray:
    """Per query, a bit mask of its target modalities: ``target_modality`` (one, or one per query with
    None = derive), else the modalities of its positives."""
    num_queries = len(all_positives)
    per_query = target_modality if isinstance(target_modality, (list, tuple)) else [target_modality] * num_queries
    bits = np.zeros(num_queries, dtype=np.int64)
    for q in range(num_queries):
        if per_query[q] is not None:
            bits[q] = 1 << modality_id(per_query[q], f"target_modality for query {q}")
            continue
        for p in all_positives[q]:
            if corpus_modality[p] < 0:
                raise ValueError(f"strategy='modality_aware' needs the modality of query {q}'s positive "
                                 f"(corpus item {p}); give corpus content, corpus_modalities= or target_modality=.")
            bits[q] |= 1 << int(corpus_modality[p])
    if (corpus_modality < 0).any():
        missing = int(np.flatnonzero(corpus_modality < 0)[0])
        raise ValueError(f"strategy='modality_aware' needs every corpus item's modality (corpus item {missing} has "
                         "none); give corpus content or corpus_modalities=.")
    return bits


def select(vals: torch.Tensor, idx: torch.Tensor, ref: torch.Tensor, options: SelectionOptions,
           corpus_modality: torch.Tensor | None, target_bits: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean ``(queries, depth)`` mask of the chosen negatives and their kind (0 window / top_k,
    1 type-1, 2 type-2, 3 fallback).

    ``vals`` / ``idx``: ranked scores and corpus indices (-1 = none; likely false negatives already
    removed by the search); ``ref``: each query's lowest positive score; ``corpus_modality`` /
    ``target_bits``: modality-aware mode only.
    """
    num_queries, depth = vals.shape
    rank = torch.arange(1, depth + 1, device=vals.device).expand(num_queries, depth)
    valid = idx >= 0
    first, last = options.ranks
    in_window = (rank >= first) & (rank <= last)
    type1 = torch.zeros_like(valid)
    kinds = torch.zeros_like(idx)
    if options.strategy == "modality_aware":
        modality = corpus_modality[idx.clamp_min(0)]
        in_target = ((target_bits.unsqueeze(1) >> modality) & 1).bool()
        type1 = valid & ~in_target & (rank <= options.top_k) & (vals > ref.unsqueeze(1))
        considered = valid & in_target & in_window
        kinds = torch.where(type1, 1, torch.where(considered, 2, 0))
    else:
        considered = valid & (in_window if options.strategy == "window" else rank <= options.top_k)
    candidates = type1 | considered
    if options.fallback == "nearest":
        short = candidates.sum(dim=1, keepdim=True) < options.num_negatives
        fallback = valid & ~candidates & short
        kinds = torch.where(fallback, 3, kinds)
        return _take(candidates | fallback, type1, rank, options, fallback), kinds
    return _take(candidates, type1, rank, options), kinds


def _take(candidates: torch.Tensor, type1: torch.Tensor, rank: torch.Tensor, options: SelectionOptions,
          fallback: torch.Tensor | None = None) -> torch.Tensor:
    """Up to ``num_negatives`` of the candidates per query, by priority (top: type-1 first, then rank;
    random: a seeded draw), at most ``max_wrong_modality`` type-1; ``fallback`` candidates come last,
    the one ranked nearest the window first."""
    num_queries, depth = candidates.shape
    if options.sampling == "random":
        generator = torch.Generator().manual_seed(options.seed)
        priority = torch.rand(num_queries, depth, generator=generator).to(candidates.device)
    else:
        priority = -rank.to(torch.float32) + type1.to(torch.float32) * (depth + 1)  # type-1 first, then by rank
    if fallback is not None:  # below every window candidate; nearest the window first (above it before below it)
        first, last = options.ranks
        distance = torch.where(rank < first, first - rank, rank - last).to(torch.float32) + (rank > last).to(torch.float32) / 2
        priority = torch.where(fallback, -distance / (2 * depth + 2) - 2 * (depth + 1), priority)
    priority = priority.masked_fill(~candidates, float("-inf"))
    order = priority.argsort(dim=1, descending=True, stable=True)
    taken = candidates.gather(1, order)
    if options.max_wrong_modality is not None:
        wrong = type1.gather(1, order) & taken
        taken &= ~(wrong & (wrong.cumsum(dim=1) > options.max_wrong_modality))
    taken &= taken.cumsum(dim=1) <= options.num_negatives
    return torch.zeros_like(candidates).scatter_(1, order, taken)
