"""Resuming and inputs of the training layer (issue 27): a run killed while a checkpoint is written resumes from
the last complete one, checkpoints are portable, inputs a user points at are never rewritten, changed inputs of a
finished run are named, and bad training data is refused at load time and in the dry run."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from mm_st.testing import tiny_model
from mm_st.training import MMEmbedConfig, VLM2VecConfig
from mm_st.training.cli import main
from mm_st.training.outputs import RunFolder
from tests.recipe_data import tree_hashes, write_user_mbeir
from tests.training.test_users_data import backbone, mmeb_data  # noqa: F401  (its fixtures, shared)

QUICK = ["--global-batch-size", "8", "--no-evaluate", "--adapter", "none", "--logging-steps", "1"]


def _argv(backbone, data, out, *extra):
    return ["--model", backbone, "--data", str(data), "--image-root", str(data / "images"), "--data-configs",
            "TenLabels", "--output-dir", str(out), *QUICK, *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, backbone, mmeb_data):
    """A finished 4-step run with checkpoints at steps 2 and 4 (what the trainer writes, complete)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(VLM2VecConfig, _argv(backbone, mmeb_data, out, "--max-steps", "4", "--save-steps", "2")) == 0
    return out


def _losses(checkpoint: Path) -> dict[int, float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


def _as_killed(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run as a kill during its training leaves it: no model/, not marked finished."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "model")
    RunFolder(out).mark_unfinished()
    record = json.loads((out / "recipe_config.json").read_text(encoding="utf-8"))
    (out / "recipe_config.json").write_text(json.dumps({**record, "output_dir": str(out)}), encoding="utf-8")
    return out


# -- 1: a kill while a checkpoint is written ----------------------------------------------------------------------


def test_checkpoint_completeness_names_every_file_a_resume_needs(finished, tmp_path):
    from mm_st.training.outputs import checkpoint_gaps, last_complete_checkpoint

    complete = finished / "checkpoints" / "checkpoint-4"
    assert checkpoint_gaps(complete) == []
    # a kill right after the folder's first config file
    early = tmp_path / "checkpoint-6"
    early.mkdir()
    shutil.copy(complete / "config_sentence_transformers.json", early)
    assert {"modules.json", "optimizer.pt", "trainer_state.json", "rng_state.pth"} <= set(checkpoint_gaps(early))
    # trainer_state.json kept, weights and modules.json lost
    late = tmp_path / "checkpoint-4"
    shutil.copytree(complete, late)
    (late / "model.safetensors").unlink()
    (late / "modules.json").unlink()
    assert checkpoint_gaps(late) == ["modules.json", "model.safetensors or model.safetensors.index.json or "
                                     "adapter_model.safetensors"]
    # a state of another step (a copied folder) is not this checkpoint's
    shutil.copy(finished / "checkpoints" / "checkpoint-2" / "trainer_state.json", late)
    assert "a trainer_state.json of step 4" in checkpoint_gaps(late)
    chosen, skipped = last_complete_checkpoint(finished / "checkpoints")
    assert chosen == complete and skipped == {}


@pytest.mark.parametrize("keep", [("config_sentence_transformers.json",),
                                  ("config_sentence_transformers.json", "config.json", "trainer_state.json",
                                   "optimizer.pt", "scheduler.pt", "rng_state.pth")])
def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(finished, tmp_path, backbone,
                                                                                      mmeb_data, capsys, keep):
    from mm_st.training.outputs import checkpoint_gaps

    out = _as_killed(finished, tmp_path)
    newest = out / "checkpoints" / "checkpoint-4"
    for path in newest.iterdir():  # strip the newest checkpoint to what the kill left of it
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    capsys.readouterr()
    assert main(VLM2VecConfig, _argv(backbone, mmeb_data, out, "--max-steps", "4", "--save-steps", "2")) == 0
    printed = capsys.readouterr().out
    assert "checkpoint-4 is incomplete (lacks " in printed and "skipped and removed, resuming from checkpoint-2" in printed
    assert "resuming from " + str(out / "checkpoints" / "checkpoint-2") in printed
    assert (out / "model" / "modules.json").is_file() and checkpoint_gaps(newest) == []
    expected, got = _losses(finished / "checkpoints" / "checkpoint-4"), _losses(newest)
    assert sorted(got) == [1, 2, 3, 4]
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-5), (step, expected, got)


def test_resume_always_with_only_incomplete_checkpoints_names_them(finished, tmp_path, backbone, mmeb_data, capsys):
    out = _as_killed(finished, tmp_path)
    for name in ("checkpoint-2", "checkpoint-4"):
        (out / "checkpoints" / name / "trainer_state.json").unlink()
    argv = _argv(backbone, mmeb_data, out, "--max-steps", "4", "--save-steps", "2", "--resume", "always")
    assert main(VLM2VecConfig, argv) == 2
    err = capsys.readouterr().err
    assert "no complete checkpoint in" in err and "checkpoint-4 is incomplete (lacks trainer_state.json)" in err


# -- 5: checkpoints are as portable as model/ ---------------------------------------------------------------------


def test_checkpoints_carry_no_load_time_flags(finished):
    from mm_st.portable import local_state

    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        config = json.loads((finished / "checkpoints" / checkpoint / "tokenizer_config.json").read_text(encoding="utf-8"))
        assert "local_files_only" not in config and "is_local" not in config, checkpoint
        assert [f for f in local_state(finished / "checkpoints" / checkpoint) if "load-time" in f] == []


# -- 8: a batch of one without negatives ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls, flags, reason", [
    (VLM2VecConfig, [], "num_negatives 0"),
    (MMEmbedConfig, [], "stages 1 and 3 train on in-batch negatives only"),
    (MMEmbedConfig, ["--stages", "1,2"], "stage 1 trains on in-batch negatives only"),
    (MMEmbedConfig, ["--stages", "3"], "stage 3 trains on in-batch negatives only"),
])
def test_a_batch_of_one_without_negatives_is_refused_in_the_dry_run(tmp_path, capsys, cls, flags, reason):
    argv = ["--dry-run", "--global-batch-size", "1", "--output-dir", str(tmp_path / "run"), *flags]
    assert main(cls, argv) == 2
    assert f"global_batch_size 1 with no hard negatives ({reason}) gives each query no negative" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_batch_of_one_with_mined_negatives_is_allowed():
    MMEmbedConfig(stages=["2"], global_batch_size=1).check()  # stage 2's rows carry a mined negative


