"""NLI triplets for E5-V's text-only training (SimCSE's csv or ``sentence-transformers/all-nli``)."""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from mm_st.data.rows import read_rows
from mm_st.io import is_local


NLI_COLUMN_SETS = (
    ("sent0", "sent1", "hard_neg"),  # SimCSE nli_for_simcse.csv
    ("anchor", "positive", "negative"),  # sentence-transformers/all-nli "triplet"
    ("premise", "entailment", "contradiction"),
)


def load_nli(source: str | os.PathLike = "sentence-transformers/all-nli", split: str = "train") -> datasets.Dataset:
    """NLI triplets for E5-V's text-only training: ``anchor`` (premise), ``positive`` (entailment),
    ``negative`` (contradiction), as plain strings.

    Args:
        source: a csv/tsv/jsonl/parquet file (SimCSE's ``nli_for_simcse.csv``: ``sent0, sent1,
            hard_neg``), or a Hub id (``sentence-transformers/all-nli``, config ``triplet``).
    """
    path = Path(source)
    if path.is_file():
        rows = read_rows(path)
        name = str(path)
    elif is_local(source) or path.suffix:
        raise FileNotFoundError(f"NLI file {str(source)!r} not found.")
    else:
        rows = datasets.load_dataset(str(source), "triplet", split=split).to_list()
        name = str(source)
    present = set(rows[0]) if rows else set()
    for columns in NLI_COLUMN_SETS:
        if set(columns) <= present:
            break
    else:
        raise ValueError(f"{name}: expected columns {' / '.join(map(str, NLI_COLUMN_SETS))}, found {sorted(present)}.")
    out = {"anchor": [], "positive": [], "negative": []}
    for index, row in enumerate(rows):
        values = [row.get(column) for column in columns]
        for column, value in zip(columns, values):
            if not isinstance(value, str) or not value.strip():
                got = "missing" if value is None else "empty" if isinstance(value, str) else f"a {type(value).__name__}"
                raise ValueError(f"{name} row {index}: empty or missing text in {columns}: {column!r} is {got}.")
        for key, value in zip(out, values):
            out[key].append(value)
    return datasets.Dataset.from_dict(out)
