"""The one M-BEIR reader (mm_st.data.mbeir): training, MM-Embed's mining and the evaluation read an M-BEIR root
through it and refuse the same rows with the same message, naming file, row and line (issue 31, item 4)."""

from __future__ import annotations

import ast
import re
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

import mm_st
import mm_st.evaluation as E
from mm_st.data import load_mbeir
from mm_st.data.converters import mbeir_candidate_pools
from mm_st.data.mbeir import pool_rows, query_rows
from mm_st.evaluation.mbeir_global import global_tasks
from mm_st.io import PathOutsideRoot
from mm_st.training.mmembed import _listed_positives

POOL = "cand_pool/local/mbeir_nights_task4_cand_pool.jsonl"  # a local pool: read by every split's training and test
UNION = E.mbeir.UNION_POOL.format(split="test")
QUERIES = "query/{split}/mbeir_nights_task4_{split}.jsonl"


def _write(path: Path, rows: list[dict]) -> None:
    """One blank line first, so that a row's line (its number + 2) is not its row number + 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n" + "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _layout(root: Path, candidate: dict | None = None, query: dict | None = None, extra: dict | None = None) -> Path:
    """NIGHTS_i2i (images to images) with one query per split whose positive is candidate 4:0; ``candidate`` /
    ``query`` change row 0 of the pool / of both query files, ``extra`` is appended to the pool."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (4, 4), (60 * i, 0, 0)).save(root / "images" / f"{i}.png")
    pool = [{"did": f"4:{i}", "txt": None, "img_path": f"images/{i}.png", "modality": "image"} for i in range(3)]
    pool[0].update(candidate or {})
    _write(root / POOL, pool + ([extra] if extra else []))
    row = {"qid": "4:10", "query_txt": None, "query_img_path": "images/1.png", "query_modality": "image",
           "pos_cand_list": ["4:0"], "neg_cand_list": [], **(query or {})}
    for split in ("train", "test"):
        _write(root / QUERIES.format(split=split), [row])
    return root


def _union_pool_task(root: Path):
    """NIGHTS_i2i's union-pool task, its union pool a copy of the local pool (streamed into the on-disk pool)."""
    (root / UNION).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / POOL, root / UNION)
    task = global_tasks(["NIGHTS_i2i"], data=root, cache_dir=root.parent / "cache")[0]
    task.load_data()
    return task


READERS = {
    "training": lambda root: load_mbeir(root, instructions="none"),
    "mining pools": lambda root: mbeir_candidate_pools(root, "train"),
    "mining queries": lambda root: _listed_positives(root, "train"),
    "evaluation": lambda root: E.mbeir_tasks(["NIGHTS_i2i"], data=root)[0].load_data(),
    "union pool": _union_pool_task,
}
POOL_READERS = ("training", "mining pools", "evaluation", "union pool")
QUERY_READERS = ("training", "mining queries", "evaluation", "union pool")


def _pool_file(reader: str) -> str:
    """The pool file that ``reader`` names: the union pool's copy for the union-pool task."""
    return Path(UNION if reader == "union pool" else POOL).name


def test_the_layout_reads_without_error(tmp_path):
    root = _layout(tmp_path / "mbeir")
    assert len(load_mbeir(root, instructions="none")["NIGHTS_i2i"]) == 1
    assert [e["did"] for e in mbeir_candidate_pools(root, "train")[0]["4"]] == ["4:0", "4:1", "4:2"]
    assert _listed_positives(root, "train") == {"4:10": ["4:0"]}
    task = E.mbeir_tasks(["NIGHTS_i2i"], data=root)[0]
    task.load_data()
    assert task.candidate_counts == {"pool": 3, "queries": 1}


@pytest.mark.parametrize("reader", POOL_READERS)
def test_a_duplicate_candidate_id_is_refused_alike(tmp_path, reader):
    other = {"did": "4:0", "txt": None, "img_path": "images/2.png", "modality": "image"}
    root = _layout(tmp_path / "mbeir", extra=other)
    name = _pool_file(reader)
    message = rf"candidate id '4:0' is in {name} row 0 and in {name} row 3 with other content \(lines 2 and 5\)"
    with pytest.raises(ValueError, match=message):
        READERS[reader](root)


@pytest.mark.parametrize("reader", POOL_READERS)
@pytest.mark.parametrize("path", ["../../x.png", "images/../../x.png", "/etc/hostname"])
def test_a_candidate_image_path_leaving_the_root_is_refused_alike(tmp_path, reader, path):
    root = _layout(tmp_path / "mbeir", candidate={"img_path": path})
    message = rf"^{_pool_file(reader)} row 0 \(candidate 4:0\), line 2: image path '{re.escape(path)}' leaves the M-BEIR"
    with pytest.raises(PathOutsideRoot, match=message):
        READERS[reader](root)


@pytest.mark.parametrize("reader", QUERY_READERS)
def test_a_query_image_path_leaving_the_root_is_refused_alike(tmp_path, reader):
    root = _layout(tmp_path / "mbeir", query={"query_img_path": "../../x.png"})
    message = (r"^mbeir_nights_task4_(train|test).jsonl row 0 \(query 4:10\), line 2: image path '\.\./\.\./x\.png' "
               r"leaves the M-BEIR root")
    with pytest.raises(PathOutsideRoot, match=message):
        READERS[reader](root)


def test_the_reader_spells_modalities_once_and_reads_a_repeated_candidate_once(tmp_path):
    root = _layout(tmp_path / "mbeir", candidate={"txt": "a red square", "modality": "text, image"},
                   query={"query_modality": "text,image", "query_txt": "like this"})
    first = next(pool_rows([root / POOL]))
    assert (first.file.name, first.index, first.line, first.data["modality"]) == (POOL.split("/")[-1], 0, 2, "image,text")
    assert next(query_rows(root / QUERIES.format(split="test"))).data["query_modality"] == "image,text"
    twice = [row.data["did"] for row in pool_rows([root / POOL, root / POOL])]
    assert twice == ["4:0", "4:1", "4:2"]  # the same candidate in two files (union + local pool) is one candidate


def test_an_identical_copy_of_a_candidate_is_read_once_by_the_evaluation_and_the_union_pool(tmp_path):
    copy = {"did": "4:0", "txt": None, "img_path": "images/0.png", "modality": "image"}  # row 0 again
    root = _layout(tmp_path / "mbeir", extra=copy)
    local = E.mbeir_tasks(["NIGHTS_i2i"], data=root)[0]
    local.load_data()
    union = _union_pool_task(root)
    assert local.candidate_counts == union.candidate_counts == {"pool": 3, "queries": 1}
    assert union.dataset["default"]["test"]["corpus"]["id"] == ["4:0", "4:1", "4:2"]
    assert dict(union.pool_modalities["test"].items()) == {"4:0": "image", "4:1": "image", "4:2": "image"}


def _private_imports() -> set[str]:
    """``<module>: <imported module>.<name>`` of every private name a module of mm_st imports from another."""
    package = Path(mm_st.__file__).parent
    found = set()
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mm_st"):
                found |= {f"{path.relative_to(package)}: {node.module}.{alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")}
    return found


def test_no_module_imports_a_private_name_of_another():
    """What one module of mm_st uses of another is public (the readers, the evaluation's file table, the config's
    field helper): no module imports another's private name."""
    assert _private_imports() == set()
