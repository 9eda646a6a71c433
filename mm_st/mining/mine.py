"""The entry point :func:`mine_hard_negatives`: checks the arguments, then runs the phases of
:mod:`mm_st.mining` in order (identity, embeddings, search, selection, output)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from mm_st.mining.identity import Identities, identify
from mm_st.mining.output import OUTPUT_FORMATS, build_dataset, log_summary, make_report
from mm_st.mining.search import ScoreCap, make_search, normalized, pair_scores, require_faiss, search
from mm_st.mining.selection import SelectionOptions, check_positive_ints, select, target_modality_bits
from mm_st.mining.store import Embeddings, as_matrix, encode_chunked, model_fingerprint

__all__ = ["mine_hard_negatives"]


def mine_hard_negatives(
    model: Any = None,
    queries: Sequence[Any] | None = None,
    corpus: Sequence[Any] | None = None,
    positives: Sequence[Any] | None = None,
    *,
    other_positives: Sequence[Any] | None = None,
    query_ids: Sequence[str] | None = None,
    corpus_ids: Sequence[str] | None = None,
    query_embeddings: Any = None,
    corpus_embeddings: Any = None,
    corpus_modalities: Sequence[str] | None = None,
    strategy: Literal["window", "top_k", "modality_aware"] = "window",
    ranks: int | tuple[int, int] = (46, 50),
    num_negatives: int = 1,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    max_score: float | None = None,
    margin: float | None = None,
    target_modality: str | Sequence[str | None] | None = None,
    top_k: int = 50,
    max_wrong_modality: int | None = None,
    sampling: Literal["top", "random"] = "top",
    seed: int = 0,
    fallback: Literal["none", "nearest"] = "none",
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
    a negative that is a positive of an identical query. ``other_positives[i]`` (same forms, content
    must be in the corpus) lists further relevant items of query i (e.g. the rest of M-BEIR's
    ``pos_cand_list``): never its negatives, counted in its lowest positive score, but no rows of their own.

    **Identity and exclusions.** Items are identified by content hash when content is given, else by
    id (``query_ids`` / ``corpus_ids``; a corpus item whose id equals the query's id is the query), else
    by index. A negative is never a positive, never an item with the same identity as a positive, and
    never an item with the same identity as the query. Corpus items with the same identity are
    collapsed: only the first is ranked and returned.

    **Ranks.** For each query, candidates are sorted by score (descending) after removing the excluded
    items, the collapsed duplicates and the likely false negatives (below); rank r is the 1-based
    position in that list (the same count as sentence-transformers' ``range_min`` / ``range_max``).
    The modality filter does not re-rank: it only picks among the candidates at the ranks considered.
    ``ranks=(46, 50)`` is inclusive; ``ranks=70`` means ``(70, 70)``.

    **Likely false negatives** (sentence-transformers' names and semantics; NV-Retriever, arXiv
    2407.15831): a candidate scoring above ``positive - absolute_margin`` (TopK-MarginPos), above
    ``positive - |positive| * relative_margin`` (TopK-PercPos; ``0.05`` = above 95% of the positive's
    score, the paper's best setting) or above ``max_score`` is removed before ranking ("positive" = the
    query's lowest positive score when it has several). In ``"modality_aware"`` mode this applies to
    candidates of the target modality only (type-1 candidates are wrong-modality by definition and rank
    above the positive). The report counts the removed candidates per query (``filtered``).
    ``margin`` is the deprecated name of ``absolute_margin``.

    **Strategies.**

    - ``"window"``: candidates at ranks ``ranks`` (MM-Embed type-2 window 46-50; mmE5 single rank 70).
      With ``fallback="nearest"``, a query with fewer than ``num_negatives`` candidates in the window
      (a pool smaller than the window's ranks) takes the candidates ranked closest above it instead,
      nearest first (so ``ranks=70`` on a pool of 10 gives rank 9); the report lists those queries in
      ``fallback_queries`` and their negatives have type ``"fallback"``.
    - ``"top_k"``: candidates at ranks 1 to ``top_k``; with ``absolute_margin`` this is NV-Retriever's
      TopK-MarginPos, with ``relative_margin`` its TopK-PercPos.
    - ``"modality_aware"`` (MM-Embed): type-1 = candidates whose modality is NOT the target modality,
      ranked within ``top_k`` and scoring above the positive (the lowest-scoring positive if several);
      type-2 = candidates of the target modality at ranks ``ranks``. The target modality of a query is
      ``target_modality`` (one for all, or a list with None = derive) or, by default, the modality of its
      positive(s). ``"text"``, ``"image"`` and ``"image+text"`` are distinct modalities. With
      ``fallback="nearest"`` a query short of type-1 / type-2 candidates takes the other ranked
      candidates nearest the window (above it first): right-modality ones that passed the filter,
      or wrong-modality ones scoring below the positive (type ``"fallback"``).

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
    chunk; a rerun reuses every chunk; cached chunks are memory-mapped, not loaded. The manifest records
    each chunk's sha256: a chunk whose file does not match it (or has none recorded, as in caches
    written before checksums) is re-encoded, with a warning naming it. The search streams
    the corpus chunk by chunk and merges a running top-k per query (``torch.topk``), so its working
    memory is ``query_chunk_size x chunk_size`` scores plus ``queries x depth`` results. ``use_faiss``
    uses a FAISS flat inner-product index per chunk instead (requires ``faiss``; same results).

    Args:
        model: a SentenceTransformer (e.g. from :func:`mm_st.build_model`), or None with embeddings.
        queries: query inputs (or None with ``query_ids``).
        corpus: candidate inputs (or None with ``corpus_ids``, or None to use the positives).
        positives: per query, the positive(s) (see above). Required.
        other_positives: per query, further relevant items that are never negatives (see above).
        query_ids, corpus_ids: str ids (corpus ids unique).
        query_embeddings, corpus_embeddings: precomputed ``(rows, dim)`` embeddings.
        corpus_modalities: ``"text"`` / ``"image"`` / ``"image+text"`` per corpus item; needed by the
            modality-aware mode when the corpus is given without content, and overrides the modality
            derived from the content otherwise.
        strategy: ``"window"``, ``"top_k"`` or ``"modality_aware"``.
        ranks: rank window ``(first, last)``, 1-based inclusive, or one rank.
        num_negatives: negatives per row (>= 1).
        absolute_margin, relative_margin, max_score: see "Likely false negatives"; None = off.
        margin: deprecated name of ``absolute_margin``.
        target_modality: modality-aware mode only (see above).
        top_k: search depth of ``"top_k"`` and of type-1 negatives.
        max_wrong_modality: at most this many type-1 negatives per row (None = no cap).
        sampling: ``"top"`` or ``"random"``; ``seed`` seeds ``"random"``.
        fallback: ``"none"`` or ``"nearest"`` (``"window"`` and ``"modality_aware"``; see above).
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
        return_report: also return a :class:`~mm_st.mining.output.MiningReport`.

    Returns:
        ``datasets.Dataset``, or ``(Dataset, MiningReport)`` with ``return_report=True``.
    """
    absolute_margin = _deprecated_margin(margin, absolute_margin)
    options = SelectionOptions(strategy=strategy, ranks=ranks, num_negatives=num_negatives,
                               absolute_margin=absolute_margin, relative_margin=relative_margin, max_score=max_score,
                               top_k=top_k, max_wrong_modality=max_wrong_modality, sampling=sampling, seed=seed,
                               fallback=fallback)
    _check_arguments(model, positives, query_embeddings, corpus_embeddings, strategy, target_modality,
                     output_format, use_faiss, chunk_size=chunk_size, query_chunk_size=query_chunk_size,
                     batch_size=batch_size)
    query_embeddings = as_matrix(query_embeddings, "query_embeddings") if query_embeddings is not None else None
    corpus_embeddings = as_matrix(corpus_embeddings, "corpus_embeddings") if corpus_embeddings is not None else None
    query_ids = _check_ids(query_ids, "query_ids", unique=False) if query_ids is not None else None
    corpus_ids = _check_ids(corpus_ids, "corpus_ids", unique=True) if corpus_ids is not None else None
    num_queries, num_base = _sizes(queries, query_ids, query_embeddings, corpus, corpus_ids, corpus_embeddings,
                                   corpus_modalities, positives, target_modality, other_positives)

    # identity and exclusions; target modalities
    can_append = (corpus is not None or num_base == 0) and model is not None and corpus_embeddings is None
    ids = identify(queries, query_ids, corpus, corpus_ids, corpus_modalities, positives, num_base, can_append,
                   show_progress_bar, other_positives)
    target_bits = (target_modality_bits(target_modality, ids.all_positives, ids.modality)
                   if strategy == "modality_aware" else None)

    # embeddings (encoded with the resumable cache, or given)
    device = torch.device(device) if device is not None else torch.device("cpu")
    encoding = dict(chunk_size=chunk_size, cache_dir=cache_dir, batch_size=batch_size, show_progress_bar=show_progress_bar,
                    model_info=model_fingerprint(model) if model is not None and cache_dir is not None else None)
    Q = _query_matrix(model, queries, ids, query_embeddings, dict(prompt=query_prompt, prompt_name=query_prompt_name),
                      encoding, device)
    store = _corpus_store(model, ids, corpus_embeddings, dict(prompt=corpus_prompt, prompt_name=corpus_prompt_name),
                          encoding)
    if Q.shape[1] != store.dim:
        raise ValueError(f"Embedding dimensions differ: query embeddings have dimension {Q.shape[1]} "
                         f"but corpus embeddings have dimension {store.dim}.")
    ref, pair_lookup = _positive_scores(Q, store, ids.all_positives)

    # search, selection, output
    modality_t = torch.from_numpy(ids.modality).to(device)
    bits_t = torch.from_numpy(target_bits).to(device) if target_bits is not None else None
    cap = _score_cap(options, ref, modality_t, bits_t)
    vals, idx = search(Q, store, options.depth, ids.group, ids.group != np.arange(ids.num_corpus), ids.excluded,
                       query_chunk_size, show_progress_bar=show_progress_bar,  # the searcher's buffer is freed here
                       searcher=make_search(use_faiss, min(query_chunk_size, num_queries), min(chunk_size, len(store)),
                                            device), cap=cap)
    chosen, kinds = select(vals, idx, ref, options, modality_t, bits_t)
    filtered = cap.removed.cpu().tolist() if cap is not None else [0] * num_queries
    report = make_report(chosen, kinds, vals, idx, ids.own_positives, pair_lookup, strategy, output_format,
                         num_negatives, filtered, ids.appended)
    dataset = build_dataset(report, output_format, num_negatives, queries, query_ids,
                            ids.items if ids.has_content else None, corpus_ids)
    log_summary(report, num_queries, num_negatives, output_format, len(dataset))
    return (dataset, report) if return_report else dataset


