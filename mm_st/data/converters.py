"""Converters: the training sets of E5-V, VLM2Vec/mmE5 and MM-Embed as sentence-transformers datasets.

Every converter returns ``datasets`` objects whose columns are, in order, ``anchor``, ``positive`` and
``negative_1 .. negative_k``: what the sentence-transformers trainer and mm_st's losses take (columns
after the positive are hard negatives). Multimodal columns are ``{"text", "image"}`` structs
(:mod:`mm_st.data.columns`): an absent modality is ``None``; images are stored as paths and decoded
lazily by ``datasets.Image``.

============================  =====================================================  =================
converter                     layout                                                 returns
============================  =====================================================  =================
:func:`load_mmeb_train`       ``TIGER-Lab/MMEB-train`` (per-dataset configs)          ``DatasetDict``
:func:`load_mme5_synthetic`   ``intfloat/mmE5-synthetic`` (same columns)              ``DatasetDict``
:func:`load_mbeir`            M-BEIR query jsonl + candidate pool jsonl + images      ``DatasetDict``
:func:`load_nli`              SimCSE NLI csv / ``sentence-transformers/all-nli``      ``Dataset``
============================  =====================================================  =================

A ``DatasetDict`` has one dataset per source dataset / task, so the trainer's multi-dataset
sampler can draw each batch from one of them (VLM2Vec v2 style), and per-dataset ``prompts``
apply. Each converter takes a Hub id (real users) or a local directory with the same layout
(:func:`mm_st.io.is_local` tells them apart).

Images: paths are resolved inside ``image_root`` (:func:`mm_st.io.resolve_inside`: a path escaping the
root, also through a symbolic link, is an error). Missing or
unreadable images raise an error that counts them and lists the first few (dataset, row, column,
path); ``on_missing="skip"`` drops those rows instead and logs how many.

Hard negatives: ``num_negatives=k`` gives ``k`` negative columns; a row with fewer (but at least
one) negatives repeats its last one (as mmE5's loader does); rows with none are dropped and counted;
a dataset in which no row has a negative gets no negative columns (logged). ``num_negatives=None``
takes the largest count present; 0 gives no negative columns. ``neg_text`` / ``neg_image_path`` may
be a list of strings or, as mmE5 writes them, the Python literal of one: a string is read as a list
only when it is a list literal of strings (``"['a cat', 'a dog']"`` gives two negatives); any other
string, e.g. ``"[1, 2, 3]"``, is one text as written. Nothing is ever executed.

Bad input is an error that names the file (or config) and row: a malformed or non-UTF-8 line, a row
that is not an object, a text or path field that is not a string (``pos_text: 123``), a NUL byte in
a path, an NLI row without one of its three texts, an M-BEIR row without ``qid`` / ``did``, or a
``pos_cand_list`` that is not a list of ids.

Empty negative texts (VLM2Vec layout): ``empty_negative_text="fill"`` (default) does what mmE5's
loader does (haon-chen/mmE5 ``src/dataset.py``): an empty ``neg_text`` entry takes the positive's
text when all of the row's negative texts are identical, else a random non-empty negative text of
the row (seeded by ``seed`` and the row index); ``"keep"`` leaves it empty (an image-only negative).

Example:
    >>> from mm_st.data.converters import load_nli
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp(), "nli.csv")
    >>> _ = path.write_text("sent0,sent1,hard_neg\\nA man sleeps.,A person rests.,A man runs.\\n")
    >>> load_nli(path)[0]
    {'anchor': 'A man sleeps.', 'positive': 'A person rests.', 'negative': 'A man runs.'}
"""

from __future__ import annotations

import ast
import bisect
import glob
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from tqdm.auto import tqdm

from mm_st.data.columns import INPUT_FEATURE, INSTRUCTED_INPUT_FEATURE, make_input
from mm_st.data.mbeir import (  # noqa: F401  (re-exported: the reader moved to mm_st.data.mbeir)
    MBEIR_DATASETS, MBEIR_MODALITY_NAMES, MBEIR_REPO, file_list, mbeir_instructions, mbeir_modality, mbeir_pool_files,
    mbeir_query_files, mbeir_root, mbeir_task_name, pool_rows, query_rows, read_instructions,
)
from mm_st.data.rows import read_rows
from mm_st.inputs import check_image_file
from mm_st.io import INSTRUCTION, is_local, resolve_inside

logger = logging.getLogger(__name__)

