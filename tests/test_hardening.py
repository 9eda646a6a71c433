"""Hostile and careless inputs (issue 13): each bad input is a clear error naming the item."""

import json
import shutil

import numpy as np
import pytest

from mm_st import build_model, load_model
from mm_st.testing import tiny_model


# ----------------------------------------------------------------------------------------------
# 1. load_model refuses an incomplete saved model instead of silently building another one
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    model = build_model(tiny_model("qwen2_vl"), recipe="e5v")
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save(str(path))
    return model, path


def _copy(saved_model, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(saved_model[1], target)
    return target


def test_load_model_complete_directory_loads_the_same_model(saved_model):
    model, path = saved_model
    assert np.abs(load_model(str(path)).encode(["a dog"]) - model.encode(["a dog"])).max() <= 1e-6


def test_load_model_without_modules_json_names_the_file_and_build_model(saved_model, tmp_path):
    path = _copy(saved_model, tmp_path)
    (path / "modules.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"modules\.json' is missing.*mm_st\.build_model"):
        load_model(str(path))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b"\xff\xfe[]", "not valid UTF-8 JSON"),
        (b"{}", "expected a non-empty JSON list"),
        (b"[]", "expected a non-empty JSON list"),
        (b'[{"path": ""}]', "entry 0 needs string 'path' and 'type'"),
    ],
)
def test_load_model_invalid_modules_json_names_the_file(saved_model, tmp_path, content, message):
    path = _copy(saved_model, tmp_path)
    (path / "modules.json").write_bytes(content)
    with pytest.raises(ValueError, match=rf"Invalid '.*modules\.json': {message}"):
        load_model(str(path))


def test_load_model_missing_module_directory_names_the_entry(saved_model, tmp_path):
    path = _copy(saved_model, tmp_path)
    shutil.rmtree(path / "1_Pooling")
    with pytest.raises(FileNotFoundError, match=r"modules\.json': entry 1 \(.*Pooling\) names directory '1_Pooling'"):
        load_model(str(path))
    modules = json.loads((saved_model[1] / "modules.json").read_text())
    modules[1]["path"] = "../../outside"
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(FileNotFoundError, match=r"entry 1 .*'\.\./\.\./outside', which is missing or outside"):
        load_model(str(path))