# ------------------------------------------------------------------------------------------------
# helpers of mine_hard_negatives
# ------------------------------------------------------------------------------------------------


def _deprecated_margin(margin: float | None, absolute_margin: float | None) -> float | None:
    """``margin`` is the old name of ``absolute_margin`` (as in sentence-transformers)."""
    if margin is None:
        return absolute_margin
    if absolute_margin is not None:
        raise ValueError("Give absolute_margin only (margin is its deprecated name), not both.")
    warnings.warn("mine_hard_negatives: `margin` is deprecated; use `absolute_margin` (same meaning).",
                  DeprecationWarning, stacklevel=3)
    return margin


def _score_cap(options: SelectionOptions, ref: torch.Tensor, modality: torch.Tensor,
               target_bits: torch.Tensor | None) -> ScoreCap | None:
    """The per-query score limit of the margins / ``max_score`` (target modality only in the modality-aware mode)."""
    if not options.filters:
        return None
    return ScoreCap(options.score_limit(ref), torch.zeros_like(ref, dtype=torch.long), target_bits,
                    modality if target_bits is not None else None)


def _check_arguments(model: Any, positives: Any, query_embeddings: Any, corpus_embeddings: Any, strategy: str,
                     target_modality: Any, output_format: str, use_faiss: bool, **sizes: int) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"Unknown output_format {output_format!r}; choose 'n-tuple' or 'triplet'.")
    check_positive_ints(**sizes)
    if strategy != "modality_aware" and target_modality is not None:
        raise ValueError("target_modality and max_wrong_modality only apply to strategy='modality_aware'.")
    if use_faiss:
        require_faiss()
    if positives is None:
        raise ValueError("positives is required: per query, its positive(s) as corpus indices, ids or content.")
    if model is None and query_embeddings is None:
        raise ValueError("Pass model= to encode the queries, or query_embeddings=.")
    if model is None and corpus_embeddings is None:
        raise ValueError("Pass model= to encode the corpus, or corpus_embeddings=.")


