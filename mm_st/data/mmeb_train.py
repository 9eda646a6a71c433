"""MMEB-train (VLM2Vec), and the VLM2Vec layout it shares with mmE5's synthetic data (:mod:`mm_st.data.mme5_synthetic`).

Rows: ``qry``, ``qry_image_path``, ``pos_text``, ``pos_image_path``, ``neg_text``, ``neg_image_path``; texts may
start with the image placeholder (:data:`IMAGE_PLACEHOLDERS`), which is removed (the image becomes the struct's
``image``). Empty negative texts follow ``empty_negative_text`` (see :mod:`mm_st.data.converters`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from typing import Any

import datasets
from tqdm.auto import tqdm

from mm_st.data.columns import as_list, build_dataset, make_input, text_field
from mm_st.data.images import ImageChecker, check_on_missing, image_roots, report_missing
from mm_st.data.rows import Spans, config_rows, quiet_progress, row_origin

MMEB_TRAIN_REPO = "TIGER-Lab/MMEB-train"
MMEB_TRAIN_CONFIGS = (
    "ImageNet_1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "OK-VQA", "A-OKVQA", "DocVQA",
    "InfographicsVQA", "ChartQA", "Visual7W", "VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t",
    "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA", "MSCOCO",
)  # fmt: skip
# VLM2Vec / Phi-3-V image placeholder written in MMEB-train and mmE5 texts (LLaVA rows use <image>).
IMAGE_PLACEHOLDERS = ("<|image_1|>", "<image>")


def strip_placeholder(text: str | None) -> tuple[str | None, bool]:
    """Remove a leading image placeholder (and the newline after it); report whether one was there."""
    if not text:
        return None, False
    for placeholder in IMAGE_PLACEHOLDERS:
        if placeholder in text:
            text = text.replace(placeholder + "\n", "", 1).replace(placeholder, "", 1)
            return (text or None), True
    return text, False


def _vlm2vec_input(text: Any, image_path: Any, checker: ImageChecker, where: str) -> dict | None:
    """One VLM2Vec-layout input; None when the image is missing (recorded by the checker)."""
    text, had_placeholder = strip_placeholder(text)
    image = None
    if image_path:
        if not checker.roots:
            raise ValueError(f"{where}: the row has an image ({image_path!r}) but no image_root was given.")
        image = checker.resolve(str(image_path), where)
        if image is None:
            return None
    elif had_placeholder:
        raise ValueError(f"{where}: the text has an image placeholder but the image path is empty.")
    if text is None and image is None:
        return make_input()
    return make_input(text, image)


EMPTY_NEGATIVE_TEXT = ("fill", "keep")


def _fill_empty_negative_texts(neg_texts: list[str], pos_text: Any, rng: random.Random) -> list[str]:
    """mmE5's rule (haon-chen/mmE5 src/dataset.py): an empty negative text takes the positive's text
    when all negative texts are identical, else a random non-empty negative text."""
    if "" not in neg_texts:
        return neg_texts
    if len(set(neg_texts)) == 1:
        return [pos_text if isinstance(pos_text, str) else "" for _ in neg_texts]
    non_empty = [text for text in neg_texts if text != ""]
    return [text if text != "" else rng.choice(non_empty) for text in neg_texts]


def _negative_placeholder_free(text: str, has_image: bool) -> str:
    """A filled-in text copied onto a negative without an image loses its image placeholder."""
    return text if has_image else (strip_placeholder(text)[0] or "")


VLM2VEC_COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path")


def _check_columns(name: str, rows: list, spans: Spans | None, required: Sequence[str]) -> None:
    """Each file must have every required column (in at least one row): a missing one is named with the file."""
    spans = spans or [(0, name)]
    ends = [start for start, _ in spans[1:]] + [len(rows)]
    for (start, origin), end in zip(spans, ends):
        seen: set[str] = set()
        for row in rows[start:end]:
            if isinstance(row, dict):
                seen.update(row)
        missing = [column for column in required if column not in seen]
        if missing and end > start:
            raise ValueError(f"{origin} ({name}): no column {missing[0]!r}" + (f" (nor {missing[1:]})" if missing[1:] else "")
                             + f"; its columns are {sorted(seen)}, expected {', '.join(required)} (+ neg_text, "
                             "neg_image_path).")


def _convert_vlm2vec(
    name: str, rows: list[dict], image_root: Any, num_negatives: int | None, on_missing: str, verify: bool,
    empty_negative_text: str = "fill", seed: int = 0, spans: Spans | None = None,
) -> datasets.Dataset:  # fmt: skip
    checker = ImageChecker(image_roots(image_root), verify)
    _check_columns(name, rows, spans, VLM2VEC_COLUMNS)
    out, negatives, bad_rows = [], [], set()
    for index, row in enumerate(tqdm(rows, desc=f"Converting {name}", unit="row", disable=quiet_progress(rows))):
        before = len(checker.problems)
        where = (f"{row_origin(spans, index)}: " if spans else "") + f"{name} row {index}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a row must be an object, got {type(row).__name__}.")
        field = {key: text_field(row.get(key), f"{where} {key}") for key in ("qry", "qry_image_path", "pos_text", "pos_image_path")}
        anchor = _vlm2vec_input(field["qry"], field["qry_image_path"], checker, f"{where} qry")
        positive = _vlm2vec_input(field["pos_text"], field["pos_image_path"], checker, f"{where} pos")
        neg_texts = as_list(row.get("neg_text"), f"{where} neg_text")
        neg_images = as_list(row.get("neg_image_path"), f"{where} neg_image_path")
        if empty_negative_text == "fill" and num_negatives != 0 and neg_texts:
            filled = _fill_empty_negative_texts(neg_texts, field["pos_text"], random.Random(f"{seed}-{name}-{index}"))
            neg_texts = [
                _negative_placeholder_free(t, j < len(neg_images) and bool(neg_images[j])) if t != old else t
                for j, (t, old) in enumerate(zip(filled, neg_texts))
            ]
        row_negatives = []
        for j in range(max(len(neg_texts), len(neg_images))):
            text = neg_texts[j] if j < len(neg_texts) else ""
            path = neg_images[j] if j < len(neg_images) else ""
            if text or path:
                row_negatives.append(_vlm2vec_input(text, path, checker, f"{where} neg[{j}]"))
        for role, value in (("qry", anchor), ("pos", positive)):
            if value is not None and value["text"] is None and value["image"] is None:
                raise ValueError(f"{where}: {role} has neither text nor image.")
        if len(checker.problems) > before:
            bad_rows.add(index)
            continue
        out.append({"anchor": anchor, "positive": positive})
        negatives.append(row_negatives)
    report_missing(name, checker.problems, bad_rows, on_missing, len(rows))
    return build_dataset(name, out, negatives, num_negatives)


def load_vlm2vec_layout(
    source: Any, configs: Iterable[str], split: str, image_root: Any, num_negatives: int | None,
    on_missing: str, verify_images: bool, layout: str, empty_negative_text: str = "fill", seed: int = 0,
) -> datasets.DatasetDict:  # fmt: skip
    check_on_missing(on_missing)
    if empty_negative_text not in EMPTY_NEGATIVE_TEXT:
        raise ValueError(f"empty_negative_text must be one of {EMPTY_NEGATIVE_TEXT}, got {empty_negative_text!r}.")
    result = {}
    for config in configs:
        rows, spans = config_rows(source, config, split, layout)
        result[config] = _convert_vlm2vec(
            f"{config}/{split}", rows, image_root, num_negatives, on_missing, verify_images,
            empty_negative_text=empty_negative_text, seed=seed, spans=spans,
        )
    return datasets.DatasetDict(result)


def load_mmeb_train(
    source: str | os.PathLike = MMEB_TRAIN_REPO,
    configs: Iterable[str] = MMEB_TRAIN_CONFIGS,
    split: str = "original",
    image_root: str | os.PathLike | None = None,
    num_negatives: int | None = 0,
    on_missing: str = "error",
    verify_images: bool = True,
    empty_negative_text: str = "fill",
    seed: int = 0,
) -> datasets.DatasetDict:
    """MMEB-train (VLM2Vec) as one training dataset per config.

    The query text keeps the instruction as the data writes it (``"{instruction}{query}"``); the
    ``<|image_1|>\\n`` placeholder is removed and the image becomes the struct's ``image``. With the
    ``vlm2vec`` recipe this renders exactly VLM2Vec's ``<image>\\n{instruction}{query}``, with ``mme5``
    mmE5's ``<|image|><|begin_of_text|>{instruction}...``.

    Args:
        source: Hub id, or a local directory laid out like the Hub repo:
            ``{source}/{config}/{split}-00000-of-00001.parquet`` (or ``.jsonl``).
        configs: dataset names (default: the 20 MMEB-train configs).
        split: ``"original"`` or ``"diverse_instruction"``.
        image_root: directory the ``*_image_path`` values are relative to (the unpacked image archive).
        num_negatives: negative columns from ``neg_text`` / ``neg_image_path`` (default 0: MMEB-train
            rows mostly carry none; negatives are mined, see :mod:`mm_st.mining`).
        on_missing: ``"error"`` or ``"skip"`` rows whose images are missing or unreadable.
        verify_images: also check that each image file decodes (PIL ``verify``), not only that it exists.
        empty_negative_text: ``"fill"`` (mmE5's rule, see the module docstring) or ``"keep"`` (image-only negative).
        seed: seed of ``"fill"``'s random choice.
    """
    layout = "{source}/{config}/{split}*.parquet with columns qry, qry_image_path, pos_text, pos_image_path, neg_text, neg_image_path"
    return load_vlm2vec_layout(
        source, configs, split, image_root, num_negatives, on_missing, verify_images, layout, empty_negative_text, seed
    )
