"""The training layer on real users' data shapes (issue 19): inputs are never removed, small candidate pools
train, finished runs stay finished, non-finite runs save nothing, and bad input is an `error:` naming it."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import typing
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mm_st.testing import tiny_model
from mm_st.training import CONFIGS, E5VConfig, MME5Config, VLM2VecConfig, load_config
from mm_st.training import embedded
from mm_st.training.cli import main
from mm_st.training.config import field_range
from tests.recipe_data import CLASSIFY, listing, tree_hashes, write_classification, write_rows

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--max-steps", "2", "--save-steps", "2", "--global-batch-size", "8", "--no-evaluate", "--adapter", "none",
         "--logging-steps", "1"]


@pytest.fixture(scope="module")
def backbone():
    return tiny_model("llava_next", head=False)


@pytest.fixture(scope="module")
def mmeb_data(tmp_path_factory):
    """A user's MMEB-train-layout folder: an ImageNet_1K-like config with 10 labels (40 rows)."""
    root = tmp_path_factory.mktemp("user") / "data"
    write_classification(root, "TenLabels", labels=10, rows=40)
    return root


def _user_run(backbone, data, out, *extra):
    return ["--model", backbone, "--data", str(data), "--image-root", str(data / "images"), "--data-configs",
            "TenLabels", "--output-dir", str(out), *QUICK, *extra]


# -- 1, 2: data loss ------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_never_in_a_project_folder_leaves_the_users_data_byte_identical(tmp_path, backbone, mmeb_data, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(mmeb_data, project / "data")
    (project / "notes.txt").write_text("my notes", encoding="utf-8")
    before = tree_hashes(project)
    monkeypatch.chdir(project)
    argv = ["--model", backbone, "--data", "data", "--image-root", "data/images", "--data-configs", "TenLabels",
            "--output-dir", ".", *QUICK]
    assert main(VLM2VecConfig, argv + ["--resume", "never"]) == 0  # nothing of an earlier run here: nothing removed
    assert (project / "model" / "modules.json").is_file()
    assert main(VLM2VecConfig, argv + ["--resume", "never", "--seed", "7"]) == 0  # removes only the first run's outputs
    after = tree_hashes(project)
    assert {k: v for k, v in after.items() if k.startswith("data/") or k == "notes.txt"} == before


@pytest.mark.slow
def test_resume_never_refuses_to_remove_the_model_it_continues_from(tmp_path, backbone, mmeb_data, capsys):
    run = tmp_path / "runs" / "x"
    assert main(VLM2VecConfig, _user_run(backbone, mmeb_data, run)) == 0
    model_before = tree_hashes(run / "model")
    argv = _user_run(str(run / "model"), mmeb_data, run, "--resume", "never")
    assert main(VLM2VecConfig, argv) == 2
    err = capsys.readouterr().err
    assert f"--resume never would remove '{run / 'model'}', which this run reads (--model {run / 'model'})" in err
    assert "Nothing was removed" in err
    assert tree_hashes(run / "model") == model_before


