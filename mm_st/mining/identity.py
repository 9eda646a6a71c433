"""Identity and exclusion: who is who among the queries, the corpus and the positives.

Items are identified by content hash when content is given (:func:`mm_st.inputs.content_key`: exact
text and image pixels), else by id (``query_ids`` / ``corpus_ids``), else by index. Corpus items
with one identity form a *group* represented by its first item (the others are collapsed). A query's
*excluded groups* are those of its positives, of the positives of identical queries, and of the
query itself: no negative is ever taken from them.

Example:
    >>> from mm_st.mining.identity import identify
    >>> ids = identify(queries=["q"], query_ids=None, corpus=["a", "b", "a", "q"], corpus_ids=None,
    ...                corpus_modalities=None, positives=[1], num_base=4, can_append=False,
    ...                show_progress_bar=False)
    >>> ids.group.tolist()  # item 2 repeats item 0
    [0, 1, 0, 3]
    >>> ids.excluded.tolist()  # query 0 excludes its positive (1) and itself (3)
    [[1, 3]]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from mm_st.inputs import content_key, normalize_input
from mm_st.io import MODALITY_IDS

__all__ = ["Identities", "Items", "content_identity", "identify", "modality_id"]


class Items:
    """The caller's corpus (any indexable sequence, or None), then the positives appended here."""

    def __init__(self, base: Sequence[Any] | None) -> None:
        self.base = base
        self.size = len(base) if base is not None else 0
        self.extra: list[Any] = []

    def __len__(self) -> int:
        return self.size + len(self.extra)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        return self.base[index] if index < self.size else self.extra[index - self.size]


@dataclass
class Identities:
    """Result of :func:`identify` (corpus indices count the corpus, then the appended positives).

    Attributes:
        items: corpus content (when ``has_content``).
        has_content: the corpus is content (not only ids / embeddings).
        identity: identity key -> index of the first corpus item with it.
        group: per corpus item, the index of its group's representative.
        modality: per corpus item, its modality id (-1 = unknown).
        query_keys: per query, its identity key (None = no identity but its index).
        own_positives: per query, the corpus indices of its own positives.
        all_positives: per query, its positives and those of identical queries.
        excluded: ``(queries, width)`` excluded group ids per query, padded with -1.
        appended: how many positives were appended to the corpus.
    """

    items: Items
    has_content: bool
    identity: dict[Any, int]
    group: np.ndarray
    modality: np.ndarray
    query_keys: list[Any]
    own_positives: list[list[int]]
    all_positives: list[list[int]]
    excluded: np.ndarray
    appended: int

    @property
    def num_corpus(self) -> int:
        return len(self.group)

    def group_keys(self) -> list[Any]:
        """Per corpus item, the content hash of its group (for the cache fingerprint)."""
        by_index = {index: key for key, index in self.identity.items()}
        return [by_index[rep][1] if rep in by_index else rep for rep in self.group.tolist()]


def identify(queries: Sequence[Any] | None, query_ids: list[str] | None, corpus: Sequence[Any] | None,
             corpus_ids: list[str] | None, corpus_modalities: Sequence[str] | None, positives: Sequence[Any],
             num_base: int, can_append: bool, show_progress_bar: bool,
             other_positives: Sequence[Any] | None = None) -> Identities:
    """Hash / identify the corpus, resolve the positives (appending content not in the corpus when
    ``can_append``), identify the queries, share positives between identical queries and list each
    query's excluded groups. With no corpus (``num_base=0``) the corpus is the distinct positives.
    ``other_positives``: per query, further relevant items (never negatives, but no rows of their own)."""
    has_content = corpus is not None or num_base == 0
    corpus_state = _Corpus(Items(corpus))
    _hash_corpus(corpus_state, corpus, corpus_ids, num_base, show_progress_bar)
    if corpus_modalities is not None:
        corpus_state.modality = [modality_id(v, f"corpus_modalities[{i}]") for i, v in enumerate(corpus_modalities)]
    elif corpus is None:
        corpus_state.modality = [-1] * num_base
    id_index = {cid: index for index, cid in enumerate(corpus_ids)} if corpus_ids is not None else None
    own = [_resolve_positives(q, entry, corpus_state, id_index, num_base, has_content, can_append)
           for q, entry in enumerate(positives)]
    relevant = [list(mine) for mine in own]
    for q, entry in enumerate(other_positives if other_positives is not None else []):
        extra = list(entry) if isinstance(entry, (list, tuple, np.ndarray)) else [entry]
        for value in extra:
            index = _resolve_one(q, value, corpus_state, id_index, num_base, has_content, can_append=False,
                                 where=f"other_positives[{q}] (query {q})")
            if index not in relevant[q]:
                relevant[q].append(index)
    num_corpus = len(corpus_state.items) if has_content else num_base
    keys = _query_keys(queries, query_ids, len(positives))
    shared = _shared_positives(keys, relevant)
    group = np.asarray(corpus_state.group, dtype=np.int64)
    modality = corpus_state.modality
    return Identities(
        items=corpus_state.items, has_content=has_content, identity=corpus_state.identity, group=group,
        modality=np.asarray(modality, dtype=np.int64) if modality else np.full(num_corpus, -1, np.int64),
        query_keys=keys, own_positives=own, all_positives=shared,
        excluded=_excluded_groups(keys, shared, group, corpus_state.identity), appended=num_corpus - num_base)


