"""Resuming and inputs of the training layer (issue 27): a run killed while a checkpoint is written resumes from
the last complete one, checkpoints are portable, inputs a user points at are never rewritten, changed inputs of a
finished run are named, and bad training data is refused at load time and in the dry run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mm_st.testing import tiny_model
from mm_st.training import VLM2VecConfig
from mm_st.training.cli import main
from mm_st.training.outputs import RunFolder, checkpoint_gaps, last_complete_checkpoint
from tests.recipe_data import write_classification

QUICK = ["--global-batch-size", "8", "--no-evaluate", "--adapter", "none", "--logging-steps", "1"]


@pytest.fixture(scope="module")
def backbone():
    return tiny_model("llava_next", head=False)


@pytest.fixture(scope="module")
def mmeb_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("user") / "data"
    write_classification(root, "TenLabels", labels=10, rows=40)
    return root


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
