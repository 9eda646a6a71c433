"""Reading the rows of a data file (parquet, jsonl, json, csv, tsv); bad input names the file and line.

:func:`read_rows` returns every row of a file; :func:`jsonl_rows` reads a jsonl file one line at a time and gives
each row's line number. A malformed line, bytes that are not UTF-8
or a row that is not an object is a ``ValueError`` naming the file and line (the row, for a JSON list).

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "rows.jsonl")
    >>> _ = path.write_text('{"a": 1}\\n\\n{"a": 2}\\n')
    >>> read_rows(path), list(jsonl_rows(path))
    ([{'a': 1}, {'a': 2}], [(1, {'a': 1}), (3, {'a': 2})])
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROW_FILE_TYPES = (".parquet", ".jsonl", ".json", ".csv", ".tsv")


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
