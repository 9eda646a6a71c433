"""Multimodal hard-negative mining: rank windows, top-k with a margin, and MM-Embed's modality-aware mode.

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
- a resumable on-disk cache of the corpus (and query) embeddings, one file per finished chunk.

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

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mm_st.inputs import MODALITY_IDS, content_key, normalize_input

logger = logging.getLogger(__name__)

__all__ = ["MiningReport", "mine_hard_negatives"]

STRATEGIES = ("window", "top_k", "modality_aware")
OUTPUT_FORMATS = ("n-tuple", "triplet")
SAMPLINGS = ("top", "random")
CACHE_FORMAT = "mm_st.mining.embeddings/1"


@dataclass
class MiningReport:
    """What :func:`mine_hard_negatives` did, row by row (returned with ``return_report=True``).

    Row fields are aligned with the returned dataset (one entry per row); corpus indices count the
    corpus as given, then the appended positives (see ``appended_positives``).

    Attributes:
        query_index: query of each row.
        positive_index: corpus index of each row's positive.
        positive_score: cosine score of (query, positive) of each row.
        negative_index: corpus indices of each row's negatives, hardest first.
        negative_rank: their ranks (1-based; see "Ranks" in :func:`mine_hard_negatives`).
        negative_score: their cosine scores.
        negative_type: ``"window"``, ``"top_k"``, ``"type1"`` (wrong modality, ranked above the positive)
            or ``"type2"`` (correct modality, in the rank window).
        found: per query, how many negatives were found (at most ``num_negatives``).
        dropped_queries: queries that gave no row (fewer than ``num_negatives`` negatives in ``"n-tuple"``
            format, none in ``"triplet"`` format).
        margin_removed: candidates inside the considered ranks that the margin removed.
        appended_positives: positives given as content that were not in the corpus and were appended to it.
    """

    query_index: list[int] = field(default_factory=list)
    positive_index: list[int] = field(default_factory=list)
    positive_score: list[float] = field(default_factory=list)
    negative_index: list[list[int]] = field(default_factory=list)
    negative_rank: list[list[int]] = field(default_factory=list)
    negative_score: list[list[float]] = field(default_factory=list)
    negative_type: list[list[str]] = field(default_factory=list)
    found: list[int] = field(default_factory=list)
    dropped_queries: list[int] = field(default_factory=list)
    margin_removed: int = 0
    appended_positives: int = 0


def mine_hard_negatives(
    model: Any = None,
    queries: Sequence[Any] | None = None,
    corpus: Sequence[Any] | None = None,
    positives: Sequence[Any] | None = None,
    *,
    query_ids: Sequence[str] | None = None,
    corpus_ids: Sequence[str] | None = None,
    query_embeddings: Any = None,
    corpus_embeddings: Any = None,
    corpus_modalities: Sequence[str] | None = None,
    strategy: Literal["window", "top_k", "modality_aware"] = "window",
    ranks: int | tuple[int, int] = (46, 50),
    num_negatives: int = 1,
    margin: float | None = None,
    target_modality: str | Sequence[str | None] | None = None,
    top_k: int = 50,
    max_wrong_modality: int | None = None,
    sampling: Literal["top", "random"] = "top",
    seed: int = 0,
    output_format: Literal["n-tuple", "triplet"] = "n-tuple",
    chunk_size: int = 16384,
    query_chunk_size: int = 1024,
    cache_dir: str | os.PathLike | None = None,
    use_faiss: bool = False,
    batch_size: int = 32,
    query_prompt: str | None = None,
    query_prompt_name: str | None = None,
    corpus_prompt: str | None = None,
    corpus_prompt_name: str | None = None,
    device: str | torch.device | None = None,
    show_progress_bar: bool = True,
    return_report: bool = False,
) -> Any:
    """Mine hard negatives for (query, positive) data over a multimodal corpus.

    Inputs (texts, PIL images, image paths, ``{"text", "image"}`` dicts with None for an absent
    modality) are embedded with ``model.encode_query`` / ``model.encode_document`` (normalised), or
    taken from ``query_embeddings`` / ``corpus_embeddings`` computed by any model (numpy or torch;
    then ``model`` may be None). Scores are cosine similarities.

    **Positives.** ``positives[i]`` gives query i's positive, or a list of them. Each entry is:

    - an ``int``: a corpus index (always; ids must therefore be ``str``);
    - a ``str`` when ``corpus_ids`` is given: a corpus id (an unknown id is an error);
    - anything else (a ``str`` without ``corpus_ids``, an image, a dict): content, identified by its
      content hash; every corpus item with that content is that positive. Content that is not in the
      corpus is appended to it (and embedded; this needs ``model`` and no ``corpus_embeddings``).
      With ``corpus=None`` the corpus is the distinct positives (as in sentence-transformers).

    Queries with identical content (or identical ``query_ids``) share their positives: no query gets
    a negative that is a positive of an identical query.

    **Identity and exclusions.** Items are identified by content hash when content is given, else by
    id (``query_ids`` / ``corpus_ids``; a corpus item whose id equals the query's id is the query), else
    by index. A negative is never a positive, never an item with the same identity as a positive, and
    never an item with the same identity as the query. Corpus items with the same identity are
    collapsed: only the first is ranked and returned.

    **Ranks.** For each query, candidates are sorted by score (descending) after removing the excluded
    items and the collapsed duplicates; rank r is the 1-based position in that list (the same count as
    sentence-transformers' ``range_min`` / ``range_max`` without a margin). The margin and the modality
    filters do not re-rank: they only remove candidates at the ranks considered. ``ranks=(46, 50)`` is
    inclusive; ``ranks=70`` means ``(70, 70)``.

    **Strategies.**

    - ``"window"``: candidates at ranks ``ranks`` (MM-Embed type-2 window 46-50; mmE5 single rank 70).
    - ``"top_k"``: candidates at ranks 1 to ``top_k``; with ``margin`` this is NV-Retriever's
      TopK-MarginPos.
    - ``"modality_aware"`` (MM-Embed): type-1 = candidates whose modality is NOT the target modality,
      ranked within ``top_k`` and scoring above the positive (the lowest-scoring positive if several);
      type-2 = candidates of the target modality at ranks ``ranks``. The target modality of a query is
      ``target_modality`` (one for all, or a list with None = derive) or, by default, the modality of its
      positive(s). ``"text"``, ``"image"`` and ``"image+text"`` are distinct modalities.

    ``margin`` removes candidates scoring above ``positive_score - margin`` (likely false negatives;
    the lowest positive score when a query has several). In ``"modality_aware"`` mode it applies to
    type-2 only (type-1 candidates are wrong-modality by definition and rank above the positive).

    **Selection and shortfall.** ``sampling="top"`` takes the ``num_negatives`` highest-ranked
    candidates (modality-aware: type-1 first, then type-2, at most ``max_wrong_modality`` type-1);
    ``"random"`` draws them uniformly (``seed``). Each row lists its negatives hardest first. A query
    with fewer candidates than ``num_negatives`` gives no row in ``"n-tuple"`` format (a column with
    missing values would break the losses): it is listed in the report's ``dropped_queries`` and
    counted in a logged warning. In ``"triplet"`` format it gives one row per negative found.

    **Output.** ``"n-tuple"``: columns ``anchor, positive, negative_1 .. negative_n``, one row per
    (query, positive). ``"triplet"``: ``anchor, positive, negative``, one row per negative. Columns hold
    ``{"text", "image"}`` structs; a side given only by ids (no content) holds the ids as strings.

    **Scale and cache.** Embeddings are computed in chunks of ``chunk_size`` inputs. With ``cache_dir``,
    each finished chunk is saved as ``<cache_dir>/<role>-<fingerprint>/chunk-NNNNNN.npy`` (written to a
    temporary file, then renamed) next to a ``manifest.json``; the fingerprint covers the model (class,
    module description, config, prompts, a strided sample of every weight), the prompt arguments, the
    inputs' content hashes in order and ``chunk_size``. A crashed run resumes from its last finished
    chunk; a rerun reuses every chunk; cached chunks are memory-mapped, not loaded. The search streams
    the corpus chunk by chunk and merges a running top-k per query (``torch.topk``), so its working
    memory is ``query_chunk_size x chunk_size`` scores plus ``queries x depth`` results. ``use_faiss``
    uses a FAISS flat inner-product index per chunk instead (requires ``faiss``; same results).

    Args:
        model: a SentenceTransformer (e.g. from :func:`mm_st.build_model`), or None with embeddings.
        queries: query inputs (or None with ``query_ids``).
        corpus: candidate inputs (or None with ``corpus_ids``, or None to use the positives).
        positives: per query, the positive(s) (see above). Required.
        query_ids, corpus_ids: str ids (corpus ids unique).
        query_embeddings, corpus_embeddings: precomputed ``(rows, dim)`` embeddings.
        corpus_modalities: ``"text"`` / ``"image"`` / ``"image+text"`` per corpus item; needed by the
            modality-aware mode when the corpus is given without content, and overrides the modality
            derived from the content otherwise.
        strategy: ``"window"``, ``"top_k"`` or ``"modality_aware"``.
        ranks: rank window ``(first, last)``, 1-based inclusive, or one rank.
        num_negatives: negatives per row (>= 1).
        margin: see above; None = no margin.
        target_modality: modality-aware mode only (see above).
        top_k: search depth of ``"top_k"`` and of type-1 negatives.
        max_wrong_modality: at most this many type-1 negatives per row (None = no cap).
        sampling: ``"top"`` or ``"random"``; ``seed`` seeds ``"random"``.
        output_format: ``"n-tuple"`` or ``"triplet"``.
        chunk_size: corpus (and query) inputs per encoding / cache / search chunk.
        query_chunk_size: queries scored at once in the search.
        cache_dir: folder for the embedding cache (None = no cache).
        use_faiss: search each chunk with FAISS (``faiss`` must be importable).
        batch_size: encoding batch size.
        query_prompt, query_prompt_name, corpus_prompt, corpus_prompt_name: passed to
            ``encode_query`` / ``encode_document``.
        device: device of the search (default CPU).
        show_progress_bar: tqdm bars for hashing, encoding and search.
        return_report: also return a :class:`MiningReport`.

    Returns:
        ``datasets.Dataset``, or ``(Dataset, MiningReport)`` with ``return_report=True``.
    """
    # ---------------------------------------------------------------- arguments
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}; choose one of {', '.join(map(repr, STRATEGIES))}.")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"Unknown output_format {output_format!r}; choose 'n-tuple' or 'triplet'.")
    if sampling not in SAMPLINGS:
        raise ValueError(f"Unknown sampling {sampling!r}; choose 'top' or 'random'.")
    first, last = _check_ranks(ranks)
    for name, value in (("num_negatives", num_negatives), ("top_k", top_k), ("chunk_size", chunk_size),
                        ("query_chunk_size", query_chunk_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    if max_wrong_modality is not None and (not isinstance(max_wrong_modality, int) or max_wrong_modality < 0):
        raise ValueError(f"max_wrong_modality must be None or an int >= 0, got {max_wrong_modality!r}.")
    if strategy == "window" and num_negatives > last - first + 1:
        raise ValueError(f"num_negatives={num_negatives} does not fit in ranks ({first}, {last}): "
                         f"{last - first + 1} candidate(s) per query at most.")
    if strategy == "top_k" and num_negatives > top_k:
        raise ValueError(f"num_negatives={num_negatives} exceeds top_k={top_k}.")
    if strategy == "modality_aware" and num_negatives > max(top_k, last):
        raise ValueError(f"num_negatives={num_negatives} exceeds the {max(top_k, last)} ranks considered "
                         f"(top_k={top_k}, ranks=({first}, {last})).")
    if strategy != "modality_aware" and (target_modality is not None or max_wrong_modality is not None):
        raise ValueError("target_modality and max_wrong_modality only apply to strategy='modality_aware'.")
    if margin is not None and not isinstance(margin, (int, float)):
        raise ValueError(f"margin must be a number or None, got {margin!r}.")
    if use_faiss:
        try:
            import faiss  # noqa: F401
        except ImportError as exc:
            raise ImportError("use_faiss=True needs the faiss package (pip install faiss-cpu).") from exc
    if positives is None:
        raise ValueError("positives is required: per query, its positive(s) as corpus indices, ids or content.")
    if model is None and query_embeddings is None:
        raise ValueError("Pass model= to encode the queries, or query_embeddings=.")
    if model is None and corpus_embeddings is None:
        raise ValueError("Pass model= to encode the corpus, or corpus_embeddings=.")

    if query_embeddings is not None:
        query_embeddings = _as_matrix(query_embeddings, "query_embeddings")
    if corpus_embeddings is not None:
        corpus_embeddings = _as_matrix(corpus_embeddings, "corpus_embeddings")
    if query_ids is not None:
        query_ids = _check_ids(query_ids, "query_ids", unique=False)
    if corpus_ids is not None:
        corpus_ids = _check_ids(corpus_ids, "corpus_ids", unique=True)

    num_queries = _common_length("queries", [
        ("positives", len(positives)), ("queries", _len(queries)), ("query_ids", _len(query_ids)),
        ("query_embeddings", _len(query_embeddings)),
        ("target_modality", len(target_modality) if _is_list(target_modality) else None),
    ])
    if num_queries == 0:
        raise ValueError("There are no queries (positives is empty).")
    if queries is None and query_ids is None:
        raise ValueError("Pass queries= (content) or query_ids= to fill the anchor column.")
    corpus_given = corpus is not None or corpus_ids is not None or corpus_embeddings is not None
    num_base = _common_length("corpus", [
        ("corpus", _len(corpus)), ("corpus_ids", _len(corpus_ids)),
        ("corpus_embeddings", _len(corpus_embeddings)), ("corpus_modalities", _len(corpus_modalities)),
    ]) or 0
    if corpus_given and num_base == 0:
        raise ValueError("The corpus is empty.")
    if corpus_given and corpus is None and corpus_ids is None:
        raise ValueError("Pass corpus= (content) or corpus_ids= to fill the positive and negative columns.")

    bar = dict(disable=not show_progress_bar)

    # ---------------------------------------------------------------- corpus identities and modalities
    has_corpus_content = corpus is not None or not corpus_given
    items = _Items(corpus)
    identity: dict[Any, int] = {}  # identity -> first corpus index (the group representative)
    group: list[int] = []  # per corpus item: index of its representative
    modality: list[int] = []
    if corpus is not None:
        for index in tqdm(range(num_base), desc="Hashing corpus", unit="input", **bar):
            key, mod = _content_identity(corpus[index], f"corpus[{index}]", index)
            group.append(identity.setdefault(("content", key), index))
            modality.append(mod)
    elif corpus_ids is not None:
        for index, cid in enumerate(corpus_ids):
            group.append(identity.setdefault(("id", cid), index))
    else:
        group.extend(range(num_base))
    if corpus_modalities is not None:
        modality = [_modality_id(value, f"corpus_modalities[{index}]") for index, value in enumerate(corpus_modalities)]
    elif corpus is None:
        modality = [-1] * num_base
    id_index = {cid: index for index, cid in enumerate(corpus_ids)} if corpus_ids is not None else {}

    # ---------------------------------------------------------------- positives
    can_append = has_corpus_content and model is not None and corpus_embeddings is None
    own_positives: list[list[int]] = []
    for q, entry in enumerate(positives):
        entries = list(entry) if isinstance(entry, (list, tuple, np.ndarray)) else [entry]
        if not entries:
            raise ValueError(f"positives[{q}] (query {q}) is empty; every query needs a positive.")
        resolved: list[int] = []
        for value in entries:
            where = f"positives[{q}] (query {q})"
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                index = int(value)
                if not 0 <= index < num_base:
                    raise IndexError(f"{where}: corpus index {index} is out of range for a corpus of {num_base} items.")
            elif isinstance(value, str) and corpus_ids is not None:
                if value not in id_index:
                    raise KeyError(f"{where}: {value!r} is not in corpus_ids.")
                index = id_index[value]
            else:
                if value is None:
                    raise ValueError(f"{where} is None; give a corpus index, an id or the positive's content.")
                if not has_corpus_content:
                    raise ValueError(f"{where} is given as content, but the corpus has no content (only ids or "
                                     "embeddings); give the positive as a corpus index or id.")
                key, mod = _content_identity(value, where, q)
                index = identity.get(("content", key))
                if index is None:
                    if not can_append:
                        raise ValueError(f"{where}: this positive's content is not in the corpus; add it to the corpus "
                                         "(with its embedding), or pass model= without corpus_embeddings so it can "
                                         "be appended and embedded.")
                    index = len(items)
                    items.extra.append(value)
                    identity[("content", key)] = index
                    group.append(index)
                    modality.append(mod)
            if index not in resolved:
                resolved.append(index)
        own_positives.append(resolved)
    num_corpus = len(items) if has_corpus_content else num_base
    appended = num_corpus - num_base

    # ---------------------------------------------------------------- query identities, shared positives
    query_identity: list[Any] = [None] * num_queries
    if queries is not None:
        for q in range(num_queries):
            key, _ = _content_identity(queries[q], f"queries[{q}]", q)
            query_identity[q] = ("content", key)
    elif query_ids is not None:
        query_identity = [("id", qid) for qid in query_ids]
    merged: dict[Any, list[int]] = {}
    for q in range(num_queries):
        if query_identity[q] is not None:
            bucket = merged.setdefault(query_identity[q], [])
            bucket.extend(p for p in own_positives[q] if p not in bucket)
    all_positives = [merged[query_identity[q]] if query_identity[q] is not None else own_positives[q]
                     for q in range(num_queries)]
    excluded_groups = []
    for q in range(num_queries):
        groups = {group[p] for p in all_positives[q]}
        self_group = identity.get(query_identity[q]) if query_identity[q] is not None else None
        if self_group is not None:
            groups.add(self_group)
        excluded_groups.append(sorted(groups))

    # ---------------------------------------------------------------- target modalities
    corpus_modality = np.asarray(modality, dtype=np.int64) if modality else np.full(num_corpus, -1, np.int64)
    target_bits = None
    if strategy == "modality_aware":
        target_bits = np.zeros(num_queries, dtype=np.int64)
        per_query = target_modality if _is_list(target_modality) else [target_modality] * num_queries
        for q in range(num_queries):
            if per_query[q] is not None:
                target_bits[q] = 1 << _modality_id(per_query[q], f"target_modality for query {q}")
            else:
                for p in all_positives[q]:
                    if corpus_modality[p] < 0:
                        raise ValueError(f"strategy='modality_aware' needs the modality of query {q}'s positive "
                                         f"(corpus item {p}); give corpus content, corpus_modalities= or target_modality=.")
                    target_bits[q] |= 1 << int(corpus_modality[p])
        if (corpus_modality < 0).any():
            missing = int(np.flatnonzero(corpus_modality < 0)[0])
            raise ValueError(f"strategy='modality_aware' needs every corpus item's modality (corpus item {missing} has "
                             "none); give corpus content or corpus_modalities=.")

    # ---------------------------------------------------------------- embeddings
    model_info = _model_fingerprint(model) if model is not None and cache_dir is not None else None
    if query_embeddings is None:
        if queries is None:
            raise ValueError("queries (content) are needed to encode them; pass queries= or query_embeddings=.")
        q_store = _encode_chunked(
            model, queries, "query", num_queries, [query_identity[q][1] for q in range(num_queries)],
            chunk_size, cache_dir, model_info, dict(prompt=query_prompt, prompt_name=query_prompt_name),
            batch_size, show_progress_bar)
        query_matrix = q_store.gather(np.arange(num_queries))
    else:
        query_matrix = query_embeddings
    if corpus_embeddings is None:
        if not has_corpus_content:
            raise ValueError("corpus content is needed to encode the corpus; pass corpus= or corpus_embeddings=.")
        store = _encode_chunked(
            model, items, "corpus", num_corpus, _group_keys(identity, group),
            chunk_size, cache_dir, model_info, dict(prompt=corpus_prompt, prompt_name=corpus_prompt_name),
            batch_size, show_progress_bar)
    else:
        store = _Embeddings.from_array(corpus_embeddings, chunk_size)
    if query_matrix.shape[1] != store.dim:
        raise ValueError(f"Embedding dimensions differ: query embeddings have dimension {query_matrix.shape[1]} "
                         f"but corpus embeddings have dimension {store.dim}.")

    device = torch.device(device) if device is not None else torch.device("cpu")
    Q = _normalized(torch.tensor(np.asarray(query_matrix, dtype=np.float32)), "query", 0).to(device)

    # positive scores: per (query, positive) pair; the reference score of a query is its lowest positive score
    pair_q = np.array([q for q in range(num_queries) for _ in all_positives[q]], dtype=np.int64)
    pair_p = np.array([p for q in range(num_queries) for p in all_positives[q]], dtype=np.int64)
    pair_score = _pair_scores(Q, store, pair_q, pair_p, device)
    pair_lookup = {(int(q), int(p)): float(s) for q, p, s in zip(pair_q, pair_p, pair_score.tolist())}
    ref = torch.full((num_queries,), float("inf"), device=device)
    ref.scatter_reduce_(0, torch.from_numpy(pair_q).to(device), pair_score, reduce="amin")

    # ---------------------------------------------------------------- search
    if strategy == "window":
        depth = last
    elif strategy == "top_k":
        depth = top_k
    else:
        depth = max(top_k, last)
    group_arr = np.asarray(group, dtype=np.int64)
    is_duplicate = group_arr != np.arange(num_corpus)
    width = max(len(g) for g in excluded_groups)
    excluded = np.full((num_queries, width), -1, dtype=np.int64)
    for q, groups in enumerate(excluded_groups):
        excluded[q, : len(groups)] = groups
    vals, idx = _search(Q, store, depth, group_arr, is_duplicate, excluded, query_chunk_size, chunk_size,
                        use_faiss, device, show_progress_bar)

    # ---------------------------------------------------------------- selection
    chosen, kinds, margin_removed = _select(
        vals, idx, ref, strategy, first, last, top_k, margin, num_negatives, sampling, seed,
        max_wrong_modality, torch.from_numpy(corpus_modality).to(device),
        torch.from_numpy(target_bits).to(device) if target_bits is not None else None)

    # ---------------------------------------------------------------- output
    found = chosen.sum(dim=1).cpu().tolist()
    rows, cols = (t.cpu().numpy() for t in chosen.nonzero(as_tuple=True))  # row-major: hardest first per row
    splits = np.cumsum(found)[:-1]
    vals_np, idx_np, kinds_np = vals.cpu().numpy(), idx.cpu().numpy(), kinds.cpu().numpy()
    per_query_cols = np.split(cols, splits)
    type_names = {0: "window" if strategy == "window" else "top_k", 1: "type1", 2: "type2"}

    report = MiningReport(found=found, margin_removed=margin_removed, appended_positives=appended)
    for q in range(num_queries):
        count = found[q]
        if count == 0 or (output_format == "n-tuple" and count < num_negatives):
            report.dropped_queries.append(q)
            continue
        c = per_query_cols[q]
        negs = idx_np[q, c].tolist()
        negative_ranks = (c + 1).tolist()
        scores = vals_np[q, c].tolist()
        types = [type_names[int(k)] for k in kinds_np[q, c]]
        groups = [(negs, negative_ranks, scores, types)] if output_format == "n-tuple" else [
            ([n], [r], [s], [t]) for n, r, s, t in zip(negs, negative_ranks, scores, types)]
        for p in own_positives[q]:
            for g_negs, g_ranks, g_scores, g_types in groups:
                report.query_index.append(q)
                report.positive_index.append(p)
                report.positive_score.append(pair_lookup[(q, p)])
                report.negative_index.append(g_negs)
                report.negative_rank.append(g_ranks)
                report.negative_score.append(g_scores)
                report.negative_type.append(g_types)

    dataset = _build_dataset(report, output_format, num_negatives, queries, query_ids,
                             items if has_corpus_content else None, corpus_ids)
    _log_summary(report, num_queries, num_negatives, output_format, len(dataset))
    return (dataset, report) if return_report else dataset


# ------------------------------------------------------------------------------------------------
# argument helpers
# ------------------------------------------------------------------------------------------------


def _check_ranks(ranks: Any) -> tuple[int, int]:
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


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _len(value: Any) -> int | None:
    return None if value is None else len(value)


def _common_length(side: str, named: list[tuple[str, int | None]]) -> int | None:
    given = [(name, length) for name, length in named if length is not None]
    if not given:
        return None
    first_name, first = given[0]
    for name, length in given[1:]:
        if length != first:
            raise ValueError(f"{name} has {length} rows but {first_name} has {first}; both describe the {side}.")
    return first


def _check_ids(ids: Sequence[Any], name: str, unique: bool) -> list[str]:
    ids = list(ids)
    seen: dict[str, int] = {}
    for index, value in enumerate(ids):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{index}] is {type(value).__name__}; ids must be str "
                            "(an int in positives is always a corpus index).")
        if unique and value in seen:
            raise ValueError(f"{name}[{index}] repeats the id {value!r} of {name}[{seen[value]}]; ids must be unique.")
        seen.setdefault(value, index)
    return ids


def _as_matrix(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        array = value.detach().to("cpu", torch.float32).numpy()
    else:
        array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, dim), got shape {tuple(array.shape)}.")
    return array


def _modality_id(value: Any, where: str) -> int:
    if value not in MODALITY_IDS:
        raise ValueError(f"{where}: unknown modality {value!r}; use one of {', '.join(map(repr, MODALITY_IDS))}.")
    return MODALITY_IDS[value]


def _content_identity(item: Any, where: str, index: int) -> tuple[int, int]:
    """(content hash, modality id) of one input; image files are read to hash their pixels."""
    if item is not None and not isinstance(item, (str, Image.Image, dict, list, os.PathLike)):
        raise TypeError(f"{where}: unsupported input type {type(item).__name__}; give a str, a PIL image, an "
                        "image path or a {'text', 'image'} dict.")
    try:
        normalized = normalize_input(item, index, load=True)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise type(exc)(f"{where}: {exc}") from exc
    return content_key(normalized)


def _group_keys(identity: dict[Any, int], group: list[int]) -> list[Any]:
    """Per corpus item, the identity of its group (its content hash), for the cache fingerprint."""
    by_index = {index: key for key, index in identity.items()}
    return [by_index[rep][1] if rep in by_index else rep for rep in group]


class _Items:
    """The caller's corpus (any indexable sequence), then the positives appended here."""

    def __init__(self, base: Sequence[Any] | None) -> None:
        self.base = base
        self.size = len(base) if base is not None else 0
        self.extra: list[Any] = []

    def __len__(self) -> int:
        return self.size + len(self.extra)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        return self.base[index] if index < self.size else self.extra[index - self.size]


# ------------------------------------------------------------------------------------------------
# embeddings: chunked store, encoding with a resumable cache
# ------------------------------------------------------------------------------------------------


class _Embeddings:
    """Row blocks (in-memory arrays or memory-mapped cache files) read chunk by chunk."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(part) for part in parts])
        self.dim = int(parts[0].shape[1]) if parts else 0

    @classmethod
    def from_array(cls, array: np.ndarray, chunk_size: int) -> _Embeddings:
        return cls([array[start : start + chunk_size] for start in range(0, len(array), chunk_size)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def chunks(self):
        for start, part in zip(self.offsets[:-1], self.parts):
            yield int(start), part

    def gather(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), dtype=np.float32)
        part_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for part in np.unique(part_of):
            mask = part_of == part
            out[mask] = self.parts[part][indices[mask] - self.offsets[part]]
        return out


def _model_fingerprint(model: Any) -> dict[str, Any]:
    """What identifies a model's embeddings: class, module description, config, prompts, weight sample."""
    info: dict[str, Any] = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    info["description"] = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(model))
    info["prompts"] = getattr(model, "prompts", None)
    info["default_prompt_name"] = getattr(model, "default_prompt_name", None)
    configs, seen = [], set()
    if isinstance(model, torch.nn.Module):
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is not None and hasattr(config, "to_json_string") and id(config) not in seen:
                seen.add(id(config))
                configs.append(config.to_json_string(use_diff=False))
        digest = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].to("cpu", torch.float64).numpy()
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode() + sample.tobytes())
        info["weights_sample_sha256"] = digest.hexdigest()
    info["configs_sha256"] = hashlib.sha256("\n".join(configs).encode()).hexdigest()
    return info