MMEB_TRAIN_REPO = "TIGER-Lab/MMEB-train"
MMEB_TRAIN_CONFIGS = (
    "ImageNet_1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "OK-VQA", "A-OKVQA", "DocVQA",
    "InfographicsVQA", "ChartQA", "Visual7W", "VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t",
    "MSCOCO_t2i", "MSCOCO_i2t", "NIGHTS", "WebQA", "MSCOCO",
)  # fmt: skip
MME5_SYNTHETIC_REPO = "intfloat/mmE5-synthetic"
MME5_SYNTHETIC_CONFIGS = ("Classification", "Retrieval", "VQA")
# VLM2Vec / Phi-3-V image placeholder written in MMEB-train and mmE5 texts (LLaVA rows use <image>).
IMAGE_PLACEHOLDERS = ("<|image_1|>", "<image>")
ON_MISSING = ("error", "skip")
PROGRESS_MIN_ROWS = 1000  # show a progress bar from this many rows on


def _quiet(rows: Sequence[Any]) -> bool:
    """No progress bar for a small file, nor when datasets' bars are off (a recipe's console without --verbose)."""
    return len(rows) < PROGRESS_MIN_ROWS or datasets.utils.are_progress_bars_disabled()


# --------------------------------------------------------------------------------------------------
# Images


@dataclass
class _ImageChecker:
    """Resolves image paths inside the root(s), checks each file once and collects problems."""

    roots: list[Path]
    verify: bool = True
    problems: list[str] = field(default_factory=list)
    _seen: dict[str, str | None] = field(default_factory=dict)

    def resolve(self, rel: str, where: str) -> str | None:
        """Absolute path of a readable image, or None (the problem is recorded)."""
        if rel in self._seen:
            status = self._seen[rel]
            if status is None:
                self.problems.append(where)
            return status
        found = None
        for root in self.roots:
            full = resolve_inside(root, rel, where)
            if full.is_file():
                found = full
                break
        status = None
        if found is not None:
            try:
                check_image_file(found, 0) if self.verify else None
                status = str(found)
            except (OSError, ValueError):
                status = None
        self._seen[rel] = status
        if status is None:
            self.problems.append(f"{where}: {rel!r}")
        return status


def _roots(image_root: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    if image_root is None:
        return []
    items = [image_root] if isinstance(image_root, (str, os.PathLike)) else list(image_root)
    roots = [Path(item).resolve() for item in items]
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"Image root {str(root)!r} is not a directory.")
    return roots


def _raise_or_report(name: str, problems: list[str], bad_rows: set[int], on_missing: str, total: int) -> None:
    if not problems:
        return
    if on_missing == "error":
        first = "\n  ".join(problems[:5])
        raise FileNotFoundError(
            f"{name}: {len(problems)} image reference(s) missing or unreadable in {len(bad_rows)} of {total} rows; "
            f"first ones:\n  {first}\nFix the image root, or drop those rows with on_missing='skip' (training recipes: "
            "--on-missing skip)."
        )
    logger.warning("%s: dropped %d of %d rows with missing or unreadable images.", name, len(bad_rows), total)


# --------------------------------------------------------------------------------------------------
# Reading a source: local directory with the Hub layout, or a Hub id


Spans = list[tuple[int, str]]  # (first row index, file name) of each file a config's rows came from


def _origin(spans: Spans, index: int) -> str:
    """The file of the ``index``-th row of a config (files concatenated in order), with its own row number
    when the config has several files."""
    start, label = spans[bisect.bisect_right([first for first, _ in spans], index) - 1]
    return label if len(spans) == 1 else f"{label} row {index - start}"


