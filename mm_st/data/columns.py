"""The column type mm_st's converters and miner write: one multimodal input per row.

Arrow cannot hold a column that mixes strings and images, so every input column is a struct
``{"text": string, "image": Image}`` in which an absent modality is ``None`` (never an empty image
or an empty string). Rows read back as ``{"text": ..., "image": PIL.Image | None}``, which
:class:`mm_st.MultimodalSentenceTransformer`, the sentence-transformers collator and mm_st's losses
take as they are. The modality names and :func:`modality_of` are :mod:`mm_st.io`'s.

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

from typing import Any

import datasets

from mm_st.io import IMAGE, MODALITIES, TEXT, modality_of

__all__ = ["INPUT_FEATURE", "INSTRUCTED_INPUT_FEATURE", "MODALITIES", "make_input", "modality_of"]

INPUT_FEATURE = {TEXT: datasets.Value("string"), IMAGE: datasets.Image()}
# A query column whose rows carry their own instruction (rendered like ST's prompt=; see mm_st.inputs).
INSTRUCTED_INPUT_FEATURE = {**INPUT_FEATURE, "instruction": datasets.Value("string")}


def make_input(text: str | None = None, image: Any = None) -> dict[str, Any]:
    """One input as a struct row; empty strings count as absent text."""
    return {"text": text if text else None, "image": image}
