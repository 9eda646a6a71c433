"""The one reader of an M-BEIR root: its query files, candidate pools and instructions.

Training (:func:`mm_st.data.load_mbeir`, :func:`~mm_st.data.converters.mbeir_candidate_pools`), MM-Embed's
mining and held-out queries (:mod:`mm_st.training.mmembed`, :mod:`mm_st.training.heldout`) and the evaluation
(:mod:`mm_st.evaluation.mbeir`, the union pool of :mod:`mm_st.evaluation.mbeir_global`) read M-BEIR rows here,
so they refuse the same rows with the same message:

- a candidate without a string ``did``, or one id that two pool rows give different content (the same candidate
  in two files, as in M-BEIR's union pool and a dataset's local pool, is read once);
- a modality other than ``text``, ``image`` or ``image,text`` (``text,image`` reads as ``image,text``);
- an image path (``img_path``, ``query_img_path``) that leaves its root: an absolute path or one whose ``..``
  climbs above it (:class:`~mm_st.io.PathOutsideRoot`). M-BEIR's image paths are relative to the root
  (``mbeir_images/...``); a symbolic link leaving the root is refused where the image is opened
  (:func:`mm_st.io.resolve_inside`).

Errors name the file, the row (counted from 0, as every M-BEIR message does) and, for the refusals above, the line.

Example:
    >>> import json, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "pool.jsonl")
    >>> _ = path.write_text(json.dumps({"did": "9:1", "img_path": "../../x.png", "modality": "image"}) + "\\n")
    >>> next(pool_rows([path]))
    Traceback (most recent call last):
    ...
    mm_st.io.PathOutsideRoot: pool.jsonl row 0 (candidate 9:1), line 1: image path '../../x.png' leaves the M-BEIR root (its image paths are relative to the root).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mm_st.data.emoji import EMOJI_MBEIR_DATASET
from mm_st.data.rows import jsonl_rows
from mm_st.io import PathOutsideRoot, hub_snapshot, is_local
from mm_st.modality import MBEIR_SPELLINGS, from_mbeir, to_letters, to_mbeir

MBEIR_REPO = "TIGER-Lab/M-BEIR"
# M-BEIR (UniIR) ids: the prefix of every qid / did names the source dataset.
MBEIR_DATASETS = {
    "0": "VisualNews", "1": "Fashion200K", "2": "WebQA", "3": "EDIS", "4": "NIGHTS",
    "5": "OVEN", "6": "InfoSeek", "7": "FashionIQ", "8": "CIRR", "9": "MSCOCO",
    EMOJI_MBEIR_DATASET[0]: EMOJI_MBEIR_DATASET[1],  # not UniIR's: the bundled emoji (MM-Embed's embedded default)
}  # fmt: skip
# M-BEIR's spelling of a modality -> the letters of its task names ("image,text" -> "it")
MBEIR_MODALITY_NAMES = {spelling: to_letters(modality) for modality, spelling in MBEIR_SPELLINGS.items()}
SPLIT_WORDS = ("train", "val", "test")  # the split words of M-BEIR's file names


@dataclass(frozen=True, slots=True)
class MBEIRRow:
    """One row of an M-BEIR jsonl file (``data``) and where it is: ``index`` counts the file's rows from 0,
    ``line`` its lines from 1 (blank lines are no rows)."""

    file: Path
    index: int
    line: int
    data: dict[str, Any]

    def where(self, what: str = "") -> str:
        """``<file> row <index> (<what>)``, as M-BEIR messages name a row."""
        return f"{self.file.name} row {self.index}" + (f" ({what})" if what else "")


def query_rows(path: Path) -> Iterator[MBEIRRow]:
    """The rows of one M-BEIR query file, one line at a time: ``query_modality`` spelled as :func:`mbeir_modality`
    spells it, ``query_img_path`` checked to stay inside the root."""
    for index, (line, data) in enumerate(jsonl_rows(path)):
        yield _checked(MBEIRRow(path, index, line, data), f"query {data.get('qid')}", "query_modality", "query_img_path")


def pool_rows(paths: Iterable[Path], keep: set[str] | None = None) -> Iterator[MBEIRRow]:
    """Every candidate of the pool files (of those in ``keep`` when given; the files are streamed, the others are
    only checked for a string ``did``), checked by :func:`candidate_rows`; an id that two rows give different
    content names both files, rows and lines. The same candidate in two files (M-BEIR's union pool and a dataset's
    local pool) is yielded once."""
    seen: dict[str, MBEIRRow] = {}
    for path in paths:
        for row in candidate_rows(path, keep):
            first = seen.setdefault(row.data["did"], row)
            if first is row:
                yield row
            elif first.data != row.data:
                raise ValueError(f"candidate id {row.data['did']!r} is in {first.where()} and in {row.where()} with "
                                 f"other content (lines {first.line} and {row.line}); a candidate id names one "
                                 "candidate in every pool file (fix or drop one).")


def candidate_rows(path: Path, keep: set[str] | None = None) -> Iterator[MBEIRRow]:
    """The rows of one pool file, one line at a time, repeated ids not looked for (see :func:`pool_rows`): an entry
    without a string ``did`` is refused naming file and row; ``modality`` and ``img_path`` are checked as the
    queries' are (those in ``keep`` when given; the others are skipped)."""
    for index, (line, data) in enumerate(jsonl_rows(path)):
        did = data.get("did")
        if not isinstance(did, str) or not did:
            raise ValueError(f"{path.name} row {index}: candidate without a string 'did' ({data!r:.80}).")
        if keep is None or did in keep:
            yield _checked(MBEIRRow(path, index, line, data), f"candidate {did}", "modality", "img_path")