def _encode_chunked(model: Any, items: Any, role: str, num: int, keys: list[Any], chunk_size: int,
                    cache_dir: Any, model_info: dict | None, prompts: dict, batch_size: int,
                    show_progress_bar: bool) -> _Embeddings:
    """Encode ``items`` chunk by chunk (normalised); with ``cache_dir``, save / reuse each finished chunk."""
    encode = getattr(model, "encode_query" if role == "query" else "encode_document", None) or model.encode
    store = None
    if cache_dir is not None:
        content = hashlib.sha256()
        for key in keys:
            content.update(f"{key};".encode())
        fingerprint = {"format": CACHE_FORMAT, "role": role, "model": model_info, "prompts": prompts,
                       "normalized": True, "num_inputs": num, "chunk_size": chunk_size,
                       "content_sha256": content.hexdigest()}
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
        store = Path(cache_dir) / f"{role}-{digest[:24]}"
        store.mkdir(parents=True, exist_ok=True)
        manifest = store / "manifest.json"
        if manifest.exists():
            existing = json.loads(manifest.read_text())
            if existing.get("fingerprint_sha256") != digest:
                raise ValueError(f"Cache folder {store} holds embeddings of other inputs or another model; remove it.")
        else:
            _atomic_write(manifest, json.dumps({**fingerprint, "fingerprint_sha256": digest,
                                                "num_chunks": -(-num // chunk_size)}, indent=1, default=str).encode())
    parts, reused = [], 0
    dim = None
    with tqdm(total=num, desc=f"Encoding {role}", unit="input", disable=not show_progress_bar) as bar:
        for number, start in enumerate(range(0, num, chunk_size)):
            end = min(start + chunk_size, num)
            path = store / f"chunk-{number:06d}.npy" if store is not None else None
            array = _load_chunk(path, end - start, dim) if path is not None else None
            if array is None:
                batch = [items[index] for index in range(start, end)]
                array = np.asarray(encode(batch, batch_size=batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=False, **prompts), dtype=np.float32)
                if array.ndim != 2 or array.shape[0] != end - start:
                    raise ValueError(f"The model returned embeddings of shape {array.shape} for {end - start} {role} inputs.")
                if path is not None:
                    buffer = _npy_bytes(array)
                    _atomic_write(path, buffer)
                    array = np.load(path, mmap_mode="r")
            else:
                reused += 1
            dim = array.shape[1]
            parts.append(array)
            bar.update(end - start)
    if store is not None:
        logger.info("%s embeddings: %d chunk(s) reused from %s, %d encoded.", role, reused, store, len(parts) - reused)
    return _Embeddings(parts)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32))
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _load_chunk(path: Path, rows: int, dim: int | None) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except Exception as exc:  # a damaged file is re-encoded
        logger.warning("Re-encoding unreadable cache chunk %s (%s).", path, exc)
        return None
    if array.ndim != 2 or array.shape[0] != rows or array.dtype != np.float32 or (dim is not None and array.shape[1] != dim):
        logger.warning("Re-encoding cache chunk %s: shape %s, expected %d rows.", path, array.shape, rows)
        return None
    return array


# ------------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------------


def _normalized(matrix: torch.Tensor, role: str, offset: int) -> torch.Tensor:
    """L2-normalise the rows in place (the caller owns ``matrix``), refusing NaN / inf rows."""
    bad = ~torch.isfinite(matrix).all(dim=1)
    if bad.any():
        raise ValueError(f"The {role} embedding of item {offset + int(bad.nonzero()[0])} holds NaN or inf.")
    return matrix.div_(matrix.norm(dim=1, keepdim=True).clamp_min(1e-12))


def _pair_scores(Q: torch.Tensor, store: _Embeddings, pair_q: np.ndarray, pair_p: np.ndarray,
                 device: torch.device, block: int = 65536) -> torch.Tensor:
    scores = []
    for start in range(0, len(pair_q), block):
        rows = pair_p[start : start + block]
        p = torch.from_numpy(store.gather(rows))
        bad = ~torch.isfinite(p).all(dim=1)
        if bad.any():
            raise ValueError(f"The corpus embedding of item {int(rows[int(bad.nonzero()[0])])} holds NaN or inf.")
        p = _normalized(p, "corpus", 0).to(device)
        q = Q[torch.from_numpy(pair_q[start : start + block]).to(device)]
        scores.append((q * p).sum(dim=1))
    return torch.cat(scores) if scores else torch.zeros(0, device=device)


def _search(Q: torch.Tensor, store: _Embeddings, depth: int, group: np.ndarray, is_duplicate: np.ndarray,
            excluded: np.ndarray, query_chunk_size: int, chunk_size: int, use_faiss: bool,
            device: torch.device, show_progress_bar: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``depth`` (scores, corpus indices) per query, excluded groups and duplicates removed.

    Outer loop over corpus chunks (each read and normalised once), inner loop over query blocks; the
    running top-k is merged with ``torch.topk``. Missing entries have score ``-inf`` and index -1.
    """
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
    buffer = None if use_faiss else torch.empty(min(query_chunk_size, num_queries) * min(chunk_size, len(store)),
                                                device=device)
    if use_faiss:
        import faiss
    with tqdm(total=len(store), desc="Searching", unit="candidate", disable=not show_progress_bar) as bar:
        for start, part in store.chunks():
            chunk = _normalized(torch.tensor(np.asarray(part, dtype=np.float32)), "corpus", start).to(device)
            size = chunk.size(0)
            chunk_groups = group_t[start : start + size]
            duplicate_cols = duplicate_t[start : start + size].nonzero().flatten()
            if use_faiss:
                index = faiss.IndexFlatIP(chunk.size(1))
                index.add(np.ascontiguousarray(chunk.cpu().numpy()))
                chunk_duplicate = duplicate_t[start : start + size]
            for number, qs in enumerate(range(0, num_queries, query_chunk_size)):
                queries = Q[qs : qs + query_chunk_size]
                rows = queries.size(0)
                block_excluded = excluded_t[qs : qs + rows]
                hit_cols = torch.isin(chunk_groups, block_groups[number]).nonzero().flatten()
                if use_faiss:
                    k = min(size, depth + duplicate_cols.numel() + hit_cols.numel())
                    found_scores, found_index = index.search(np.ascontiguousarray(queries.cpu().numpy()), k)
                    scores = torch.from_numpy(found_scores).to(device)
                    local = torch.from_numpy(found_index).to(device=device, dtype=torch.long)
                    safe = local.clamp_min(0)
                    drop = (local < 0) | chunk_duplicate[safe]
                    if hit_cols.numel():
                        drop |= (chunk_groups[safe].unsqueeze(-1) == block_excluded.unsqueeze(1)).any(-1)
                    scores = scores.masked_fill(drop, float("-inf"))
                    top_scores, order = scores.topk(min(depth, k), dim=1)
                    top_index = local.gather(1, order) + start
                else:
                    scores = torch.mm(queries, chunk.T, out=buffer[: rows * size].view(rows, size))
                    if duplicate_cols.numel():
                        scores[:, duplicate_cols] = float("-inf")
                    if hit_cols.numel():
                        hit = (chunk_groups[hit_cols].view(1, -1, 1) == block_excluded.unsqueeze(1)).any(-1)
                        sub = scores[:, hit_cols]
                        scores[:, hit_cols] = sub.masked_fill(hit, float("-inf"))
                    top_scores, top_index = scores.topk(min(depth, size), dim=1)
                    top_index = top_index + start
                merged_scores = torch.cat([vals[qs : qs + rows], top_scores], dim=1)
                merged_index = torch.cat([idx[qs : qs + rows], top_index], dim=1)
                best, order = merged_scores.topk(depth, dim=1)
                vals[qs : qs + rows] = best
                idx[qs : qs + rows] = merged_index.gather(1, order)
            bar.update(size)
    idx[~torch.isfinite(vals)] = -1
    return vals, idx


def _select(vals: torch.Tensor, idx: torch.Tensor, ref: torch.Tensor, strategy: str, first: int, last: int,
            top_k: int, margin: float | None, num_negatives: int, sampling: str, seed: int,
            max_wrong_modality: int | None, corpus_modality: torch.Tensor,
            target_bits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Boolean (queries x depth) mask of the chosen negatives, their kind (0 window/top_k, 1 type-1,
    2 type-2) and the number of candidates the margin removed."""
    num_queries, depth = vals.shape
    rank = torch.arange(1, depth + 1, device=vals.device).expand(num_queries, depth)
    valid = idx >= 0
    in_window = (rank >= first) & (rank <= last)
    kinds = torch.zeros_like(idx)
    too_close = (vals > (ref - margin).unsqueeze(1)) if margin is not None else torch.zeros_like(valid)
    type1 = torch.zeros_like(valid)
    if strategy == "modality_aware":
        modality = corpus_modality[idx.clamp_min(0)]
        in_target = ((target_bits.unsqueeze(1) >> modality) & 1).bool()
        type1 = valid & ~in_target & (rank <= top_k) & (vals > ref.unsqueeze(1))
        considered = valid & in_target & in_window
        removed = considered & too_close
        candidates = type1 | (considered & ~removed)
        kinds = torch.where(type1, 1, torch.where(considered, 2, 0))
    else:
        considered = valid & (in_window if strategy == "window" else rank <= top_k)
        removed = considered & too_close
        candidates = considered & ~removed
    if sampling == "random":
        generator = torch.Generator().manual_seed(seed)
        priority = torch.rand(num_queries, depth, generator=generator).to(vals.device)
    else:
        priority = -rank.to(torch.float32) + type1.to(torch.float32) * (depth + 1)  # type-1 first, then by rank
    priority = priority.masked_fill(~candidates, float("-inf"))
    order = priority.argsort(dim=1, descending=True, stable=True)
    taken = candidates.gather(1, order)
    if max_wrong_modality is not None:
        wrong = type1.gather(1, order) & taken
        taken &= ~(wrong & (wrong.cumsum(dim=1) > max_wrong_modality))
    taken &= taken.cumsum(dim=1) <= num_negatives
    chosen = torch.zeros_like(candidates).scatter_(1, order, taken)
    return chosen, kinds, int(removed.sum())


# ------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------


def _to_struct(item: Any, where: str) -> dict[str, Any]:
    if isinstance(item, str):
        return {"text": item, "image": None}
    if isinstance(item, Image.Image):
        return {"text": None, "image": item}
    if isinstance(item, os.PathLike):
        return {"text": None, "image": os.fspath(item)}
    if isinstance(item, dict) and set(item) <= {"text", "image"}:
        image = item.get("image")
        return {"text": item.get("text"), "image": os.fspath(image) if isinstance(image, os.PathLike) else image}
    raise TypeError(f"{where}: {type(item).__name__} inputs (e.g. chat messages) cannot be stored in the "
                    "{text, image} column; give str, images or {'text', 'image'} dicts.")


def _build_dataset(report: MiningReport, output_format: str, num_negatives: int, queries: Any,
                   query_ids: Any, corpus: Any, corpus_ids: Any):
    import datasets

    from mm_st.data.columns import INPUT_FEATURE

    def query_value(q: int) -> Any:
        return _to_struct(queries[q], f"queries[{q}]") if queries is not None else query_ids[q]

    def corpus_value(j: int) -> Any:
        return _to_struct(corpus[j], f"corpus[{j}]") if corpus is not None else corpus_ids[j]

    query_feature = INPUT_FEATURE if queries is not None else datasets.Value("string")
    corpus_feature = INPUT_FEATURE if corpus is not None else datasets.Value("string")
    negative_columns = [f"negative_{i}" for i in range(1, num_negatives + 1)] if output_format == "n-tuple" else ["negative"]
    data: dict[str, list] = {"anchor": [], "positive": [], **{name: [] for name in negative_columns}}
    for q, p, negs in zip(report.query_index, report.positive_index, report.negative_index):
        data["anchor"].append(query_value(q))
        data["positive"].append(corpus_value(p))
        for name, j in zip(negative_columns, negs):
            data[name].append(corpus_value(j))
    features = datasets.Features({"anchor": query_feature, "positive": corpus_feature,
                                  **{name: corpus_feature for name in negative_columns}})
    return datasets.Dataset.from_dict(data, features=features)


def _log_summary(report: MiningReport, num_queries: int, num_negatives: int, output_format: str, rows: int) -> None:
    logger.info("Mined %d rows for %d queries (%s).", rows, num_queries, output_format)
    if report.margin_removed:
        logger.info("The margin removed %d candidate(s).", report.margin_removed)
    dropped = len(report.dropped_queries)
    if dropped:
        need = f"fewer than {num_negatives} negatives" if output_format == "n-tuple" else "no negative"
        logger.warning("%d of %d queries (%.2f%%) found %s and gave no row; widen ranks / top_k, lower "
                       "num_negatives or margin, or use output_format='triplet'.",
                       dropped, num_queries, 100 * dropped / num_queries, need)