def _config_rows(source: str | os.PathLike, config: str, split: str, layout: str) -> tuple[list[dict[str, Any]], Spans]:
    """Rows of one config/split from ``source/config/split*.{parquet,jsonl,json}``, a
    ``save_to_disk`` folder ``source/config[/split]``, or the Hub dataset ``source``, with the file spans."""
    root = Path(source)
    if root.is_dir():
        folder = root / config
        files = sorted(glob.glob(str(folder / f"{glob.escape(split)}*.parquet")))
        files += sorted(glob.glob(str(folder / f"{glob.escape(split)}*.jsonl")))
        files += sorted(glob.glob(str(folder / f"{glob.escape(split)}*.json")))
        if files:
            rows, spans = [], []
            for file in files:
                spans.append((len(rows), Path(file).name))
                rows += read_rows(Path(file))
            return rows, spans
        for candidate in (folder / split, folder):
            if (candidate / "dataset_info.json").is_file() or (candidate / "state.json").is_file():
                return datasets.load_from_disk(str(candidate)).to_list(), [(0, str(candidate))]
        raise FileNotFoundError(
            f"No data for config {config!r}, split {split!r} in {str(root)!r}: expected {layout}, i.e. "
            f"{str(folder / (split + '-00000-of-00001.parquet'))!r} (or .jsonl/.json, or a save_to_disk folder)."
        )
    if is_local(source):
        raise FileNotFoundError(f"Local dataset directory {str(source)!r} does not exist (expected {layout}).")
    return datasets.load_dataset(str(source), config, split=split).to_list(), [(0, f"{source}:{config}/{split}")]


# --------------------------------------------------------------------------------------------------
# Negatives and text fields


def _as_list(value: Any, where: str) -> list[str]:
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


