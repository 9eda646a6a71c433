"""Reading the rows of a data file (parquet, jsonl, json, csv, tsv); bad input names the file and line.

:func:`read_rows` returns every row of a file; :func:`jsonl_rows` reads a jsonl file one line at a time and gives
each row's line number. A malformed line, bytes that are not UTF-8
or a row that is not an object is a ``ValueError`` naming the file and line (the row, for a JSON list).
:func:`config_rows` reads one config / split of a dataset laid out as on the Hub (a local directory or a Hub id), and
:func:`row_origin` names the file a row of it came from.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "rows.jsonl")
    >>> _ = path.write_text('{"a": 1}\\n\\n{"a": 2}\\n')
    >>> read_rows(path), list(jsonl_rows(path))
    ([{'a': 1}, {'a': 2}], [(1, {'a': 1}), (3, {'a': 2})])
"""

from __future__ import annotations

import bisect
import csv
import glob
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mm_st.io import is_local

ROW_FILE_TYPES = (".parquet", ".jsonl", ".json", ".csv", ".tsv")
PROGRESS_MIN_ROWS = 1000  # show a progress bar from this many rows on


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (spreadsheet exports) is not part of the first column
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{str(path)!r} line {line}: not valid UTF-8 ({exc.reason} at byte {exc.start}).") from exc


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` of a jsonl file, one line at a time (blank lines skipped); a malformed line,
    non-UTF-8 bytes or a row that is not an object name the file and line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{str(path)!r} line {number}: not valid UTF-8 ({exc.reason}).") from exc
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{str(path)!r} line {number}: malformed JSON ({exc.msg}).") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{str(path)!r} line {number}: a row must be a JSON object, got {type(row).__name__}.")
            yield number, row


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of one file; a malformed line, non-UTF-8 bytes or a row that is not an object name the file and line."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [row for _, row in jsonl_rows(path)]
    if path.suffix == ".json":
        try:
            rows = json.loads(_decode(path, path.read_bytes()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{str(path)!r} line {exc.lineno}: malformed JSON ({exc.msg}).") from exc
        if not isinstance(rows, list):
            raise ValueError(f"{str(path)!r}: expected a JSON list of row objects, got {type(rows).__name__}.")
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"{str(path)!r} row {index}: a row must be a JSON object, got {type(row).__name__}.")
        return rows
    if path.suffix in (".csv", ".tsv"):
        text = _decode(path, path.read_bytes())
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if path.suffix == ".tsv" else ","))
    raise ValueError(f"Unsupported file type {path.suffix!r}: {str(path)!r} (use {', '.join(t[1:] for t in ROW_FILE_TYPES)}).")


def quiet_progress(rows: Sequence[Any]) -> bool:
    """No progress bar for a small file, nor when datasets' bars are off (a recipe's console without --verbose)."""
    from datasets.utils import are_progress_bars_disabled

    return len(rows) < PROGRESS_MIN_ROWS or are_progress_bars_disabled()


Spans = list[tuple[int, str]]  # (first row index, file name) of each file a config's rows came from


def row_origin(spans: Spans, index: int) -> str:
    """The file of the ``index``-th row of a config (files concatenated in order), with its own row number
    when the config has several files."""
    start, label = spans[bisect.bisect_right([first for first, _ in spans], index) - 1]
    return label if len(spans) == 1 else f"{label} row {index - start}"


def config_rows(source: str | os.PathLike, config: str, split: str, layout: str) -> tuple[list[dict[str, Any]], Spans]:
    """Rows of one config/split from ``source/config/split*.{parquet,jsonl,json}``, a
    ``save_to_disk`` folder ``source/config[/split]``, or the Hub dataset ``source``, with the file spans."""
    import datasets

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
