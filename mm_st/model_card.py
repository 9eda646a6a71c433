"""Model-card data that understands mm_st's ``{"text", "image"}`` struct columns.

sentence-transformers picks widget examples from string columns; with struct columns and the
``dataset_name`` column that per-dataset trainer ``prompts`` add, its sampler finds rows with no
usable text and fails (``IndexError`` in ``set_widget_examples``), or shows ``None`` texts. Here
each struct column is read as its ``text`` field (image-only columns are left out), and the
sentence-transformers sampler runs on that plain-text view.

Example:
    >>> from datasets import Dataset
    >>> from mm_st.model_card import text_view
    >>> rows = Dataset.from_list([{"anchor": {"text": "a cat", "image": None}, "positive": {"text": None, "image": None}}])
    >>> text_view(rows).to_list()
    [{'anchor': 'a cat'}]
"""

from __future__ import annotations

import random
import re

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, Value
from sentence_transformers.sentence_transformer.model_card import SentenceTransformerModelCardData

SAMPLE_SIZE = 1000  # rows per dataset that widget examples are drawn from (as sentence-transformers)


def _texts(table, column: str, feature) -> list[str | None] | None:
    """The text of each sampled value of a column, or None when the column holds no text."""
    values = table.column(column)
    if isinstance(feature, Value) and feature.dtype in {"string", "large_string"}:
        return values.to_pylist()
    if isinstance(feature, dict) and isinstance(feature.get("text"), Value):
        return pc.struct_field(values, "text").to_pylist()
    return None


def text_view(dataset: Dataset, sample_size: int = SAMPLE_SIZE) -> Dataset | None:
    """Up to ``sample_size`` random rows as plain strings: text columns and the text of struct columns.

    A value without text becomes ``""`` (sentence-transformers skips such rows); a column with no text
    in the sample is dropped. Images are never decoded. None when no column has text.
    """
    if len(dataset) == 0:
        return None
    indices = random.sample(range(len(dataset)), k=min(sample_size, len(dataset)))
    table = dataset.with_format("arrow").select(indices)[:]  # raw columns: no transform, no image decoding
    columns = {}
    for column, feature in dataset.features.items():
        texts = _texts(table, column, feature) if column != "dataset_name" else None
        if texts is not None and any(isinstance(text, str) and text for text in texts):
            columns[column] = [text if isinstance(text, str) else "" for text in texts]
    return Dataset.from_dict(columns) if columns else None


def shipped_code_files(model) -> dict[str, str]:
    """``{module class name: code file name}`` of a model's modules that ship their own code (``ships_code``)."""
    import inspect
    from pathlib import Path

    if model is None:
        return {}
    return {type(m).__name__: Path(inspect.getfile(type(m))).name for m in model if getattr(type(m), "ships_code", False)}


def remote_code_note(files: dict[str, str]) -> str:
    """The card's sentence on ``trust_remote_code`` for modules that ship code (empty when there are none).

    >>> print(remote_code_note({"LatentAttentionPooling": "latent_attention.py"}))  # doctest: +NORMALIZE_WHITESPACE
    This model uses a custom module, `LatentAttentionPooling` (code: `latent_attention.py` in this repository),
    because sentence-transformers has no latent-attention pooling. sentence-transformers runs a module's code
    from the repository only when asked to, so load it with `trust_remote_code=True` (read the file first);
    mm_st does not need to be installed.
    """
    if not files:
        return ""
    modules = ", ".join(f"`{name}` (code: `{file}` in this repository)" for name, file in files.items())
    return (
        f"This model uses a custom module, {modules}, because sentence-transformers has no latent-attention "
        "pooling. sentence-transformers runs a module's code from the repository only when asked to, so load it "
        "with `trust_remote_code=True` (read the file first); mm_st does not need to be installed."
    )


class MultimodalModelCardData(SentenceTransformerModelCardData):
    """:class:`SentenceTransformerModelCardData` whose widget examples read struct columns' text.

    For a model with a module that ships its own code (the latent-attention pooling), the usage snippet loads it
    with ``trust_remote_code=True`` and says why (:func:`remote_code_note`).
    """

    def generate_usage_snippet(self) -> str:
        snippet = super().generate_usage_snippet()
        note = remote_code_note(shipped_code_files(self.model))
        if not note:
            return snippet
        snippet = re.sub(r'(model = \w+\("[^"]*")\)', r"\1, trust_remote_code=True)", snippet, count=1)
        return f"{note}\n\n{snippet}"

    def set_widget_examples(self, dataset: Dataset | DatasetDict) -> None:
        if isinstance(dataset, (IterableDataset, IterableDatasetDict)):
            return
        datasets = dataset if isinstance(dataset, DatasetDict) else DatasetDict(dataset=dataset)
        views = {
            name: view
            for name, part in datasets.items()
            if isinstance(part, Dataset) and (view := text_view(part)) is not None
        }
        if not views:
            self.widget = []
            return
        super().set_widget_examples(DatasetDict(views))
