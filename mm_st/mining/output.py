"""Output: the :class:`MiningReport` of the chosen negatives and the ``datasets.Dataset`` built from it.

``"n-tuple"``: one row per (query, positive), columns ``anchor, positive, negative_1 .. negative_n``;
a query with fewer than ``num_negatives`` negatives gives no row. ``"triplet"``: one row per negative,
columns ``anchor, positive, negative``. Columns hold mm_st's ``{"text", "image"}`` structs
(:data:`mm_st.data.columns.INPUT_FEATURE`); a side given only by ids holds the ids as strings.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger("mm_st.mining")

__all__ = ["OUTPUT_FORMATS", "MiningReport", "build_dataset", "log_summary", "make_report"]

OUTPUT_FORMATS = ("n-tuple", "triplet")


@dataclass
class MiningReport:
    """What :func:`~mm_st.mining.mine_hard_negatives` did, row by row (returned with ``return_report=True``).

    Row fields are aligned with the returned dataset (one entry per row); corpus indices count the
    corpus as given, then the appended positives (see ``appended_positives``).

    Attributes:
        query_index: query of each row.
        positive_index: corpus index of each row's positive.
        positive_score: cosine score of (query, positive) of each row.
        negative_index: corpus indices of each row's negatives, hardest first.
        negative_rank: their ranks (1-based; see "Ranks" in :func:`~mm_st.mining.mine_hard_negatives`).
        negative_score: their cosine scores.
        negative_type: ``"window"``, ``"top_k"``, ``"type1"`` (wrong modality, ranked above the positive),
            ``"type2"`` (correct modality, in the rank window) or ``"fallback"`` (ranked above the window,
            taken because the window had too few candidates; ``fallback="nearest"``).
        found: per query, how many negatives were found (at most ``num_negatives``).
        dropped_queries: queries that gave no row (fewer than ``num_negatives`` negatives in ``"n-tuple"``
            format, none in ``"triplet"`` format).
        fallback_queries: queries (with a row) that took at least one ``"fallback"`` negative.
        filtered: per query, the candidates removed as likely false negatives (above the score limit of
            ``absolute_margin`` / ``relative_margin`` / ``max_score``) before ranking.
        margin_removed: the sum of ``filtered``.
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
    fallback_queries: list[int] = field(default_factory=list)
    filtered: list[int] = field(default_factory=list)
    margin_removed: int = 0
    appended_positives: int = 0


def make_report(chosen: torch.Tensor, kinds: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor,
                own_positives: list[list[int]], pair_lookup: dict[tuple[int, int], float], strategy: str,
                output_format: str, num_negatives: int, filtered: list[int], appended: int) -> MiningReport:
    """One report row per (query, own positive) in ``"n-tuple"`` format, per (query, positive, negative)
    in ``"triplet"`` format; negatives hardest first."""
    found = chosen.sum(dim=1).cpu().tolist()
    rows, cols = (t.cpu().numpy() for t in chosen.nonzero(as_tuple=True))  # row-major: hardest first per row
    per_query_cols = np.split(cols, np.cumsum(found)[:-1])
    vals_np, idx_np, kinds_np = vals.cpu().numpy(), idx.cpu().numpy(), kinds.cpu().numpy()
    type_names = {0: "window" if strategy == "window" else "top_k", 1: "type1", 2: "type2", 3: "fallback"}
    report = MiningReport(found=found, filtered=filtered, margin_removed=sum(filtered), appended_positives=appended)
    for q, count in enumerate(found):
        if count == 0 or (output_format == "n-tuple" and count < num_negatives):
            report.dropped_queries.append(q)
            continue
        c = per_query_cols[q]
        if (kinds_np[q, c] == 3).any():
            report.fallback_queries.append(q)
        negatives = list(zip(idx_np[q, c].tolist(), (c + 1).tolist(), vals_np[q, c].tolist(),
                             [type_names[int(k)] for k in kinds_np[q, c]]))
        groups = [negatives] if output_format == "n-tuple" else [[negative] for negative in negatives]
        for p in own_positives[q]:
            for group in groups:
                report.query_index.append(q)
                report.positive_index.append(p)
                report.positive_score.append(pair_lookup[(q, p)])
                report.negative_index.append([n for n, _, _, _ in group])
                report.negative_rank.append([r for _, r, _, _ in group])
                report.negative_score.append([s for _, _, s, _ in group])
                report.negative_type.append([t for _, _, _, t in group])
    return report


def build_dataset(report: MiningReport, output_format: str, num_negatives: int, queries: Any,
                  query_ids: Any, corpus: Any, corpus_ids: Any):
    """The ``datasets.Dataset`` of the report's rows (content as structs, or ids when no content)."""
    import datasets

    from mm_st.data.columns import INPUT_FEATURE, INSTRUCTED_INPUT_FEATURE

    instructed = queries is not None and any(isinstance(q, dict) and "instruction" in q for q in queries)

    def query_value(q: int) -> Any:
        if queries is None:
            return query_ids[q]
        row = to_struct(queries[q], f"queries[{q}]")
        return {"instruction": None, **row} if instructed else row

    def corpus_value(j: int) -> Any:
        return to_struct(corpus[j], f"corpus[{j}]") if corpus is not None else corpus_ids[j]

    query_feature = (INSTRUCTED_INPUT_FEATURE if instructed else INPUT_FEATURE) if queries is not None else datasets.Value("string")
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


def to_struct(item: Any, where: str) -> dict[str, Any]:
    """One input as a ``{"text", "image"}`` struct."""
    if isinstance(item, str):
        return {"text": item, "image": None}
    if isinstance(item, Image.Image):
        return {"text": None, "image": item}
    if isinstance(item, os.PathLike):
        return {"text": None, "image": os.fspath(item)}
    if isinstance(item, dict) and set(item) <= {"text", "image", "instruction"}:
        image = item.get("image")
        row = {"text": item.get("text"), "image": os.fspath(image) if isinstance(image, os.PathLike) else image}
        return {**row, "instruction": item["instruction"]} if "instruction" in item else row
    raise TypeError(f"{where}: {type(item).__name__} inputs (e.g. chat messages) cannot be stored in the "
                    "{text, image} column; give str, images or {'text', 'image'} dicts.")


def log_summary(report: MiningReport, num_queries: int, num_negatives: int, output_format: str, rows: int) -> None:
    """Log the row count, the margin's removals and (as a warning) the dropped queries."""
    logger.info("Mined %d rows for %d queries (%s).", rows, num_queries, output_format)
    if report.margin_removed:
        logger.info("The margins / max_score removed %d candidate(s) as likely false negatives.", report.margin_removed)
    if report.fallback_queries:
        logger.info("%d of %d queries had too few candidates in the rank window and took the nearest ones above it "
                    "(fallback).", len(report.fallback_queries), num_queries)
    dropped = len(report.dropped_queries)
    if dropped:
        need = f"fewer than {num_negatives} negatives" if output_format == "n-tuple" else "no negative"
        logger.warning("%d of %d queries (%.2f%%) found %s and gave no row; widen ranks / top_k, lower "
                       "num_negatives or the margins, use fallback='nearest' or output_format='triplet'.",
                       dropped, num_queries, 100 * dropped / num_queries, need)