def test_embedded_run_refuses_to_write_into_a_folder_it_did_not_create(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.csv").write_text("a,b\n", encoding="utf-8")
    assert main(E5VConfig, ["--dry-run", "--output-dir", str(tmp_path)]) == 2
    assert f"'{tmp_path / 'data'}' exists and was not written by an mm_st run" in capsys.readouterr().err
    assert listing(tmp_path) == ["data", "data/mine.csv"]


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--resume", "always"], "--resume always: no complete checkpoint in"),
    (["--eval-languages", "xx"], "The embedded evaluation has no language 'xx'"),
])
def test_a_run_failing_before_its_first_step_leaves_the_folder_as_it_was(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(VLM2VecConfig, ["--output-dir", str(out), "--max-steps", "1", *flags]) == 2
    assert message in capsys.readouterr().err
    assert listing(out) == []
    # and a folder with an earlier finished run keeps exactly what it had
    assert main(VLM2VecConfig, ["--output-dir", str(out), "--max-steps", "1", "--global-batch-size", "8", "--no-evaluate",
                                "--max-rows-per-dataset", "16"]) == 0
    before = tree_hashes(out)
    assert main(VLM2VecConfig, ["--output-dir", str(out), "--max-steps", "1", "--global-batch-size", "8",
                                "--max-rows-per-dataset", "16", "--seed", "5", "--eval-languages", "xx"]) == 2
    assert tree_hashes(out) == before


# -- 3: mmE5 mining on small pools ------------------------------------------------------------------


@pytest.mark.slow
def test_mme5_ten_labels_mines_with_the_fallback_and_says_so(tmp_path, backbone, mmeb_data, capsys, caplog):
    argv = _user_run(backbone, mmeb_data, tmp_path / "run", "--no-synthetic")
    assert main(MME5Config, ["--dry-run", *argv]) == 0
    printed = capsys.readouterr().out
    assert "reads: MMEB-train" in printed and "mmE5-synthetic" not in printed.split("config (source")[0]
    assert ("TenLabels: pool of 10 distinct positives has no rank 70: every row takes its lowest-ranked non-positive "
            "candidate (rank <= 9; fallback)") in printed
    with caplog.at_level(logging.INFO, logger="mm_st.training.mme5"):
        assert main(MME5Config, argv) == 0
    assert "TenLabels: mined the rank-70 negative for 0 of 40 rows; 40 used the fallback" in caplog.text
    assert (tmp_path / "run" / "model" / "modules.json").is_file()


def test_mme5_fallback_negative_is_the_lowest_ranked_candidate(backbone, mmeb_data, tmp_path):
    from mm_st import build_model
    from mm_st.data import load_mmeb_train

    ds = load_mmeb_train(str(mmeb_data), ["TenLabels"], image_root=str(mmeb_data / "images"))["TenLabels"]
    config = MME5Config(model=backbone, data=str(mmeb_data), image_root=str(mmeb_data / "images"), synthetic=False)
    model = build_model(backbone, recipe="mme5")
    mined = config._mine(model, "TenLabels", ds, tmp_path / "cache")
    labels = sorted({row["text"] for row in ds["positive"]})
    label_vectors = model.encode_document([{"text": t, "image": None} for t in labels], convert_to_tensor=True)
    for row in mined.select(range(5)):
        query = model.encode_query([row["anchor"]], convert_to_tensor=True)[0]
        scores = {t: float(query @ v) for t, v in zip(labels, label_vectors)}
        others = sorted((s, t) for t, s in scores.items() if t != row["positive"]["text"])
        assert row["negative_1"]["text"] == others[0][1]  # the lowest-scoring non-positive label
        assert row["negative_1"] == row["negative_2"] == row["negative_3"]  # padded to 3 as mmE5 pads


def test_mme5_dataset_with_one_distinct_positive_is_an_error_before_any_model_loads(tmp_path, backbone, capsys):
    data = tmp_path / "data"
    write_classification(data, "OneLabel", labels=1, rows=12)
    argv = ["--model", backbone, "--data", str(data), "--image-root", str(data / "images"), "--data-configs", "OneLabel",
            "--no-synthetic", "--output-dir", str(tmp_path / "run"), *QUICK]
    assert main(MME5Config, ["--dry-run", *argv]) == 2
    assert "mme5: dataset OneLabel has a single distinct positive, so mining finds no negative" in capsys.readouterr().err


@pytest.mark.slow
def test_mme5_small_pool_mixed_with_synthetic_data_trains(tmp_path, backbone, mmeb_data):
    synthetic = embedded.write_mme5_synthetic(tmp_path / "synthetic", configs=["Retrieval"], limit=24)
    argv = _user_run(backbone, mmeb_data, tmp_path / "run", "--synthetic-data", str(synthetic), "--synthetic-image-root",
                     str(synthetic / "images"), "--synthetic-configs", "Retrieval")
    assert main(MME5Config, argv) == 0


# -- 4, 5: finished runs, non-finite runs, ranges ------------------------------------------------------


@pytest.mark.slow
def test_rerunning_a_finished_command_changes_nothing_and_the_console_is_clean(tmp_path, capfd, xtd):
    # evaluated (before and after) on the 12 held-out emoji of the `xtd` fixture, not the embedded default's 391
    argv = ["--output-dir", str(tmp_path / "run"), "--max-steps", "2", "--global-batch-size", "8",
            "--max-rows-per-dataset", "16", "--eval-data", str(xtd), "--eval-languages", "en",
            "--lr-scheduler-type", "constant"]
    assert main(VLM2VecConfig, argv) == 0
    first = capfd.readouterr()
    for noise in ("LOAD REPORT", "UNEXPECTED", "warmup_ratio"):
        assert noise not in first.out + first.err
    weights = tree_hashes(tmp_path / "run" / "model")
    checkpoints = tree_hashes(tmp_path / "run" / "checkpoints")
    assert main(VLM2VecConfig, argv) == 0
    assert "holds this run, finished (2 steps)" in capfd.readouterr().out
    assert tree_hashes(tmp_path / "run" / "model") == weights
    assert tree_hashes(tmp_path / "run" / "checkpoints") == checkpoints


@pytest.mark.slow
def test_a_run_that_diverges_stops_at_the_step_and_saves_no_non_finite_weights(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--output-dir", str(out), "--max-steps", "4", "--save-steps", "1", "--global-batch-size", "8",
            "--max-rows-per-dataset", "16", "--no-evaluate", "--learning-rate", "1e30", "--max-grad-norm", "0"]
    assert main(VLM2VecConfig, argv) == 2
    err = capsys.readouterr().err
    assert "error: step " in err and "non-finite" in err and "nothing of this step was saved" in err
    assert not (out / "model" / "modules.json").exists()
    for weights in out.rglob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(weights)).values()), weights


