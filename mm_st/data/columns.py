"""The column type mm_st's converters and miner write: one multimodal input per row.

Arrow cannot hold a column that mixes strings and images, so every input column is a struct
``{"text": string, "image": Image}`` in which an absent modality is ``None`` (never an empty image
or an empty string). Rows read back as ``{"text": ..., "image": PIL.Image | None}``, which
:class:`mm_st.MultimodalSentenceTransformer`, the sentence-transformers collator and mm_st's losses
take as they are.

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

INPUT_FEATURE = {"text": datasets.Value("string"), "image": datasets.Image()}
MODALITIES = ("text", "image", "image+text")


def make_input(text: str | None = None, image: Any = None) -> dict[str, Any]:
    """One input as a struct row; empty strings count as absent text."""
    return {"text": text if text else None, "image": image}


def modality_of(item: Any) -> str:
    """``"text"``, ``"image"`` or ``"image+text"`` for a struct row, a str, or an image."""
    if isinstance(item, str):
        return "text"
    if isinstance(item, dict):
        has_text, has_image = item.get("text") is not None, item.get("image") is not None
        if has_text and has_image:
            return "image+text"
        if has_image:
            return "image"
        if has_text:
            return "text"
        raise ValueError("Input has neither text nor image.")
    return "image"

