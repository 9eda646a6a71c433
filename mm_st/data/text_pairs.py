"""Text retrieval pairs (MM-Embed's continual text-to-text stage) as struct columns."""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from mm_st.data.columns import INPUT_FEATURE, INSTRUCTED_INPUT_FEATURE, as_list, make_input, text_field
from mm_st.data.rows import read_rows
from mm_st.io import INSTRUCTION, is_local


TEXT_PAIR_COLUMNS = (("query", "positive"), ("anchor", "positive"), ("query", "document"))


def load_text_pairs(source: str | os.PathLike, instruction: str | None = None, split: str = "train",
                    num_negatives: int = 0) -> datasets.Dataset:
    """Text retrieval pairs as struct columns: ``anchor`` (the query, with its ``instruction``), ``positive``,
    and ``negative_1..k`` from ``negative`` / ``negatives`` (a string or a list; rows with fewer repeat
    their last, rows with none are an error when ``num_negatives`` > 0).

    Args:
        source: a jsonl / json / csv / tsv / parquet file with ``query`` (or ``anchor``) and ``positive``
            (or ``document``) columns, optionally ``instruction`` (per row) and ``negative(s)``; or a Hub
            dataset id.
        instruction: the instruction of rows that carry none (None: no instruction).

    Example:
        >>> import json, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "pairs.jsonl")
        >>> _ = open(path, "w").write(json.dumps({"query": "capital of France", "positive": "Paris"}) + "\\n")
        >>> load_text_pairs(path, instruction="Find the answer.")[0]["anchor"]
        {'text': 'capital of France', 'image': None, 'instruction': 'Find the answer.'}
    """
    path = Path(source)
    if path.is_file():
        rows, name = read_rows(path), str(path)
    elif is_local(source) or path.suffix:
        raise FileNotFoundError(f"Text pairs file {str(source)!r} not found.")
    else:
        rows, name = datasets.load_dataset(str(source), split=split).to_list(), str(source)
    present = set().union(*(row.keys() for row in rows)) if rows else set()
    columns = next((c for c in TEXT_PAIR_COLUMNS if set(c) <= present), None)
    if columns is None:
        raise ValueError(f"{name}: expected columns {' / '.join(map(str, TEXT_PAIR_COLUMNS))} (+ optional instruction, "
                         f"negative / negatives), found {sorted(present)}.")
    out: dict[str, list] = {"anchor": [], "positive": [], **{f"negative_{k}": [] for k in range(1, num_negatives + 1)}}
    for index, row in enumerate(rows):
        query, positive = (text_field(row.get(c), f"{name} row {index} {c}") for c in columns)
        for column, value in zip(columns, (query, positive)):
            if not value or not value.strip():
                raise ValueError(f"{name} row {index}: empty or missing text in column {column!r}.")
        row_instruction = text_field(row.get("instruction"), f"{name} row {index} instruction") or instruction
        out["anchor"].append({**make_input(query), INSTRUCTION: row_instruction})
        out["positive"].append(make_input(positive))
        if num_negatives:
            negatives = as_list(row.get("negatives", row.get("negative")), f"{name} row {index} negatives")
            negatives = [n for n in negatives if n.strip()]
            if not negatives:
                raise ValueError(f"{name} row {index}: no negative text (num_negatives={num_negatives}).")
            negatives = (negatives + [negatives[-1]] * num_negatives)[:num_negatives]
            for k, text in enumerate(negatives, start=1):
                out[f"negative_{k}"].append(make_input(text))
    features = {column: INPUT_FEATURE for column in out}
    features["anchor"] = INSTRUCTED_INPUT_FEATURE
    return datasets.Dataset.from_dict(out, features=datasets.Features(features))