# -- 15: stages, BOM, modality spelling ----------------------------------------------------------------------------


def test_from_stage_outside_the_chosen_stages_is_an_error(tmp_path, capsys):
    assert main(MMEmbedConfig, ["--dry-run", "--stages", "2", "--from-stage", "1", "--output-dir", str(tmp_path)]) == 2
    assert "--from-stage 1 is not among --stages 2" in capsys.readouterr().err
    assert MMEmbedConfig(from_stage=2).stage_numbers() == [2, 3]


def test_a_text_pairs_csv_with_a_byte_order_mark_reads(tmp_path):
    from mm_st.data import load_text_pairs

    path = tmp_path / "pairs.csv"
    path.write_bytes("query,positive\nwhat is a cat,a small animal\n".encode("utf-8-sig"))
    assert load_text_pairs(str(path))[0]["anchor"]["text"] == "what is a cat"
    path.with_suffix(".jsonl").write_bytes(json.dumps({"query": "q", "positive": "p"}).encode("utf-8-sig") + b"\n")
    assert load_text_pairs(str(path.with_suffix(".jsonl")))[0]["anchor"]["text"] == "q"


def _pool_file(data: Path) -> Path:
    return data / "cand_pool" / "local" / "mbeir_user_train_cand_pool.jsonl"