def _text_field(value: Any, where: str) -> str | None:
    """A text or image-path field: a string or None; anything else is an error naming the field."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{where}: must be a string or None, got {type(value).__name__} {value!r}.")
    return value


def _strip_placeholder(text: str | None) -> tuple[str | None, bool]:
    """Remove a leading image placeholder (and the newline after it); report whether one was there."""
    if not text:
        return None, False
    for placeholder in IMAGE_PLACEHOLDERS:
        if placeholder in text:
            text = text.replace(placeholder + "\n", "", 1).replace(placeholder, "", 1)
            return (text or None), True
    return text, False


def _fill_negatives(negatives: list[list[dict]], k: int | None) -> tuple[int, list[int]]:
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


def _build(name: str, rows: list[dict], negatives: list[list[dict]], k: int | None,
           id_columns: tuple[str, ...] = ()) -> datasets.Dataset:
    """A dataset with anchor, positive and negative_1..k struct columns (the anchor with its ``instruction``
    when the rows carry one), then the string ``id_columns`` the rows hold."""
    count, drop = _fill_negatives(negatives, k)
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


def _check_on_missing(on_missing: str) -> None:
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}.")


# --------------------------------------------------------------------------------------------------
# MMEB-train and mmE5-synthetic (VLM2Vec layout)


def _vlm2vec_input(text: Any, image_path: Any, checker: _ImageChecker, where: str) -> dict | None:
    """One VLM2Vec-layout input; None when the image is missing (recorded by the checker)."""
    text, had_placeholder = _strip_placeholder(text)
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
    return text if has_image else (_strip_placeholder(text)[0] or "")


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
    checker = _ImageChecker(_roots(image_root), verify)
    _check_columns(name, rows, spans, VLM2VEC_COLUMNS)
    out, negatives, bad_rows = [], [], set()
    for index, row in enumerate(tqdm(rows, desc=f"Converting {name}", unit="row", disable=_quiet(rows))):
        before = len(checker.problems)
        where = (f"{_origin(spans, index)}: " if spans else "") + f"{name} row {index}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a row must be an object, got {type(row).__name__}.")
        field = {key: _text_field(row.get(key), f"{where} {key}") for key in ("qry", "qry_image_path", "pos_text", "pos_image_path")}
        anchor = _vlm2vec_input(field["qry"], field["qry_image_path"], checker, f"{where} qry")
        positive = _vlm2vec_input(field["pos_text"], field["pos_image_path"], checker, f"{where} pos")
        neg_texts = _as_list(row.get("neg_text"), f"{where} neg_text")
        neg_images = _as_list(row.get("neg_image_path"), f"{where} neg_image_path")
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
    _raise_or_report(name, checker.problems, bad_rows, on_missing, len(rows))
    return _build(name, out, negatives, num_negatives)


def _load_vlm2vec_layout(
    source: Any, configs: Iterable[str], split: str, image_root: Any, num_negatives: int | None,
    on_missing: str, verify_images: bool, layout: str, empty_negative_text: str = "fill", seed: int = 0,
) -> datasets.DatasetDict:  # fmt: skip
    _check_on_missing(on_missing)
    if empty_negative_text not in EMPTY_NEGATIVE_TEXT:
        raise ValueError(f"empty_negative_text must be one of {EMPTY_NEGATIVE_TEXT}, got {empty_negative_text!r}.")
    result = {}
    for config in configs:
        rows, spans = _config_rows(source, config, split, layout)
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
    return _load_vlm2vec_layout(
        source, configs, split, image_root, num_negatives, on_missing, verify_images, layout, empty_negative_text, seed
    )


def load_mme5_synthetic(
    source: str | os.PathLike = MME5_SYNTHETIC_REPO,
    configs: Iterable[str] = MME5_SYNTHETIC_CONFIGS,
    split: str = "train",
    image_root: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    num_negatives: int | None = None,
    on_missing: str = "error",
    verify_images: bool = True,
    empty_negative_text: str = "fill",
    seed: int = 0,
) -> datasets.DatasetDict:
    """mmE5's synthetic data (``intfloat/mmE5-synthetic``: Classification, Retrieval, VQA) per config.

    Same columns as MMEB-train; ``neg_text`` / ``neg_image_path`` hold lists (or their Python-literal
    strings), so by default every negative becomes a column (mmE5 scores them against their own
    query only: train with ``MultimodalInfoNCELoss(hard_negative_scope="own")``). ``image_root`` may
    be a list of directories, searched in order (mmE5's ``image_dir`` then ``laion_image_dir``).
    An empty negative text is filled as mmE5's loader does (``empty_negative_text="fill"``; ``"keep"``
    keeps an image-only negative), see the module docstring.
    """
    layout = "{source}/{config}/{split}*.parquet with columns qry, qry_image_path, pos_text, pos_image_path, neg_text, neg_image_path"
    return _load_vlm2vec_layout(
        source, configs, split, image_root, num_negatives, on_missing, verify_images, layout, empty_negative_text, seed
    )


# --------------------------------------------------------------------------------------------------
# M-BEIR


def _mbeir_input(entry_text: Any, entry_image: Any, checker: _ImageChecker, where: str) -> dict | None:
    text = _text_field(entry_text, f"{where} text") or None
    image = None
    if _text_field(entry_image, f"{where} image path"):
        image = checker.resolve(str(entry_image), where)
        if image is None:
            return None
    if text is None and image is None:
        raise ValueError(f"{where}: neither text nor image.")
    return make_input(text, image)


def load_mbeir(
    source: str | os.PathLike = MBEIR_REPO,
    query_files: Sequence[str] | None = None,
    candidate_pools: Sequence[str] | None = None,
    split: str = "train",
    instructions: str = "inline",
    num_negatives: int | None = 0,
    on_missing: str = "error",
    verify_images: bool = True,
    seed: int = 0,
    ids: bool = False,
) -> datasets.DatasetDict:
    """M-BEIR training data as one dataset per task (dataset x query modality x candidate modality).

    Args:
        source: the M-BEIR root (a local directory, or the Hub id, downloaded with ``snapshot_download``):
            ``query/{split}/*.jsonl`` (rows: ``qid``, ``query_txt``, ``query_img_path``,
            ``query_modality``, ``pos_cand_list``, ``neg_cand_list``; M-BEIR's ``query/train/mbeir_<dataset>_train.jsonl``
            mix a dataset's tasks, ``split="union_train"`` reads UniIR's ``mbeir_union_up_train.jsonl``),
            ``cand_pool/**/*.jsonl`` (rows: ``did``, ``txt``, ``img_path``, ``modality``),
            ``instructions/query_instructions.tsv``; image paths are relative to the root.
        query_files / candidate_pools: paths relative to the root (default: every file of the split /
            the split's pools, :func:`mbeir_pool_files`).
        instructions: ``"inline"``: UniIR's format, ``"{instruction} {query}"`` with one of the task's
            instructions drawn per query (seeded); ``"none"``: no instruction in the data; give
            per-task ``prompts`` to the trainer instead (see :func:`mbeir_instructions`), which the
            ``mmembed`` recipe renders as ``Instruct: ...\\nQuery: `` before the image; ``"row"``: the
            task's first instruction in the anchor's ``instruction`` field, rendered by the recipe's
            template as ``prompt=`` would be (:mod:`mm_st.inputs`), so tasks can share a batch.
        num_negatives: negative columns from ``neg_cand_list`` (wrapping around like UniIR).
        on_missing: ``"error"`` or ``"skip"`` rows whose images are missing or unreadable.
        ids: also return ``qid`` and ``positive_id`` string columns (e.g. for mining against the
            candidate pools by id; drop them before training).

    The first positive of ``pos_cand_list`` is the positive. Each row's task is its dataset id (the ``qid`` prefix),
    its query modality and its positive's modality (:func:`mbeir_task_name`), so a file mixing tasks splits into
    them. The pools are streamed and only the candidates the queries use are kept (the positives, and
    ``neg_cand_list`` when ``num_negatives`` asks for it). A row whose ``pos_cand_list`` names an
    id absent from the pools is an error that names the query and the id; a candidate id that two pool rows
    give different content is an error naming both files and rows. Modalities are read as the evaluation
    reads them (:func:`mbeir_modality`: ``text,image`` is ``image,text``).
    """
    _check_on_missing(on_missing)
    if instructions not in ("inline", "none", "row"):
        raise ValueError(f"instructions must be 'inline', 'none' or 'row', got {instructions!r}.")
    root = mbeir_root(source)
    layout = "query/{split}/*.jsonl, cand_pool/**/*.jsonl, instructions/query_instructions.tsv under the M-BEIR root"
    query_paths = [root / q for q in query_files] if query_files else mbeir_query_files(root, split)
    pool_paths = [root / p for p in candidate_pools] if candidate_pools else mbeir_pool_files(root, split)
    for kind, paths in (("query", query_paths), ("candidate pool", pool_paths)):
        if not paths:
            raise FileNotFoundError(f"No {kind} files of split {split!r} in {str(root)!r} (a pool named for another split "
                                    f"is not read, see mbeir_pool_files); expected {layout}.")
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"M-BEIR {kind} file not found: {str(path)!r}; expected {layout}.")
    pool = {row.data["did"]: row.data for row in pool_rows(pool_paths, _used_candidates(query_paths, num_negatives != 0))}
    table = {}
    if instructions in ("inline", "row"):
        tsv = root / "instructions" / "query_instructions.tsv"
        if not tsv.is_file():
            raise FileNotFoundError(f"M-BEIR instructions not found: {str(tsv)!r}; expected {layout}.")
        table = read_instructions(tsv)
    rng = random.Random(seed)
    checker = _ImageChecker([root], verify_images)
    tasks: dict[str, tuple[list, list]] = {}
    bad_rows, total = set(), 0
    for path in query_paths:
        entries = list(query_rows(path))
        for row in tqdm(entries, desc=f"Converting {path.name}", unit="query", disable=_quiet(entries)):
            total += 1
            entry, where = row.data, row.where(f"qid {row.data.get('qid')}")
            if not isinstance(entry.get("qid"), str) or not entry["qid"]:
                raise ValueError(f"{where}: missing or non-string 'qid'.")
            positives = _id_list(entry.get("pos_cand_list"), f"{where} pos_cand_list")
            if not positives:
                raise ValueError(f"{where}: empty pos_cand_list.")
            used = _id_list(entry.get("neg_cand_list"), f"{where} neg_cand_list") if num_negatives != 0 else []
            for did in positives[:1] + used:
                if did not in pool:
                    raise KeyError(f"{where}: candidate id {did!r} is in no candidate pool of split {split!r} "
                                   f"({file_list(root, pool_paths)} read; see mbeir_pool_files).")
            positive_entry = pool[positives[0]]
            dataset_id = str(entry["qid"]).split(":")[0]
            query_modality = entry.get("query_modality") or ""  # spelled as mbeir_modality spells it (query_rows)
            key = (dataset_id, query_modality, positive_entry.get("modality") or "")
            query_text = _text_field(entry.get("query_txt"), f"{where} query_txt") or ""
            if instructions in ("inline", "row") and key not in table:
                raise KeyError(f"{where}: no instruction for (dataset id, query modality, candidate modality) {key}.")
            if instructions == "inline":
                query_text = f"{rng.choice(table[key])} {query_text}".strip()
            before = len(checker.problems)
            anchor = _mbeir_input(query_text, entry.get("query_img_path"), checker, f"{where} query")
            positive = _mbeir_input(positive_entry.get("txt"), positive_entry.get("img_path"), checker, f"{where} positive {positives[0]}")
            row_negatives = []
            if num_negatives != 0:
                for did in entry.get("neg_cand_list") or []:
                    candidate = pool[did]
                    row_negatives.append(_mbeir_input(candidate.get("txt"), candidate.get("img_path"), checker, f"{where} negative {did}"))
            if len(checker.problems) > before:
                bad_rows.add((path.name, row.index))
                continue
            if instructions == "row":
                anchor = {**anchor, INSTRUCTION: table[key][0]}
            rows, negatives = tasks.setdefault(mbeir_task_name(*key), ([], []))
            rows.append({"anchor": anchor, "positive": positive, "qid": entry["qid"], "positive_id": positives[0]})
            negatives.append(row_negatives)
    _raise_or_report("M-BEIR", checker.problems, bad_rows, on_missing, total)
    id_columns = ("qid", "positive_id") if ids else ()
    return datasets.DatasetDict({name: _build(name, rows, negs, num_negatives, id_columns)
                                 for name, (rows, negs) in sorted(tasks.items())})


def _id_list(value: Any, where: str) -> list[str]:
    """A candidate id list (``pos_cand_list`` / ``neg_cand_list``): a JSON list of strings, or absent."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"{where}: must be a list of candidate id strings, got {value!r:.80}.")
    return value


def _used_candidates(query_paths: Sequence[Path], negatives: bool) -> set[str]:
    """The candidate ids the query files use: each first positive, and every ``neg_cand_list`` id with ``negatives``."""
    used: set[str] = set()
    for path in query_paths:
        for row in query_rows(path):
            entry, where = row.data, row.where(f"qid {row.data.get('qid')}")
            used.update(_id_list(entry.get("pos_cand_list"), f"{where} pos_cand_list")[:1])
            if negatives:
                used.update(_id_list(entry.get("neg_cand_list"), f"{where} neg_cand_list"))
    return used


def mbeir_candidate_pools(source: str | os.PathLike, split: str, on_missing: str = "error",
                          verify_images: bool = True) -> tuple[dict[str, list[dict]], int]:
    """(the candidate pools of ``split`` by dataset id (the did prefix), candidates dropped for a missing image).

    The pool files of :func:`mbeir_pool_files`: mining a training query never sees a validation or test pool. Every
    candidate's image is resolved inside the root and checked once (``entry["image"]``: its absolute path, None for
    a text): a missing or unreadable one is an error naming the pool file, row and id, or with
    ``on_missing="skip"`` the candidate is dropped and counted.
    """
    _check_on_missing(on_missing)
    root = mbeir_root(source)
    files = mbeir_pool_files(root, split)
    if not files:
        raise FileNotFoundError(f"No candidate pool file for split {split!r} under {str(root / 'cand_pool')!r} (a pool "
                                "named for no split, or for this one; see mbeir_pool_files).")
    checker = _ImageChecker([root.resolve()], verify_images)
    pools: dict[str, list[dict]] = {}
    bad, total = set(), 0
    for row in pool_rows(files):
        total += 1
        entry, image = row.data, None
        if _text_field(entry.get("img_path"), f"{row.where()} img_path"):
            image = checker.resolve(str(entry["img_path"]), row.where("candidate " + entry["did"]))
            if image is None:
                bad.add((row.file.name, row.index))
                continue
        pools.setdefault(entry["did"].split(":")[0], []).append({**entry, "image": image})
    _raise_or_report("M-BEIR candidate pool", checker.problems, bad, on_missing, total)
    return pools, len(bad)


# --------------------------------------------------------------------------------------------------
# Text retrieval pairs (MM-Embed's continual text-to-text stage)

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
        query, positive = (_text_field(row.get(c), f"{name} row {index} {c}") for c in columns)
        for column, value in zip(columns, (query, positive)):
            if not value or not value.strip():
                raise ValueError(f"{name} row {index}: empty or missing text in column {column!r}.")
        row_instruction = _text_field(row.get("instruction"), f"{name} row {index} instruction") or instruction
        out["anchor"].append({**make_input(query), INSTRUCTION: row_instruction})
        out["positive"].append(make_input(positive))
        if num_negatives:
            negatives = _as_list(row.get("negatives", row.get("negative")), f"{name} row {index} negatives")
            negatives = [n for n in negatives if n.strip()]
            if not negatives:
                raise ValueError(f"{name} row {index}: no negative text (num_negatives={num_negatives}).")
            negatives = (negatives + [negatives[-1]] * num_negatives)[:num_negatives]
            for k, text in enumerate(negatives, start=1):
                out[f"negative_{k}"].append(make_input(text))
    features = {column: INPUT_FEATURE for column in out}
    features["anchor"] = INSTRUCTED_INPUT_FEATURE
    return datasets.Dataset.from_dict(out, features=datasets.Features(features))


# --------------------------------------------------------------------------------------------------
# NLI (E5-V)

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
