"""Evidence anyone can rerun: no machine's absolute path in the repository, reference scripts take their checkout."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A machine's own folders (`~/...` and `/tmp/...` are fine in docstrings and usage examples). This file's own
# sample paths below are the test's inputs; the scan skips this file.
MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/root/|/Users/|/home/\w+/|[A-Z]:\\\\Users\\\\)")


def tracked_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / name for name in names.stdout.splitlines() if (ROOT / name).is_file()]


def test_no_absolute_path_of_a_machine_in_the_repository():
    found = []
    for path in tracked_files():
        if path == Path(__file__).resolve():  # this file names the patterns
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # images, parquet
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert found == []


def test_the_pattern_finds_what_it_should():
    assert MACHINE_PATH.search("see /work/bench/run.log") and MACHINE_PATH.search("/home/alice/mmE5")
    assert not MACHINE_PATH.search("~/.cache/huggingface") and not MACHINE_PATH.search("../VLM2Vec/src")


@pytest.fixture()
def reference_common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "reference"))
    import common

    return common


@pytest.mark.parametrize("reference, marker", [("vlm2vec", "src/model/model.py"), ("mme5", "src/collator.py")])
def test_reference_scripts_refuse_a_folder_that_is_not_the_checkout(reference_common, tmp_path, reference, marker):
    with pytest.raises(SystemExit) as info:
        reference_common.import_upstream(tmp_path, reference)
    assert f"has no {marker}: pass the root of a" in str(info.value) and "benchmarks/reference/README.md" in str(info.value)
    assert "src" not in sys.modules


def test_reference_commit_comes_from_the_export_marker(reference_common, tmp_path):
    assert reference_common.upstream_commit(tmp_path).startswith("unknown (not a git clone")
    (tmp_path / "UPSTREAM_COMMIT").write_text(reference_common.PINNED["mme5"] + "\n", encoding="utf-8")
    assert reference_common.upstream_commit(tmp_path) == reference_common.PINNED["mme5"]


def test_pinned_commits_are_the_ones_the_readme_documents(reference_common):
    readme = (ROOT / "benchmarks" / "reference" / "README.md").read_text(encoding="utf-8")
    for reference, commit in reference_common.PINNED.items():
        assert re.fullmatch(r"[0-9a-f]{40}", commit), reference
        assert f"git -C ../{Path(reference_common.REPOSITORY[reference]).name} checkout {commit}" in readme


def test_mmeb_v2_cross_check_names_why_each_row_differs(reference_common):
    """benchmarks/reference/mmeb_v2.py: a row whose ids differ is put down to its text around the vision
    placeholders or to its vision grid, and to neither when both agree (the default run's check fails then)."""
    import mmeb_v2

    pad = 9  # the placeholder token's id

    class Tokenizer:
        def convert_tokens_to_ids(self, token):
            return pad if token == "<|image_pad|>" else 8

        def decode(self, ids):
            return " ".join(map(str, ids))

    reference = [{"ids": [pad, pad, 1, 2], "grid": [1, 2, 4], "paths": []},  # equal
                 {"ids": [pad, pad, 1, 2], "grid": [1, 2, 4], "paths": []},  # another text
                 {"ids": [pad, pad, 1, 2], "grid": [1, 2, 4], "paths": []},  # another grid
                 {"ids": [pad, pad, 1, 2], "grid": [1, 2, 4], "paths": []}]  # placeholders moved: neither
    mm_st = [{"ids": [pad, pad, 1, 2], "grid": [1, 2, 4]}, {"ids": [pad, pad, 1, 3], "grid": [1, 2, 4]},
             {"ids": [pad, 1, 2], "grid": [1, 2, 2]}, {"ids": [1, pad, pad, 2], "grid": [1, 2, 4]}]
    out = mmeb_v2.compare_side(reference, mm_st, Tokenizer())
    assert (out["ids_equal"], out["rows"], out["grids_equal"]) == (1, 4, 3)
    assert out["differing_rows_by_cause"] == {"text": 1, "grid": 1, "unexplained": 1}
    assert out["first_mismatch"]["row"] == 1
