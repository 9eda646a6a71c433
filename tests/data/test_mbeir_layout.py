"""M-BEIR's real file layout (TIGER-Lab/M-BEIR's names) end to end: which pools a split reads and mines,
``union_train``, and reading only the candidates the queries use (issue 28.5)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mm_st.data import load_mbeir
from mm_st.data import mbeir_pool_files
from mm_st.data.converters import mbeir_candidate_pools
from mm_st.data.rows import read_rows
from mm_st.testing import tiny_model
from mm_st.training import MMEmbedConfig
from mm_st.training.cli import main
from tests.recipe_data import HELD_OUT, write_real_mbeir

LOCAL = ["cand_pool/local/mbeir_mscoco_task0_cand_pool.jsonl", "cand_pool/local/mbeir_mscoco_task3_cand_pool.jsonl",
         "cand_pool/local/mbeir_webqa_task1_cand_pool.jsonl"]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    return write_real_mbeir(tmp_path_factory.mktemp("mbeir-real"))


def _ids(root, relative_paths):
    return {row["did"] for path in relative_paths for row in read_rows(root / path)}


def test_a_split_reads_its_own_pools_and_unnamed_local_pools(real):
    relative = lambda split: [str(p.relative_to(real)) for p in mbeir_pool_files(real, split)]  # noqa: E731
    assert relative("train") == relative("union_train") == LOCAL
    assert relative("test") == ["cand_pool/global/mbeir_union_test_cand_pool.jsonl", *LOCAL[:1],
                                "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl", *LOCAL[1:2],
                                "cand_pool/local/mbeir_mscoco_task3_test_cand_pool.jsonl", *LOCAL[2:]]
    assert relative("val") == ["cand_pool/global/mbeir_union_val_cand_pool.jsonl", *LOCAL]


def test_training_mines_no_validation_or_test_candidate(real):
    pools, dropped = mbeir_candidate_pools(real, "union_train")
    mined = {entry["did"] for pool in pools.values() for entry in pool}
    assert dropped == 0 and mined == _ids(real, LOCAL)  # old code: every pool file, the test union pool included
    assert not any(HELD_OUT in (entry["txt"] or entry["img_path"]) for pool in pools.values() for entry in pool)


def test_union_train_gives_the_per_dataset_files_tasks_and_rows(real):
    def rows(split):
        named = load_mbeir(real, split=split, instructions="row", ids=True)
        return {task: Counter(json.dumps(row, sort_keys=True, default=repr) for row in ds.data.to_pylist())
                for task, ds in named.items()}

    per_dataset, union = rows("train"), rows("union_train")
    assert sorted(per_dataset) == sorted(union) == ["MSCOCO_i2t", "MSCOCO_t2i", "WebQA_t2t"]
    assert union["MSCOCO_t2i"] == per_dataset["MSCOCO_t2i"] and union["MSCOCO_i2t"] == per_dataset["MSCOCO_i2t"]
    assert union["WebQA_t2t"] == per_dataset["WebQA_t2t"] + per_dataset["WebQA_t2t"]  # upsampled: each row twice
    assert sum(per_dataset["MSCOCO_t2i"].values()) == 8


def test_training_reads_no_test_pool_and_a_test_split_resolves_its_own(real, tmp_path):
    import shutil

    root = shutil.copytree(real, tmp_path / "mbeir")
    union_test = root / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl"
    with open(union_test, "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    assert len(load_mbeir(root, instructions="row")["WebQA_t2t"]) == 8  # the broken test pool is never opened
    with pytest.raises(ValueError, match=r"mbeir_union_test_cand_pool.jsonl' line 33: malformed JSON"):
        load_mbeir(root, split="test", instructions="row")
    union_test.write_text(union_test.read_text(encoding="utf-8").replace("{not json\n", ""), encoding="utf-8")
    named = load_mbeir(root, split="test", instructions="row", ids=True)
    assert {task: len(ds) for task, ds in named.items()} == {"MSCOCO_i2t": 8, "MSCOCO_t2i": 8, "WebQA_t2t": 8}
    assert named["MSCOCO_i2t"][0]["positive"]["text"].startswith(HELD_OUT)  # from the test-only local pool


def test_a_training_positive_only_in_a_test_pool_is_an_error_naming_the_files_read(real, tmp_path):
    query = {"qid": "9:9999", "query_txt": "x", "query_img_path": None, "query_modality": "text",
             "pos_cand_list": ["9:201"], "neg_cand_list": []}  # 9:201: only MSCOCO's test pool holds it
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(query) + "\n", encoding="utf-8")
    message = (r"q.jsonl row 0 \(qid 9:9999\): candidate id '9:201' is in no candidate pool of split 'train' \(3 file\(s\): "
               r"cand_pool/local/mbeir_mscoco_task0_cand_pool.jsonl, .* read")
    with pytest.raises(KeyError, match=message):
        load_mbeir(real, query_files=[str(path)], instructions="none")


def test_a_duplicate_candidate_id_with_other_content_is_refused_once_used(real, tmp_path):
    import shutil

    root = shutil.copytree(real, tmp_path / "mbeir")
    extra = {"did": "9:1", "txt": "another candidate", "img_path": None, "modality": "text"}
    with open(root / "cand_pool" / "local" / "mbeir_webqa_task1_cand_pool.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(extra) + "\n")
    with pytest.raises(ValueError, match=r"candidate id '9:1' is in mbeir_mscoco_task0_cand_pool.jsonl row 0 and in "
                                         r"mbeir_webqa_task1_cand_pool.jsonl row 8 with other content"):
        load_mbeir(root, instructions="none")


@pytest.mark.slow
def test_union_train_trains_both_stages_and_mines_only_training_pools(real, tmp_path, capsys):
    from mm_st.training.mmembed import read_mined

    argv = ["--model", tiny_model("llava_next", head=False), "--data", str(real), "--data-split", "union_train",
            "--stages", "1,2", "--no-evaluate", "--output-dir", str(tmp_path / "run"), "--max-steps", "2",
            "--global-batch-size", "4", "--adapter", "none", "--max-length", "64", "--num-negatives", "2"]
    assert main(MMEmbedConfig, argv) == 0
    printed = capsys.readouterr().out
    assert ("mined pools (split union_train): 3 file(s): cand_pool/local/mbeir_mscoco_task0_cand_pool.jsonl, "
            "cand_pool/local/mbeir_mscoco_task3_cand_pool.jsonl, cand_pool/local/mbeir_webqa_task1_cand_pool.jsonl; "
            "not mined (named for another split): 4 file(s): cand_pool/global/mbeir_union_test_cand_pool.jsonl") in printed
    assert (tmp_path / "run" / "stage2" / "model" / "modules.json").is_file()
    folder = tmp_path / "run" / "mined-negatives"
    record = json.loads((folder / "mining.json").read_text(encoding="utf-8"))
    assert sorted(record["counts"]) == ["MSCOCO_i2t", "MSCOCO_t2i", "WebQA_t2t"]
    negatives = [row[f"negative_{k}"] for task in record["counts"]
                 for row in read_mined(folder / f"{task}.parquet", real) for k in (1, 2)]
    assert len(negatives) == 2 * (8 + 8 + 16)
    content = [(n["text"] or "") + getattr(n["image"], "filename", "") for n in negatives]
    assert all(content) and not [c for c in content if HELD_OUT in c]


def test_a_root_with_only_test_pools_has_no_training_pool(real, tmp_path):
    import shutil

    root = shutil.copytree(real, tmp_path / "mbeir", ignore=shutil.ignore_patterns("images"))
    for path in LOCAL:
        (root / path).unlink()
    with pytest.raises(FileNotFoundError, match=r"No candidate pool files of split 'train' in .*a pool named for "
                                                r"another split is not read"):
        load_mbeir(root, instructions="none")
    with pytest.raises(FileNotFoundError, match="No candidate pool file for split 'union_train'"):
        mbeir_candidate_pools(root, "union_train")


def test_the_training_fingerprint_covers_the_training_pools_only(real, tmp_path):
    import shutil

    from mm_st.training.mmembed import mbeir_fingerprint

    root = shutil.copytree(real, tmp_path / "mbeir", ignore=shutil.ignore_patterns("images"))
    before = mbeir_fingerprint(str(root), "union_train")
    with open(root / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"did": "9:9999", "txt": "new", "img_path": None, "modality": "text"}) + "\n")
    assert mbeir_fingerprint(str(root), "union_train") == before
    with open(root / LOCAL[2], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"did": "2:9999", "txt": "new", "img_path": None, "modality": "text"}) + "\n")
    assert mbeir_fingerprint(str(root), "union_train") != before