def test_finite_guard_names_the_step_and_tensor():
    from mm_st.training.stage import FiniteGuard, TrainingDiverged

    layer = torch.nn.Linear(2, 2)
    guard = FiniteGuard(layer)
    layer.weight.grad = torch.tensor([[1.0, float("nan")], [0.0, 0.0]])
    state = type("State", (), {"global_step": 6})()
    with pytest.raises(TrainingDiverged, match=r"^step 7: non-finite gradient of weight"):
        guard.on_pre_optimizer_step(None, state, None)
    with torch.no_grad():
        layer.bias[0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"^step 7: the optimizer step made bias non-finite"):
        guard.on_optimizer_step(None, state, None)


@pytest.mark.parametrize("cls", list(CONFIGS.values()))
def test_every_numeric_field_has_a_valid_range(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or [hints[f.name]]
        if base[0] in (int, float):
            assert field_range(f) is not None, f.name


@pytest.mark.parametrize("flags, message", [
    (["--learning-rate", "inf"], "learning_rate must be > 0, got inf"),
    (["--learning-rate", "nan"], "learning_rate must be > 0, got nan"),
    (["--global-batch-size", "1"], "global_batch_size 1 with no hard negatives (num_negatives 0) gives each query no negative"),
    (["--max-text-tokens", "-3"], "max_text_tokens must be >= 1, got -3"),
    (["--max-length", "0"], "max_length must be >= 1, got 0"),
    (["--lora-alpha", "-16"], "lora_alpha must be > 0, got -16"),
    (["--max-grad-norm", "-1"], "max_grad_norm must be >= 0, got -1.0"),
    (["--weight-decay", "-0.1"], "weight_decay must be >= 0, got -0.1"),
    (["--max-rows-per-dataset", "0"], "max_rows_per_dataset must be >= 1, got 0"),
    (["--lora-dropout", "1"], "lora_dropout must be >= 0 and < 1, got 1.0"),
    (["--max-steps", "0"], "max_steps must be -1 (from num_train_epochs) or >= 1, got 0"),
    (["--lr-scheduler-type", "cosine_wiggle"], "lr_scheduler_type='cosine_wiggle' is not one of linear, cosine"),
    (["--on-missing", "ignore"], "on_missing='ignore' is not one of error, skip"),
])
def test_out_of_range_values_are_refused_when_the_config_is_read(flags, message, tmp_path, capsys):
    assert main(VLM2VecConfig, ["--dry-run", "--output-dir", str(tmp_path / "run"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert listing(tmp_path / "run") == []


def test_data_without_model_is_an_error_not_the_random_tiny_backbone(mmeb_data):
    with pytest.raises(ValueError, match=r"--data is set but --model is not; give the backbone to train"):
        load_config(VLM2VecConfig, ["--data", str(mmeb_data)])
    with pytest.raises(ValueError, match=r"--synthetic-data is set but --model is not"):
        load_config(MME5Config, ["--synthetic-data", str(mmeb_data)])


# -- 7: continuing from a saved model ----------------------------------------------------------------


@pytest.mark.slow
def test_continue_from_an_adapter_only_saved_model(tmp_path, backbone, mmeb_data, capsys):
    first = tmp_path / "stage1"
    assert main(VLM2VecConfig, _user_run(backbone, mmeb_data, first) + ["--adapter", "lora"]) == 0
    assert (first / "model" / "adapter_config.json").is_file() and not (first / "model" / "model.safetensors").exists()
    saved = tree_hashes(first / "model")
    second = tmp_path / "stage2"
    assert main(VLM2VecConfig, _user_run(str(first / "model"), mmeb_data, second)) == 0
    assert "continuing a saved model" in capsys.readouterr().out
    assert tree_hashes(first / "model") == saved
    a = load_file(str(first / "model" / "adapter_model.safetensors"))
    b = load_file(str(second / "model" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)  # the same adapter, trained further
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(second / "model")).encode(["a red heart"]).shape == (1, 64)


def test_model_folder_that_is_empty_or_incomplete_says_what_it_lacks(tmp_path, mmeb_data, capsys):
    (tmp_path / "empty").mkdir()
    assert main(VLM2VecConfig, ["--dry-run", *_user_run(str(tmp_path / "empty"), mmeb_data, tmp_path / "run")]) == 2
    assert "is empty: expected a transformers model (config.json + weights) or a saved model (modules.json" in capsys.readouterr().err
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    assert main(VLM2VecConfig, ["--dry-run", *_user_run(str(tmp_path / "adapter"), mmeb_data, tmp_path / "run")]) == 2
    assert "holds a PEFT adapter but no modules.json" in capsys.readouterr().err


# -- 8: errors a user can act on ---------------------------------------------------------------------


def test_a_real_run_ends_bad_input_with_error_and_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert main(VLM2VecConfig, ["--output-dir", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"error: --output-dir '{tmp_path / 'file'}' is a file, not a directory.")


@pytest.fixture(scope="module")
def xtd(tmp_path_factory):
    root = tmp_path_factory.mktemp("xtd") / "good"
    embedded.write_xtd(root, languages=["en", "es"], limit=12)
    return root


@pytest.mark.parametrize("breakage, message", [
    ("language", "eval_languages ['xx'] are not XTD languages"),
    ("caption_file", "XTD data incomplete: first missing file"),
    ("fewer_captions", "XTD captions for 'es' have 11 lines for 12 images"),
    ("image", "image file not found"),
])
def test_dry_run_checks_the_evaluation_data(tmp_path, backbone, mmeb_data, xtd, capsys, breakage, message):
    data = tmp_path / "xtd"
    shutil.copytree(xtd, data)
    languages = "en,es"
    if breakage == "language":
        languages = "en,xx"
    elif breakage == "caption_file":
        (data / "test_1kcaptions_es.txt").unlink()
    elif breakage == "fewer_captions":
        lines = (data / "test_1kcaptions_es.txt").read_text(encoding="utf-8").splitlines()
        (data / "test_1kcaptions_es.txt").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    else:
        next((data / "images").rglob("*.png")).unlink()
    argv = [*_user_run(backbone, mmeb_data, tmp_path / "run"), "--evaluate", "--eval-data", str(data),
            "--eval-languages", languages]
    assert main(VLM2VecConfig, ["--dry-run", *argv]) == 2
    assert message in capsys.readouterr().err


def test_dry_run_refuses_image_data_for_a_text_only_model(tmp_path, mmeb_data, smollm2, capsys):
    argv = _user_run(smollm2, mmeb_data, tmp_path / "run")
    assert main(VLM2VecConfig, ["--dry-run", *argv]) == 2
    assert "TenLabels row 0 column 'anchor' has an image, but" in capsys.readouterr().err


# -- 9, 10, 11: config files, data files, sources ------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("recipe: vlm2vec\ntemperature: true\n", "temperature=True is a boolean, not a valid float"),
    ("recipe: vlm2vec\nmax_steps: true\n", "max_steps=True is a boolean, not a valid int"),
    ("recipe: vlm2vec\nlearning_rate: [1\n", "line 3: not valid YAML"),
    ("", "is empty; a config file holds `recipe: vlm2vec`"),
    ("# only a comment\n", "is empty"),
])
def test_config_file_values_are_checked(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_config(VLM2VecConfig, ["--config", str(path)])
    assert message in str(info.value) and "run.yaml" in str(info.value)


@pytest.mark.parametrize("recipe", list(CONFIGS))
def test_shipped_configs_name_their_recipe(recipe):
    import yaml

    for path in (ROOT / "recipes" / "configs").glob("*.yaml"):
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
        if path.stem == recipe:
            assert values["recipe"] == recipe
            assert load_config(CONFIGS[recipe], ["--config", str(path)]).model == values["model"]
        elif values.get("recipe") in CONFIGS:
            with pytest.raises(ValueError, match="is a config for another recipe"):
                load_config(CONFIGS[recipe], ["--config", str(path)])


def test_missing_parquet_column_is_named_with_its_file(tmp_path, backbone, capsys):
    data = tmp_path / "data"
    write_classification(data, "TenLabels", labels=10, rows=16)
    import pyarrow.parquet as pq

    path = data / "TenLabels" / "original-00000-of-00001.parquet"
    pq.write_table(pq.read_table(path).drop(["pos_text"]), path)
    argv = ["--model", backbone, "--data", str(data), "--image-root", str(data / "images"), "--data-configs", "TenLabels",
            "--output-dir", str(tmp_path / "run"), *QUICK]
    assert main(VLM2VecConfig, ["--dry-run", *argv]) == 2
    assert "original-00000-of-00001.parquet (TenLabels/original): no column 'pos_text'" in capsys.readouterr().err


def test_missing_images_are_skipped_with_on_missing_skip_and_counted(tmp_path, backbone, caplog, capsys):
    data = tmp_path / "data"
    write_classification(data, "TenLabels", labels=10, rows=20)
    rows = [{"qry": CLASSIFY, "qry_image_path": f"gone-{i}.png", "pos_text": "label", "pos_image_path": "",
             "neg_text": "", "neg_image_path": ""} for i in range(3)]
    import pyarrow.parquet as pq

    path = data / "TenLabels" / "original-00000-of-00001.parquet"
    write_rows(data, "TenLabels", pq.read_table(path).to_pylist() + rows)
    argv = ["--model", backbone, "--data", str(data), "--image-root", str(data / "images"), "--data-configs", "TenLabels",
            "--output-dir", str(tmp_path / "run"), *QUICK]
    assert main(VLM2VecConfig, ["--dry-run", *argv]) == 2
    assert "training recipes: --on-missing skip" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING):
        assert main(VLM2VecConfig, ["--dry-run", *argv, "--on-missing", "skip"]) == 0
    assert "TenLabels/original: dropped 3 of 23 rows with missing or unreadable images" in caplog.text
    assert "data: TenLabels 20 rows" in capsys.readouterr().out


def test_an_empty_config_among_several_is_named(tmp_path, backbone, mmeb_data, capsys):
    data = tmp_path / "data"
    shutil.copytree(mmeb_data, data)
    write_rows(data, "Empty", [])
    argv = ["--model", backbone, "--data", str(data), "--image-root", str(data / "images"), "--data-configs",
            "TenLabels,Empty", "--output-dir", str(tmp_path / "run"), *QUICK]
    assert main(VLM2VecConfig, ["--dry-run", *argv]) == 2
    assert "dataset(s) ['Empty'] have no rows" in capsys.readouterr().err