def content_identity(item: Any, where: str, index: int) -> tuple[int, int]:
    """(content hash, modality id) of one input; image files are read to hash their pixels."""
    if item is not None and not isinstance(item, (str, Image.Image, dict, list, os.PathLike)):
        raise TypeError(f"{where}: unsupported input type {type(item).__name__}; give a str, a PIL image, an "
                        "image path or a {'text', 'image'} dict.")
    try:
        normalized = normalize_input(item, index, load=True)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise type(exc)(f"{where}: {exc}") from exc
    return content_key(normalized)


def modality_id(value: Any, where: str) -> int:
    """The id of ``"text"``, ``"image"`` or ``"image+text"``; an error naming ``where`` otherwise."""
    if value not in MODALITY_IDS:
        raise ValueError(f"{where}: unknown modality {value!r}; use one of {', '.join(map(repr, MODALITY_IDS))}.")
    return MODALITY_IDS[value]


# ------------------------------------------------------------------------------------------------
# phases of identify()
# ------------------------------------------------------------------------------------------------


@dataclass
class _Corpus:
    items: Items
    identity: dict[Any, int] = field(default_factory=dict)  # identity -> group representative
    group: list[int] = field(default_factory=list)
    modality: list[int] = field(default_factory=list)


def _hash_corpus(state: _Corpus, corpus: Any, corpus_ids: list[str] | None, num_base: int,
                 show_progress_bar: bool) -> None:
    if corpus is not None:
        for index in tqdm(range(num_base), desc="Hashing corpus", unit="input", disable=not show_progress_bar):
            key, mod = content_identity(corpus[index], f"corpus[{index}]", index)
            state.group.append(state.identity.setdefault(("content", key), index))
            state.modality.append(mod)
    elif corpus_ids is not None:
        for index, cid in enumerate(corpus_ids):
            state.group.append(state.identity.setdefault(("id", cid), index))
    else:
        state.group.extend(range(num_base))


def _resolve_positives(q: int, entry: Any, state: _Corpus, id_index: dict[str, int] | None, num_base: int,
                       has_content: bool, can_append: bool) -> list[int]:
    entries = list(entry) if isinstance(entry, (list, tuple, np.ndarray)) else [entry]
    if not entries:
        raise ValueError(f"positives[{q}] (query {q}) is empty; every query needs a positive.")
    resolved: list[int] = []
    for value in entries:
        index = _resolve_one(q, value, state, id_index, num_base, has_content, can_append)
        if index not in resolved:
            resolved.append(index)
    return resolved


def _resolve_one(q: int, value: Any, state: _Corpus, id_index: dict[str, int] | None, num_base: int,
                 has_content: bool, can_append: bool, where: str = "") -> int:
    """A positive given as a corpus index, a corpus id or content -> its corpus index."""
    where = where or f"positives[{q}] (query {q})"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not 0 <= int(value) < num_base:
            raise IndexError(f"{where}: corpus index {int(value)} is out of range for a corpus of {num_base} items.")
        return int(value)
    if isinstance(value, str) and id_index is not None:
        if value not in id_index:
            raise KeyError(f"{where}: {value!r} is not in corpus_ids.")
        return id_index[value]
    if value is None:
        raise ValueError(f"{where} is None; give a corpus index, an id or the positive's content.")
    if not has_content:
        raise ValueError(f"{where} is given as content, but the corpus has no content (only ids or "
                         "embeddings); give the positive as a corpus index or id.")
    key, mod = content_identity(value, where, q)
    index = state.identity.get(("content", key))
    if index is None:
        if not can_append:
            raise ValueError(f"{where}: this positive's content is not in the corpus; add it to the corpus "
                             "(with its embedding), or pass model= without corpus_embeddings so it can "
                             "be appended and embedded.")
        index = len(state.items)
        state.items.extra.append(value)
        state.identity[("content", key)] = index
        state.group.append(index)
        state.modality.append(mod)
    return index


def _query_keys(queries: Any, query_ids: list[str] | None, num_queries: int) -> list[Any]:
    if queries is not None:
        return [("content", content_identity(queries[q], f"queries[{q}]", q)[0]) for q in range(num_queries)]
    if query_ids is not None:
        return [("id", qid) for qid in query_ids]
    return [None] * num_queries


def _shared_positives(keys: list[Any], own: list[list[int]]) -> list[list[int]]:
    """Queries with one identity share their positives (union, in first-seen order)."""
    merged: dict[Any, list[int]] = {}
    for key, positives in zip(keys, own):
        if key is not None:
            bucket = merged.setdefault(key, [])
            bucket.extend(p for p in positives if p not in bucket)
    return [merged[key] if key is not None else positives for key, positives in zip(keys, own)]


def _excluded_groups(keys: list[Any], all_positives: list[list[int]], group: np.ndarray,
                     identity: dict[Any, int]) -> np.ndarray:
    rows = []
    for key, positives in zip(keys, all_positives):
        groups = {int(group[p]) for p in positives}
        self_group = identity.get(key) if key is not None else None
        if self_group is not None:
            groups.add(self_group)
        rows.append(sorted(groups))
    excluded = np.full((len(rows), max(len(row) for row in rows)), -1, dtype=np.int64)
    for q, row in enumerate(rows):
        excluded[q, : len(row)] = row
    return excluded
