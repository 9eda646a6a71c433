"""MM-Embed without --eval-data: a seeded share of each task's training queries is held out, never trained on or
mined, and every stage is scored on it (issue 28, item 3)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mm_st.testing import tiny_model
from mm_st.training import MMEmbedConfig
from mm_st.training.cli import main
from mm_st.training.embedded import write_mbeir
from mm_st.training.heldout import choose_held_out, held_out_count, held_out_qids, read_record
from mm_st.training.mmembed import MMEmbedRun, mining_key
from tests.recipe_data import tree_hashes

SMALL = ["--max-steps", "2", "--global-batch-size", "8", "--adapter", "none", "--max-length", "64",
         "--mining-top-k", "10", "--mining-ranks", "6,8", "--threads", "1"]


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """A user's M-BEIR training data (five emoji tasks, 40 queries each), a tiny backbone, and the recipe's run of
    stages 1 and 2 without --eval-data after its held-out folder is written."""
    tmp = tmp_path_factory.mktemp("heldout")
    data = write_mbeir(tmp / "mbeir", split="train", limit=40)
    model = tiny_model("llava_next", tmp / "model", head=False)
    argv = ["--model", str(model), "--data", str(data), "--stages", "1,2", "--output-dir", str(tmp / "run")]
    run = MMEmbedRun(_config(argv))
    inputs = run.write_held_out(run.inputs())
    return SimpleNamespace(data=data, model=model, argv=argv, run=run, inputs=inputs, tmp=tmp)


def _config(argv: list[str]) -> MMEmbedConfig:
    from mm_st.training.config import load_config

    return load_config(MMEmbedConfig, argv + SMALL)


def test_the_split_is_seeded_order_free_and_leaves_small_tasks_most_rows():
    ids = [f"1:{i}" for i in range(200)]
    chosen = choose_held_out(ids, 10, seed=0)
    assert chosen == choose_held_out(list(reversed(ids)), 10, seed=0) and len(set(chosen)) == 10
    assert chosen != choose_held_out(ids, 10, seed=1)
    # a larger data set keeps every query the smaller one held out that still ranks among the first
    assert set(choose_held_out(ids[:100], 5, seed=0)) <= set(choose_held_out(ids, 200, seed=0))
    # 5%, at least 20, at most 1000, never more than a fifth of the task; 0 turns it off
    assert [held_out_count(n, 0.05) for n in (4, 40, 100, 1000, 10**5, 10**7)] == [0, 8, 20, 50, 1000, 1000]
    assert held_out_count(10**5, 0.0) == 0


def test_tasks_too_small_to_hold_out_a_query_leave_the_run_without_evaluation_data(tmp_path):
    from mm_st.training.heldout import MIN_TASK_ROWS

    data = write_mbeir(tmp_path / "mbeir", split="train", limit=MIN_TASK_ROWS - 1)
    run = MMEmbedRun(_config(["--model", "unused", "--data", str(data), "--stages", "1", "--output-dir",
                              str(tmp_path / "run")]))
    inputs = run.write_held_out(run.inputs())
    assert inputs.eval_data is None and read_record(tmp_path / "run" / "held-out")["tasks"] == {}
    assert run.comparison_line(inputs).startswith("held-out comparison: none: no task has the 5 training queries")


def test_held_out_queries_are_written_and_never_trained_on_or_mined(user_run):
    from mm_st.training.mmembed import STAGES

    folder = Path(user_run.inputs.eval_data)
    assert folder == user_run.run.root / "held-out"
    record = read_record(folder)
    held = held_out_qids(folder)
    assert {name: len(t["qids"]) for name, t in record["tasks"].items()} == {
        "Emoji_i2i": 8, "Emoji_i2t": 8, "Emoji_it2t": 8, "Emoji_t2i": 8, "Emoji_t2t": 8}
    for name, task in record["tasks"].items():  # the query rows, in M-BEIR's layout, with their pool
        rows = [json.loads(line) for line in (folder / task["query_file"]).read_text(encoding="utf-8").splitlines()]
        assert [r["qid"] for r in rows] == task["qids"]
        pool = {json.loads(line)["did"] for line in (folder / task["pool_file"]).read_text(encoding="utf-8").splitlines()}
        assert all(set(r["pos_cand_list"]) <= pool for r in rows)
    for n in (1, 2):
        stage = user_run.run.stage_config(n, user_run.inputs)
        sources = stage.sources(Path(stage.output_dir))
        trained = stage.load_mbeir(sources, ids=True)
        everything = stage.load_mbeir(dataclasses.replace(sources, eval_data=None), ids=True)
        for name, ds in trained.items():
            assert not set(ds["qid"]) & held  # never trained on (stage 2: never a mining query)
            assert set(ds["qid"]) | set(record["tasks"][name]["qids"]) == set(everything[name]["qid"])
        assert "qid" not in stage.load_mbeir(sources)["Emoji_t2i"].column_names
    key = mining_key(user_run.run.stage_config(2, user_run.inputs), ["Emoji_t2i"], miner=False)
    assert key["held_out"] and "held_out" not in mining_key(
        STAGES[2](**{**stage.to_dict(), "eval_data": None}), ["Emoji_t2i"], miner=False)
    # writing again (a re-run, a resumed run) holds out the same queries and leaves the folder as it was
    before = tree_hashes(folder)
    user_run.run.write_held_out(user_run.inputs)
    assert tree_hashes(folder) == before


def test_held_out_tasks_are_scored(user_run):
    from mm_st import build_model
    from mm_st.training.evaluators import MBEIREvaluator

    model = build_model(str(user_run.model), recipe="mmembed", max_length=64)
    from mm_st.training.evaluators import mbeir_task_instances

    folder = user_run.inputs.eval_data
    assert [t.metadata.name for t in mbeir_task_instances(folder, [])] == [
        f"MMST-MBEIR-heldout-{name}" for name in ("Emoji_i2i", "Emoji_i2t", "Emoji_it2t", "Emoji_t2i", "Emoji_t2t")]
    model = build_model(str(user_run.model), recipe="mmembed", max_length=64)
    scores = MBEIREvaluator(folder, ["Emoji_t2i"], user_run.tmp / "eval", "heldout-test")(model)  # --eval-tasks
    assert sorted(scores) == ["mbeir/heldout-Emoji_t2i/hit_rate_at_1", "mbeir/heldout-Emoji_t2i/recall_at_1",
                              "mbeir/heldout-Emoji_t2i/recall_at_5",
                              "mbeir/heldout-Emoji_t2i/wrong_modality_at_1",  # the dataset's pool mixes modalities
                              "mbeir_recall_at_1", "mbeir_wrong_modality_at_1"]
    assert all(0.0 <= value <= 1.0 for value in scores.values())


def test_each_stage_s_held_out_scores_are_recorded_and_a_drop_warns(user_run, capsys):
    run = user_run.run
    scores = {"mbeir/heldout-Emoji_t2i/hit_rate_at_1": 0.5, "mbeir/heldout-Emoji_t2t/hit_rate_at_1": 0.4}
    dropped = {"mbeir/heldout-Emoji_t2i/hit_rate_at_1": 0.125, "mbeir/heldout-Emoji_t2t/hit_rate_at_1": 0.4}
    for n, after in ((1, scores), (2, dropped)):
        stage = run.stage_config(n, user_run.inputs)
        run.record(n, stage, SimpleNamespace(model_dir=Path(stage.output_dir) / "model", steps=2,
                                             before={"mbeir/heldout-Emoji_t2i/hit_rate_at_1": 0.0}, after=after))
    manifest = json.loads(run.manifest_path().read_text(encoding="utf-8"))
    assert manifest["held_out"]["queries"]["Emoji_t2i"] == 8 and manifest["held_out"]["share"] == 0.05
    assert manifest["held_out"]["fingerprint"] == mining_key(stage, [], miner=False)["held_out"]
    assert manifest["stages"]["1"]["after"] == scores and manifest["stages"]["1"]["config"]["eval_data"].endswith("held-out")
    warning = ("warning: stage 2 lowered heldout-Emoji_t2i hit_rate_at_1 against stage 1: 0.500 -> 0.125 (more than "
               "max_score_drop 0.05)")
    assert manifest["stages"]["2"]["warnings"] == [warning] and warning in capsys.readouterr().out
    run.manifest_path().unlink()


def test_the_plan_names_the_held_out_share_and_with_eval_data_nothing_is_held_out(user_run, tmp_path, capsys):
    argv = [*user_run.argv[:-1], str(tmp_path / "run"), "--dry-run", *SMALL]
    assert main(MMEmbedConfig, argv) == 0
    printed = capsys.readouterr().out
    assert (f"held-out comparison: no --eval-data, so 5% of each task's training queries (at least 20, at most 1000 "
            "and a fifth of the task; --held-out-share 0 = none) are held out, never trained on or mined: Emoji_i2i 8 "
            f"of 40, Emoji_i2t 8 of 40, Emoji_it2t 8 of 40, Emoji_t2i 8 of 40, Emoji_t2t 8 of 40, in "
            f"{tmp_path / 'run' / 'held-out'}") in printed
    assert "40 held-out queries left out" in printed
    heldout = write_mbeir(tmp_path / "test", split="test", limit=16)
    for extra, line in ((["--eval-data", str(heldout)], f"held-out comparison: after each stage, each task of {heldout}"),
                        (["--held-out-share", "0"], "held-out comparison: none")):
        out = tmp_path / ("run-" + extra[0].strip("-"))
        assert main(MMEmbedConfig, [*user_run.argv[:-1], str(out), "--dry-run", *SMALL, *extra]) == 0
        printed = capsys.readouterr().out
        assert line in printed and "held-out queries left out" not in printed
        assert not (out / "held-out").exists()


@pytest.mark.slow
def test_a_run_without_eval_data_scores_its_stage_on_held_out_queries(user_run, tmp_path):
    out = tmp_path / "run"
    argv = [*user_run.argv[:-1], str(out), "--stages", "1", *SMALL]
    assert main(MMEmbedConfig, argv) == 0
    manifest = json.loads((out / "stages.json").read_text(encoding="utf-8"))
    stage = manifest["stages"]["1"]
    assert manifest["held_out"]["queries"] == {name: 8 for name in ("Emoji_i2i", "Emoji_i2t", "Emoji_it2t",
                                                                     "Emoji_t2i", "Emoji_t2t")}
    for scores in (stage["before"], stage["after"]):
        assert "mbeir/heldout-Emoji_t2i/hit_rate_at_1" in scores
    before = tree_hashes(out)
    assert main(MMEmbedConfig, argv) == 0  # a finished re-run changes nothing, held-out queries included
    assert tree_hashes(out) == before