def _checked(row: MBEIRRow, what: str, modality_field: str, image_field: str) -> MBEIRRow:
    """``row`` with its modality (when it has one) spelled as :func:`mbeir_modality` spells it, after checking that
    its image path stays inside the root."""
    _check_inside(row.data.get(image_field), row, what)
    value = row.data.get(modality_field)
    modality = _modality_or_none(value, row.where(what))
    return row if modality == value or modality is None else MBEIRRow(row.file, row.index, row.line,
                                                                      {**row.data, modality_field: modality})


def _check_inside(value: Any, row: MBEIRRow, what: str) -> None:
    """An image path that is absolute or climbs above its root is refused, naming file, row, line and path."""
    if not isinstance(value, str) or not value:
        return
    normal = os.path.normpath(value)
    if os.path.isabs(value) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise PathOutsideRoot(f"{row.where(what)}, line {row.line}: image path {value!r} leaves the M-BEIR root (its "
                              "image paths are relative to the root).")


def mbeir_modality(value: Any, where: str) -> str:
    """An M-BEIR modality as M-BEIR's code spells it: ``text``, ``image`` or ``image,text`` (``"text,image"`` and
    spaces read the same); anything else is an error naming ``where``. Training and evaluation read it alike
    (through :func:`mm_st.modality.from_mbeir`)."""
    return to_mbeir(from_mbeir(value, where))


def _modality_or_none(value: Any, where: str) -> Any:
    return None if value is None or value == "" else mbeir_modality(value, where)


def mbeir_task_name(dataset_id: str, query_modality: str, candidate_modality: str) -> str:
    """Name of one M-BEIR task, e.g. ``"MSCOCO_t2i"`` (dataset, query -> candidate modality)."""
    dataset = MBEIR_DATASETS.get(dataset_id, f"dataset{dataset_id}")
    q, c = MBEIR_MODALITY_NAMES.get(query_modality, query_modality), MBEIR_MODALITY_NAMES.get(candidate_modality, candidate_modality)
    return f"{dataset}_{q}2{c}"


# -- the root and its files ---------------------------------------------------------------------------------------


def mbeir_root(source: str | os.PathLike) -> Path:
    """The M-BEIR root ``source`` names: a local directory, or the Hub dataset's snapshot."""
    root = Path(source)
    if root.is_dir():
        return root
    if is_local(source):
        raise FileNotFoundError(f"M-BEIR directory {str(source)!r} does not exist.")
    return hub_snapshot(str(source))


def mbeir_query_files(root: Path, split: str) -> list[Path]:
    """The query files of ``split`` (``query/<split>/*.jsonl``), sorted."""
    return sorted((root / "query" / split).glob("*.jsonl"))


def _split_word(name: str, split: str) -> str | None:
    """The split a file's name is for (its ``_``-separated words: ``mbeir_union_test_cand_pool`` -> ``test``,
    ``union_train`` -> ``train``), or None when it names none."""
    words = Path(name).name.split(".")[0].split("_")
    return next((word for word in (*SPLIT_WORDS, split) if word in words), None)


def mbeir_pool_files(source: str | os.PathLike, split: str) -> list[Path]:
    """The candidate pool files under ``cand_pool/`` that serve ``split``: those whose name names no split (M-BEIR's
    local pools ``mbeir_<dataset>_task<k>_cand_pool.jsonl``) and those named for it (``*_train_*`` for ``train`` and
    ``union_train``). A pool named for another split is never read for this one: training never reads (nor mines)
    ``global/mbeir_union_test_cand_pool.jsonl``, a ``*_val_*`` pool or MSCOCO's test-only
    ``mbeir_mscoco_task<k>_test_cand_pool.jsonl``."""
    root = mbeir_root(source)
    wanted = _split_word(split, split) or split
    return [path for path in sorted((root / "cand_pool").rglob("*.jsonl")) if _split_word(path.name, wanted) in (None, wanted)]


def file_list(root: Path, paths: Sequence[Path], shown: int = 6) -> str:
    """``N file(s): a, b, ... (+k more)``, paths relative to ``root``."""
    names = [str(path.relative_to(root)) if path.is_relative_to(root) else str(path) for path in paths]
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return f"{len(names)} file(s): {', '.join(names[:shown])}{more}"


def read_instructions(path: Path) -> dict[tuple[str, str, str], list[str]]:
    """``query_instructions.tsv``: header, then query modality, candidate modality, dataset name,
    dataset id, prompts... (UniIR's reading: key = (dataset id, query modality, candidate modality))."""
    table: dict[tuple[str, str, str], list[str]] = {}
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    for number, line in enumerate(lines, start=2):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 5:
            raise ValueError(f"{str(path)!r} line {number}: expected at least 5 tab-separated fields, got {len(parts)}.")
        where = f"{str(path)!r} line {number}"
        key = (parts[3].strip(), mbeir_modality(parts[0], where), mbeir_modality(parts[1], where))
        table[key] = [p.strip() for p in parts[4:] if p.strip()]
    return table


def mbeir_instructions(source: str | os.PathLike, index: int = 0) -> dict[str, str]:
    """``{task name: instruction}`` from an M-BEIR root's ``query_instructions.tsv`` (the
    ``index``-th instruction of each task), for the trainer's per-dataset ``prompts``::

        prompts = {task: {"anchor": text} for task, text in mbeir_instructions(root).items()}
    """
    table = read_instructions(mbeir_root(source) / "instructions" / "query_instructions.tsv")
    return {mbeir_task_name(*key): prompts[min(index, len(prompts) - 1)] for key, prompts in table.items() if prompts}