def _sizes(queries: Any, query_ids: Any, query_embeddings: Any, corpus: Any, corpus_ids: Any, corpus_embeddings: Any,
           corpus_modalities: Any, positives: Sequence[Any], target_modality: Any,
           other_positives: Any = None) -> tuple[int, int]:
    """(number of queries, number of corpus items as given), checking that every argument agrees."""
    num_queries = _common_length("queries", [
        ("positives", len(positives)), ("queries", _len(queries)), ("query_ids", _len(query_ids)),
        ("query_embeddings", _len(query_embeddings)), ("other_positives", _len(other_positives)),
        ("target_modality", len(target_modality) if isinstance(target_modality, (list, tuple)) else None),
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
    return num_queries, num_base


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


def _query_matrix(model: Any, queries: Any, ids: Identities, query_embeddings: np.ndarray | None, prompts: dict,
                  encoding: dict, device: torch.device) -> torch.Tensor:
    """The normalised query embeddings on ``device`` (encoded with the cache, or given)."""
    if query_embeddings is None:
        if queries is None:
            raise ValueError("queries (content) are needed to encode them; pass queries= or query_embeddings=.")
        num_queries = len(ids.query_keys)
        keys = [key[1] for key in ids.query_keys]
        query_embeddings = encode_chunked(model, queries, "query", num_queries, keys, prompts=prompts,
                                          **encoding).gather(np.arange(num_queries))
    return normalized(torch.tensor(np.asarray(query_embeddings, dtype=np.float32)), "query", 0).to(device)


def _corpus_store(model: Any, ids: Identities, corpus_embeddings: np.ndarray | None, prompts: dict,
                  encoding: dict) -> Embeddings:
    """The corpus embeddings (encoded with the cache, or given), in chunks of ``chunk_size``."""
    if corpus_embeddings is not None:
        return Embeddings.from_array(corpus_embeddings, encoding["chunk_size"])
    if not ids.has_content:
        raise ValueError("corpus content is needed to encode the corpus; pass corpus= or corpus_embeddings=.")
    return encode_chunked(model, ids.items, "corpus", ids.num_corpus, ids.group_keys(), prompts=prompts, **encoding)


def _positive_scores(Q: torch.Tensor, store: Embeddings, all_positives: list[list[int]]
                     ) -> tuple[torch.Tensor, dict[tuple[int, int], float]]:
    """Per query, its reference score (its lowest positive score), and each (query, positive) score."""
    pair_q = np.array([q for q, positives in enumerate(all_positives) for _ in positives], dtype=np.int64)
    pair_p = np.array([p for positives in all_positives for p in positives], dtype=np.int64)
    pair_score = pair_scores(Q, store, pair_q, pair_p)
    lookup = {(int(q), int(p)): float(s) for q, p, s in zip(pair_q, pair_p, pair_score.tolist())}
    ref = torch.full((len(all_positives),), float("inf"), device=Q.device)
    ref.scatter_reduce_(0, torch.from_numpy(pair_q).to(Q.device), pair_score, reduce="amin")
    return ref, lookup
