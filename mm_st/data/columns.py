"""The column type mm_st's converters and miner write: one multimodal input per row.

Arrow cannot hold a column that mixes strings and images, so every input column is a struct
``{"text": string, "image": Image}`` in which an absent modality is ``None`` (never an empty image
or an empty string). Rows read back as ``{"text": ..., "image": PIL.Image | None}``, which
:class:`mm_st.MultimodalSentenceTransformer`, the sentence-transformers collator and mm_st's losses
take as they are. The modality names and :func:`modality_of` are :mod:`mm_st.io`'s.

Every training-data format builds its dataset here: :func:`text_field` / :func:`as_list` read a row's text, path
and negative fields, :func:`build_dataset` writes ``anchor``, ``positive`` and ``negative_1..k`` (rows with fewer
negatives repeat their last, :func:`fill_negatives`).

Example:
    >>> import datasets
    >>> from mm_st.data.columns import INPUT_FEATURE, make_input, modality_of
    >>> ds = datasets.Dataset.from_list(
    ...     [{"anchor": make_input(text="a cat")}], features=datasets.Features({"anchor": INPUT_FEATURE})
    ... )
    >>> ds[0]["anchor"], modality_of(ds[0]["anchor"])
    ({'text': 'a cat', 'image': None}, 'text')
"""

from __future__ import annotations

import ast
import logging
from typing import Any

import datasets

from mm_st.io import IMAGE, INSTRUCTION, MODALITIES, TEXT, modality_of

logger = logging.getLogger("mm_st.data.converters")  # the converters' logger, as before the split

__all__ = ["INPUT_FEATURE", "INSTRUCTED_INPUT_FEATURE", "MODALITIES", "as_list", "build_dataset", "fill_negatives", "make_input",
           "modality_of", "text_field"]

INPUT_FEATURE = {TEXT: datasets.Value("string"), IMAGE: datasets.Image()}
# A query column whose rows carry their own instruction (rendered like ST's prompt=; see mm_st.inputs).
INSTRUCTED_INPUT_FEATURE = {**INPUT_FEATURE, "instruction": datasets.Value("string")}


def make_input(text: str | None = None, image: Any = None) -> dict[str, Any]:
    """One input as a struct row; empty strings count as absent text."""
    return {"text": text if text else None, "image": image}


def as_list(value: Any, where: str) -> list[str]:
    """A negative field: a list, a Python-literal list of strings in a string (mmE5), one string, or empty.

    A string is read as a list only when it is a Python list literal whose items are all strings (or
    None), e.g. ``"['a cat', 'a dog']"``; any other string, e.g. ``"[1, 2, 3]"``, is one text as written.
    It is never executed (``ast.literal_eval``). Anything else that is not a string is an error.
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        for j, item in enumerate(value):
            if item is not None and not isinstance(item, str):
                raise TypeError(f"{where}[{j}]: must be a string or None, got {type(item).__name__} {item!r}.")
        return ["" if item is None else item for item in value]
    if not isinstance(value, str):
        raise TypeError(f"{where}: must be a string or a list of strings, got {type(value).__name__} {value!r}.")
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, list) and all(item is None or isinstance(item, str) for item in parsed):
            return ["" if item is None else item for item in parsed]
    return [value] if value else []


def text_field(value: Any, where: str) -> str | None:
    """A text or image-path field: a string or None; anything else is an error naming the field."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{where}: must be a string or None, got {type(value).__name__} {value!r}.")
    return value


def fill_negatives(negatives: list[list[dict]], k: int | None) -> tuple[int, list[int]]:
    """Number of negative columns and the rows to drop for lack of any negative."""
    if k is not None and k < 0:
        raise ValueError(f"num_negatives must be >= 0 or None, got {k}.")
    available = max((len(n) for n in negatives), default=0)
    count = available if k is None else k if available else 0
    drop = [i for i, n in enumerate(negatives) if count and not n]
    for n in negatives:
        if n:
            n[:] = (n + [n[-1]] * count)[:count]
    return count, drop


def build_dataset(name: str, rows: list[dict], negatives: list[list[dict]], k: int | None,
           id_columns: tuple[str, ...] = ()) -> datasets.Dataset:
    """A dataset with anchor, positive and negative_1..k struct columns (the anchor with its ``instruction``
    when the rows carry one), then the string ``id_columns`` the rows hold."""
    count, drop = fill_negatives(negatives, k)
    if k and not count:
        logger.warning("%s: no row has a hard negative; the dataset has no negative columns.", name)
    if drop:
        logger.warning("%s: dropped %d of %d rows that have no hard negative.", name, len(drop), len(rows))
    keep = sorted(set(range(len(rows))) - set(drop))
    columns: dict[str, list] = {"anchor": [rows[i]["anchor"] for i in keep]}
    columns["positive"] = [rows[i]["positive"] for i in keep]
    for j in range(count):
        columns[f"negative_{j + 1}"] = [negatives[i][j] for i in keep]
    features = {column: INPUT_FEATURE for column in columns}
    if any(INSTRUCTION in row["anchor"] for row in rows):
        features["anchor"] = INSTRUCTED_INPUT_FEATURE
    for column in id_columns:
        columns[column] = [rows[i][column] for i in keep]
        features[column] = datasets.Value("string")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
