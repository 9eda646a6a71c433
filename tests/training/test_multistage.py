"""The multi-stage base (mm_st.training.multistage): stages as data, each stage's config built from the recipe's, a
stage that needs an earlier stage's model refused before anything is written, and ``stages.json`` written and read
as MM-Embed wrote it before the base existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mm_st.training import MMEmbedConfig
from mm_st.training.mmembed import STAGE_SPECS, STAGES, MMEmbedRun, ModalityAwareStage, RecipeInputs, TextStage
from mm_st.training.outputs import RunFolder
from mm_st.training.stage import StageResult

INPUTS = RecipeInputs("org/base", "org/mbeir", "org/mbeir-eval", "org/text")  # Hub ids: fingerprints need no files


def _run(tmp_path: Path, **values) -> MMEmbedRun:
    config = MMEmbedConfig(model="org/base", data="org/mbeir", text_data="org/text", output_dir=str(tmp_path),
                           **values)
    return MMEmbedRun(config)


def test_mmembeds_stages_are_data():
    assert [(s.number, s.config, s.starts_from, dict(s.fields_from)) for s in STAGE_SPECS] == [
        (1, STAGES[1], None, {}), (2, ModalityAwareStage, None, {}),
        (3, TextStage, 2, {"learning_rate": "text_learning_rate", "max_steps": "text_steps"})]
    assert MMEmbedConfig(stages=["3", "1"]).stage_numbers() == [1, 3]
    assert MMEmbedConfig(stages=["2"], from_stage=2).stage_numbers() == [2, 3]
    with pytest.raises(ValueError, match=r"^mmembed config: stages must be some of 1, 2, 3, got \['4'\]\.$"):
        MMEmbedConfig(stages=["4"]).stage_numbers()
    with pytest.raises(ValueError, match=r"--from-stage 3 is not among --stages 1,2; .* or choose --stages 3\.$"):
        MMEmbedConfig(stages=["1", "2"], from_stage=3).stage_numbers()


def test_each_stage_config_comes_from_the_recipe_and_its_spec(tmp_path):
    run = _run(tmp_path, text_learning_rate=1e-4, text_steps=7, max_steps=9, from_stage=2, stages=["2"])
    run.config.push_to_hub = "org/pushed"  # (checked for a token when the config is checked: set after)
    one, two, three = (run.stage_config(n, INPUTS) for n in (1, 2, 3))
    assert [type(s) for s in (one, two, three)] == [STAGES[1], STAGES[2], STAGES[3]]
    assert [s.output_dir for s in (one, two, three)] == [str(tmp_path / f"stage{n}") for n in (1, 2, 3)]
    assert (one.model, two.model, three.model) == ("org/base", "org/base", str(tmp_path / "stage2" / "model"))
    assert (one.learning_rate, one.max_steps, three.learning_rate, three.max_steps) == (2e-5, 9, 1e-4, 7)
    assert (two.mining_model, two.mined_negatives) == (str(tmp_path / "stage1" / "model"), str(tmp_path / "mined-negatives"))
    assert one.mining_model is None
    assert (one.resume, two.resume, three.resume) == ("auto", "never", "never")  # --from-stage 2 starts 2 and 3 over
    assert all(s.stages == [str(s.stage)] and s.from_stage == 0 and s.push_to_hub is None for s in (one, two, three))
    assert (three.data, three.eval_data, three.text_data) == ("org/mbeir", "org/mbeir-eval", "org/text")


def test_a_stage_whose_earlier_model_is_missing_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^mmembed stage 3 needs '.*stage2/model' \(stage 2's model\); run "
                                                r"--stages 2,3 \(or --from-stage 2\)\.$"):
        _run(tmp_path, stages=["3"]).check_earlier_stages()
    with pytest.raises(FileNotFoundError, match=r"stage 2 needs '.*stage1/model' \(stage 1's model\)"):
        _run(tmp_path, stages=["2"]).check_earlier_stages()
    _run(tmp_path, stages=["2"], mining_model="org/miner").check_earlier_stages()  # mines with another model
    _run(tmp_path, stages=["1", "2", "3"]).check_earlier_stages()  # the earlier stages run first
    assert list(tmp_path.iterdir()) == []


def test_stages_json_is_written_as_before(tmp_path):
    run = _run(tmp_path, evaluate=False)
    stage = run.stage_config(1, INPUTS)
    result = StageResult(tmp_path / "stage1" / "model", {"mbeir_recall_at_1": 0.1}, {"mbeir_recall_at_1": 0.3}, 5)
    run.record(1, stage, result)
    written = json.loads((tmp_path / "stages.json").read_text(encoding="utf-8"))
    assert written == {"recipe": "mmembed", "stages": {"1": {
        "title": "random in-batch negatives on M-BEIR", "output_dir": str(tmp_path / "stage1"),
        "model_dir": str(tmp_path / "stage1" / "model"), "starts_from": "org/base", "steps": 5,
        "data": {"mbeir": "hub:org/mbeir"}, "before": {"mbeir_recall_at_1": 0.1}, "after": {"mbeir_recall_at_1": 0.3},
        "config": {"recipe": "mmembed", **stage.to_dict()}, "warnings": []}}}
    assert "stages.json" in RunFolder(tmp_path, writer=False).recorded  # the run's own: --resume never removes it
    three = run.stage_config(3, INPUTS)
    run.record(3, three, StageResult(tmp_path / "stage3" / "model", {}, {}, 2))
    stages = run.manifest()["stages"]
    assert sorted(stages) == ["1", "3"] and stages["3"]["data"] == {"mbeir": "hub:org/mbeir", "text_pairs": "hub:org/text"}
    assert stages["1"] == written["stages"]["1"]


def test_a_stages_json_written_before_the_base_is_read_as_before(tmp_path):
    """An earlier run's ``stages.json`` (same format) gives the model card's record and the finished-stage check."""
    old = {"recipe": "mmembed", "stages": {
        n: {"title": spec.title, "steps": 3, "before": {"mbeir_recall_at_1": 0.1} if n == "1" else {},
            "after": {"mbeir_recall_at_1": 0.2 * int(n)}, "config": {"learning_rate": 1e-3}, "data": {}}
        for n, spec in (("1", STAGE_SPECS[0]), ("2", STAGE_SPECS[1]))}}
    (tmp_path / "stages.json").write_text(json.dumps(old), encoding="utf-8")
    run = _run(tmp_path)
    assert run.manifest() == old
    (tmp_path / "model").mkdir()
    run.write_card_stages(2, tmp_path / "model")
    card = json.loads((tmp_path / "model" / "training_stages.json").read_text(encoding="utf-8"))
    assert card == {"untrained": {"mbeir_recall_at_1": 0.1}, "stages": [
        {"stage": 1, "title": STAGE_SPECS[0].title, "steps": 3, "learning_rate": 1e-3, "after": {"mbeir_recall_at_1": 0.2}},
        {"stage": 2, "title": STAGE_SPECS[1].title, "steps": 3, "learning_rate": 1e-3, "after": {"mbeir_recall_at_1": 0.4}}]}


def test_a_run_without_evaluation_prints_no_summary_and_imports_no_mteb(tmp_path, monkeypatch):
    """``--no-evaluate`` (or nothing evaluated): the end of the run has no table to print, so it does not import
    mm_st.evaluation (mteb's import, seconds of CPU in each recipe process)."""
    import sys

    old = {"recipe": "mmembed", "stages": {"1": {"title": STAGE_SPECS[0].title, "steps": 3, "before": {"mbeir_recall_at_1": 0.1},
                                                 "after": {"mbeir_recall_at_1": 0.2}, "config": {}, "data": {}}}}
    (tmp_path / "stages.json").write_text(json.dumps(old), encoding="utf-8")
    for name in ("mm_st.evaluation.mbeir_global", "mm_st.training.evaluators"):
        monkeypatch.setitem(sys.modules, name, None)  # importing either now raises ImportError
    assert _run(tmp_path, evaluate=False).summary() == []
    with pytest.raises(ImportError):
        _run(tmp_path).summary()  # with evaluation: the table needs them
