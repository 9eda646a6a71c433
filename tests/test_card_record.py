"""The model card is rendered from what the run saved (``recipe_card.json``), never from training code: mm_st.hub
imports nothing of mm_st.training, and mm_st.training imports hub one way only (issue 31 item 3)."""

import ast
import json
from pathlib import Path

import pytest

from mm_st import hub
from mm_st.training import E5VConfig
from mm_st.training.config import card_record
from mm_st.training.embedded import LANGUAGES

PACKAGE = Path(hub.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("module", ["hub.py", "model_card.py"])
def test_the_publishing_layer_imports_no_training_code(module):
    assert not [m for m in _imported_modules(PACKAGE / module) if m.startswith("mm_st.training")]


def test_the_run_records_its_config_lines_with_sources_and_no_local_path(tmp_path):
    config = E5VConfig(max_steps=2, output_dir=str(tmp_path / "run"))
    record = card_record(config)
    lines = record["config_lines"]
    assert "  max_steps = 2   (set for this run)" in lines
    assert "  temperature = 0.05   (kongds/E5-V run.sh / ft_llm.py (cosine / 0.05))" in lines
    assert f"  output_dir = {hub.LOCAL_VALUE!r}   (set for this run)" in lines
    assert str(tmp_path) not in json.dumps(record)
    assert record["languages"] == list(LANGUAGES)  # the embedded default's data
    assert card_record(E5VConfig(model="org/base", data="org/nli"))["languages"] == []


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from mm_st import build_model
    from mm_st.testing import tiny_model

    folder = tmp_path_factory.mktemp("model")
    build_model(tiny_model("llava_next"), recipe="e5v").save(str(folder))
    return folder


def _card(folder: Path) -> str:
    return hub.render_model_card(folder, repo_id="org/e5v-tiny", kind="full", base_model=None)


def test_the_card_shows_the_lines_and_languages_the_run_recorded(saved_model, tmp_path):
    folder = tmp_path / "model"
    __import__("shutil").copytree(saved_model, folder)
    config = E5VConfig(max_steps=3)
    (folder / "recipe_config.json").write_text(json.dumps({"recipe": "e5v", **config.to_dict()}), encoding="utf-8")
    (folder / hub.CARD_RECORD).write_text(json.dumps(card_record(config)), encoding="utf-8")
    card = _card(folder)
    assert "max_steps = 3   (set for this run)" in card and "lora_r = 64   (kongds/E5-V run.sh / ft_llm.py)" in card
    assert "language:\n- en\n- es" in card

    (folder / hub.CARD_RECORD).unlink()  # a folder saved before the record existed: plain values, no sources
    card = _card(folder)
    assert "  max_steps = 3\n" in card and "(set for this run)" not in card and "language:" not in card