def _append(path: Path, *rows: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


@pytest.fixture
def user_mbeir(tmp_path):
    """The user's M-BEIR layout with every query image present."""
    data = write_user_mbeir(tmp_path / "mbeir")
    shutil.copy(data / "images" / "0.png", data / "images" / "5.png")
    return data


def test_a_pool_modality_spelled_text_image_reads_as_image_text(user_mbeir):
    from mm_st.data import load_mbeir
    from mm_st.data.converters import mbeir_modality

    assert mbeir_modality("text, image", "x") == mbeir_modality("image,text", "x") == "image,text"
    _append(_pool_file(user_mbeir), {"did": "7:300", "txt": "a caption", "img_path": "images/1.png", "modality": "text,image"})
    _append(user_mbeir / "query" / "train" / "mbeir_user_task3_train.jsonl",
            {"qid": "7:2000", "query_txt": None, "query_img_path": "images/0.png", "query_modality": "image",
             "pos_cand_list": ["7:300"], "neg_cand_list": []})
    with open(user_mbeir / "instructions" / "query_instructions.tsv", "a", encoding="utf-8") as handle:
        handle.write("image\timage,text\tUser\t7\tFind the captioned picture.\n")
    named = load_mbeir(user_mbeir, instructions="row")
    assert len(named["FashionIQ_i2it"]) == 1
    assert named["FashionIQ_i2it"][0]["anchor"]["instruction"] == "Find the captioned picture."


# -- 9: a candidate id twice in the training pools ---------------------------------------------------------------


def test_a_duplicate_candidate_id_names_both_files_and_rows(user_mbeir, tmp_path, capsys):
    from mm_st.data import load_mbeir

    union = user_mbeir / "cand_pool" / "global" / "mbeir_union_train_cand_pool.jsonl"
    union.parent.mkdir()
    shutil.copy(_pool_file(user_mbeir), union)  # the same candidates in M-BEIR's union pool: fine
    assert len(load_mbeir(user_mbeir, instructions="row")["FashionIQ_i2t"]) == 12
    _append(user_mbeir / "cand_pool" / "local" / "mbeir_extra_train_cand_pool.jsonl",
            {"did": "7:3", "txt": "another candidate", "img_path": None, "modality": "text"})
    message = ("candidate id '7:3' is in mbeir_union_train_cand_pool.jsonl row 6 and in mbeir_extra_train_cand_pool.jsonl "
               "row 0 with other content")
    with pytest.raises(ValueError, match=message):
        load_mbeir(user_mbeir, instructions="row")
    argv = ["--dry-run", "--model", tiny_model("llava_next", head=False), "--data", str(user_mbeir), "--stages", "1,2",
            "--no-evaluate", "--output-dir", str(tmp_path / "run"), "--global-batch-size", "4", "--adapter", "none"]
    assert main(MMEmbedConfig, argv) == 2
    assert message in capsys.readouterr().err


# -- 13: a missing image in the mining pool ------------------------------------------------------------------------


def test_a_missing_pool_image_is_found_by_the_dry_run_and_skip_drops_it(user_mbeir, tmp_path, capsys):
    from mm_st.data.converters import mbeir_candidate_pools

    _append(_pool_file(user_mbeir), {"did": "7:200", "txt": None, "img_path": "images/gone.png", "modality": "image"})
    argv = ["--dry-run", "--model", tiny_model("llava_next", head=False), "--data", str(user_mbeir), "--stages", "1,2",
            "--no-evaluate", "--output-dir", str(tmp_path / "run"), "--global-batch-size", "4", "--adapter", "none"]
    assert main(MMEmbedConfig, argv) == 2
    err = capsys.readouterr().err
    assert "M-BEIR candidate pool: 1 image reference(s) missing or unreadable" in err
    assert "mbeir_user_train_cand_pool.jsonl row 18 (candidate 7:200): 'images/gone.png'" in err
    assert main(MMEmbedConfig, argv + ["--on-missing", "skip"]) == 0
    assert "mining pool: 1 candidate(s) with a missing or unreadable image dropped" in capsys.readouterr().out
    pools, dropped = mbeir_candidate_pools(user_mbeir, "train", "skip")
    assert dropped == 1 and len(pools["7"]) == 18 and "7:200" not in {e["did"] for e in pools["7"]}
    assert all(e["image"] is None or Path(e["image"]).is_absolute() for e in pools["7"])


# -- 2, 3, 4, 15: MM-Embed's inputs: shared mined negatives, edited data, its own folders --------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory, backbone):
    """Stages 1 and 2 of MM-Embed on a user's M-BEIR copy, run from the folder holding it with a relative --data."""
    home = tmp_path_factory.mktemp("first")
    data = write_user_mbeir(home / "mbeir")
    shutil.copy(data / "images" / "0.png", data / "images" / "5.png")
    argv = ["--model", backbone, "--data", "mbeir", "--stages", "1,2", "--no-evaluate", "--output-dir",
            str(home / "run"), "--max-steps", "2", "--global-batch-size", "4", "--adapter", "none", "--max-length", "64",
            "--mining-top-k", "10", "--logging-steps", "1"]
    cwd = Path.cwd()
    os.chdir(home)
    try:
        assert main(MMEmbedConfig, argv) == 0
    finally:
        os.chdir(cwd)
    return home, argv


def _reuse_argv(chain, out: Path, data: str, *extra: str) -> list[str]:
    home, argv = chain
    argv = list(argv)
    for flag, value in (("--data", data), ("--stages", "2"), ("--output-dir", str(out))):
        argv[argv.index(flag) + 1] = value
    return argv + ["--mining-model", str(home / "run" / "stage1" / "model"), "--mined-negatives",
                   str(home / "run" / "mined-negatives"), *extra]


def test_shared_mined_negatives_are_reused_from_another_working_directory(chain, tmp_path, monkeypatch, caplog):
    home, _ = chain
    shared = home / "run" / "mined-negatives"
    before = tree_hashes(shared)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(home / "mbeir", elsewhere / "copy-of-mbeir")  # the same data, another place
    monkeypatch.chdir(elsewhere)
    with caplog.at_level(logging.INFO, logger="mm_st.training.mmembed"):
        assert main(MMEmbedConfig, _reuse_argv(chain, tmp_path / "run", "copy-of-mbeir")) == 0
    assert "stage 2: reusing the mined negatives" in caplog.text
    assert (tmp_path / "run" / "stage2" / "model" / "modules.json").is_file()
    assert tree_hashes(shared) == before
    # the saved paths are relative to the data root, never this machine's folders
    import pyarrow.parquet as pq

    table = pq.read_table(next(shared.glob("*.parquet"))).to_pylist()
    paths = [row[c]["image"]["path"] for row in table for c in row if isinstance(row[c], dict) and row[c].get("image")]
    assert paths and all(p.startswith("images/") for p in paths), paths[:3]


@pytest.mark.parametrize("dry_run", [True, False])
def test_mined_negatives_of_other_settings_are_an_error_and_never_rewritten(chain, tmp_path, capsys, dry_run):
    home, _ = chain
    shared = home / "run" / "mined-negatives"
    before = tree_hashes(shared)
    argv = _reuse_argv(chain, tmp_path / "run", str(home / "mbeir"), "--mining-top-k", "5")
    assert main(MMEmbedConfig, (["--dry-run"] if dry_run else []) + argv) == 2
    err = capsys.readouterr().err
    assert f"--mined-negatives {str(shared)!r} holds negatives mined with other settings (top_k: 10 in the folder, 5 for " \
           "this run)" in err and "read, never rewritten" in err
    assert tree_hashes(shared) == before


def test_mined_negatives_of_another_false_negative_filter_are_an_error(chain, tmp_path, capsys):
    home, _ = chain
    argv = _reuse_argv(chain, tmp_path / "run", str(home / "mbeir"), "--mining-relative-margin", "0.1")
    assert main(MMEmbedConfig, ["--dry-run", *argv]) == 2
    assert "holds negatives mined with other settings (relative_margin: 0.05 in the folder, 0.1 for this run)" in \
        capsys.readouterr().err


def test_a_folder_of_other_files_is_no_set_of_mined_negatives(chain, tmp_path, capsys):
    home, _ = chain
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine", encoding="utf-8")
    argv = _reuse_argv(chain, tmp_path / "run", str(home / "mbeir"))
    argv[argv.index("--mined-negatives") + 1] = str(tmp_path / "mine")
    assert main(MMEmbedConfig, argv) == 2
    assert "holds files but no mining.json" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_data_edited_after_a_finished_run_is_named(chain, capsys, monkeypatch):
    home, argv = chain
    monkeypatch.chdir(home)
    pool = _pool_file(home / "mbeir")
    original = pool.read_bytes()
    try:
        pool.write_bytes(original.replace(b"A long caption about", b"An edited caption about", 1))
        assert main(MMEmbedConfig, argv) == 2
        err = capsys.readouterr().err
        assert f"mmembed: stage 1 in {str(home / 'run')!r} finished on other inputs: the M-BEIR data (--data mbeir) " \
               "changed since it ran" in err and "--from-stage 1" in err
        assert main(MMEmbedConfig, ["--dry-run", *argv]) == 2
    finally:
        pool.write_bytes(original)
    assert main(MMEmbedConfig, argv) == 0
    assert capsys.readouterr().out.count("holds this run, finished") == 2


def test_a_users_own_mined_negatives_folder_is_refused_before_stage_1(tmp_path, backbone, user_mbeir, capsys):
    out = tmp_path / "run"
    (out / "mined-negatives").mkdir(parents=True)
    argv = ["--model", backbone, "--data", str(user_mbeir), "--stages", "1,2", "--no-evaluate", "--output-dir", str(out),
            "--max-steps", "2", "--global-batch-size", "4", "--adapter", "none"]
    for dry in (["--dry-run"], []):
        assert main(MMEmbedConfig, dry + argv) == 2
        assert f"{str(out / 'mined-negatives')!r} exists and was not written by an mm_st run" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == ["mined-negatives"]
