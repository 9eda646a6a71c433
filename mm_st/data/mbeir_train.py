"""M-BEIR training data: one dataset per task from an M-BEIR root read by :mod:`mm_st.data.mbeir`, and the
candidate pools with their images checked (MM-Embed's mining)."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from tqdm.auto import tqdm

from mm_st.data.columns import build_dataset, make_input, text_field
from mm_st.data.images import ImageChecker, check_on_missing, report_missing
from mm_st.data.mbeir import (
    MBEIR_REPO, file_list, mbeir_pool_files, mbeir_query_files, mbeir_root, mbeir_task_name, pool_rows, query_rows,
    read_instructions,
)
from mm_st.data.rows import quiet_progress
from mm_st.io import INSTRUCTION


def _mbeir_input(entry_text: Any, entry_image: Any, checker: ImageChecker, where: str) -> dict | None:
    text = text_field(entry_text, f"{where} text") or None
    image = None
    if text_field(entry_image, f"{where} image path"):
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
    check_on_missing(on_missing)
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
    checker = ImageChecker([root], verify_images)
    tasks: dict[str, tuple[list, list]] = {}
    bad_rows, total = set(), 0
    for path in query_paths:
        entries = list(query_rows(path))
        for row in tqdm(entries, desc=f"Converting {path.name}", unit="query", disable=quiet_progress(entries)):
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
            query_text = text_field(entry.get("query_txt"), f"{where} query_txt") or ""
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
    report_missing("M-BEIR", checker.problems, bad_rows, on_missing, total)
    id_columns = ("qid", "positive_id") if ids else ()
    return datasets.DatasetDict({name: build_dataset(name, rows, negs, num_negatives, id_columns)
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
    check_on_missing(on_missing)
    root = mbeir_root(source)
    files = mbeir_pool_files(root, split)
    if not files:
        raise FileNotFoundError(f"No candidate pool file for split {split!r} under {str(root / 'cand_pool')!r} (a pool "
                                "named for no split, or for this one; see mbeir_pool_files).")
    checker = ImageChecker([root.resolve()], verify_images)
    pools: dict[str, list[dict]] = {}
    bad, total = set(), 0
    for row in pool_rows(files):
        total += 1
        entry, image = row.data, None
        if text_field(entry.get("img_path"), f"{row.where()} img_path"):
            image = checker.resolve(str(entry["img_path"]), row.where("candidate " + entry["did"]))
            if image is None:
                bad.add((row.file.name, row.index))
                continue
        pools.setdefault(entry["did"].split(":")[0], []).append({**entry, "image": image})
    report_missing("M-BEIR candidate pool", checker.problems, bad, on_missing, total)
    return pools, len(bad)
