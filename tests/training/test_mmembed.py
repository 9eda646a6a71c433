"""MM-Embed's recipe (recipes/train_mmembed.py): row instructions, the three stages chained, stages.json, mined
negatives saved and reused, re-runs and --from-stage, a killed stage resuming, data of the shapes users have."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mm_st import build_model
from mm_st.data import load_emoji
from mm_st.inputs import content_key, normalize_input
from mm_st.testing import tiny_model
from mm_st.training import MMEmbedConfig, console
from mm_st.training.cli import main
from mm_st.training.embedded import write_mbeir
from tests.recipe_data import tree_hashes, write_user_mbeir
from tests.recipe_runs_worker import outputs_by_run
from tests.synthesis_support import free_port

ROOT = Path(__file__).resolve().parents[2]
# a CPU-sized chain: tiny pools, a few steps per stage, evaluation on a small held-out split
SMALL = ["--max-rows-per-dataset", "40", "--max-steps", "3", "--text-steps", "2", "--global-batch-size", "8",
         "--save-steps", "2", "--logging-steps", "1", "--mining-top-k", "10", "--mining-ranks", "6,8"]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """The five emoji M-BEIR tasks on 16 unseen emoji (what the recipe evaluates, smaller)."""
    return write_mbeir(tmp_path_factory.mktemp("heldout"), split="test", limit=16)


# -- instructions in the row ---------------------------------------------------------------------------------------


def test_a_row_instruction_renders_as_prompt_and_is_not_content(emoji_images):
    model = build_model(tiny_model("llava_next"), recipe="mmembed")
    rows = [{"text": "grinning face", "image": emoji_images[0]}, {"text": "a cat", "image": None},
            {"text": None, "image": emoji_images[1]}]
    instructions = ["Find the emoji image.", "Find the keywords.", "Find the name."]
    mixed = model.encode_query([{**row, "instruction": text} for row, text in zip(rows, instructions)])
    one_by_one = [model.encode_query([row], prompt=text)[0] for row, text in zip(rows, instructions)]
    assert abs(mixed - np.stack(one_by_one)).max() < 1e-5
    # modality is the content's (an image with an instruction is an image); the instruction is part of the identity
    assert [content_key(normalize_input({**r, "instruction": "x"}, 0))[1] for r in rows] == \
           [content_key(normalize_input(r, 0))[1] for r in rows]
    assert content_key(normalize_input({**rows[1], "instruction": "x"}, 0)) != content_key(normalize_input(rows[1], 0))
    with pytest.raises(TypeError, match="Input 0: 'instruction' must be a str or None, got int"):
        normalize_input({"text": "a", "instruction": 3}, 0)


def test_load_mbeir_row_instructions(heldout):
    from mm_st.data import load_mbeir, mbeir_instructions

    named = load_mbeir(heldout, split="test", instructions="row", ids=True)
    table = mbeir_instructions(heldout)
    for name, ds in named.items():
        assert ds.column_names == ["anchor", "positive", "qid", "positive_id"]
        assert {row["instruction"] for row in ds["anchor"]} == {table[name]}
    assert named["Emoji_t2i"][0]["anchor"]["text"] and named["Emoji_t2i"][0]["anchor"]["image"] is None


# -- the chain -----------------------------------------------------------------------------------------------------


def _manifest(out: Path) -> dict:
    return json.loads((out / "stages.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_three_stages_chain_and_rerun(tmp_path, heldout, capfd, caplog):
    out = tmp_path / "run"
    argv = ["--output-dir", str(out), "--eval-data", str(heldout), *SMALL]
    with caplog.at_level(logging.INFO, logger="mm_st.training.mmembed"):
        assert main(MMEmbedConfig, argv) == 0
    captured = capfd.readouterr()
    printed = captured.out
    _check_console(console.screen_lines(captured.out + captured.err), out)
    for n in (1, 2, 3):
        assert f"=== MM-Embed stage {n}:" in printed
        assert (out / f"stage{n}" / "model" / "modules.json").is_file()
    stages = _manifest(out)["stages"]
    base = str(next((out / "base-model").iterdir()))
    assert stages["1"]["starts_from"] == stages["2"]["starts_from"] == base  # stage 2 retrains from the base model
    assert stages["3"]["starts_from"] == str(out / "stage2" / "model")  # stage 3 continues stage 2's model
    assert stages["3"]["config"]["learning_rate"] == 5e-4 and stages["3"]["steps"] == 2
    assert stages["1"]["data"]["mbeir"] == stages["2"]["data"]["mbeir"] and stages["2"]["data"]["mined_negatives"]
    assert stages["3"]["data"]["text_pairs"]
    for n in ("1", "2", "3"):
        assert {"mbeir/Emoji_t2i/recall_at_1", "mbeir/Emoji_t2i/wrong_modality_at_1"} <= set(stages[n]["after"])
    _check_the_card_describes_the_run(out / "stage3" / "model", stages, tmp_path)
    # the summary: each stage next to the untrained model and chance
    summary = printed.split("MM-Embed stages on the held-out M-BEIR tasks")[1]
    assert "untrained" in summary and "stage 3" in summary and "chance" in summary and "wrong_modality_at_1" in summary
    # stage 2's negatives: mined by stage 1's model, saved with what they came from
    mined = out / "mined-negatives"
    record = json.loads((mined / "mining.json").read_text(encoding="utf-8"))
    assert record["key"]["miner"] and sorted(p.stem for p in mined.glob("*.parquet")) == sorted(record["counts"])
    counts = record["counts"]["Emoji_t2i"]
    assert counts["rows"] == counts["of"] > 0 and counts["type1"] + counts["type2"] + counts["fallback"] == counts["rows"]
    assert record["key"]["relative_margin"] == 0.05  # the false-negative filter is on by default
    assert "stage 2, Emoji_t2i:" in printed and "filtered as likely false negatives" in printed
    assert stages["2"]["mining"] == record["counts"] and isinstance(stages["2"]["warnings"], list)
    # re-running the finished command changes nothing
    models = {n: tree_hashes(out / f"stage{n}" / "model") for n in (1, 2, 3)}
    assert main(MMEmbedConfig, argv) == 0
    assert printed.count("holds this run") == 0 and capfd.readouterr().out.count("holds this run, finished") == 3
    assert {n: tree_hashes(out / f"stage{n}" / "model") for n in (1, 2, 3)} == models
    # --from-stage 2: stages 2 and 3 again (the mined negatives reused: same stage-1 model and data), stage 1 kept
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mm_st.training.mmembed"):
        assert main(MMEmbedConfig, argv + ["--from-stage", "2"]) == 0
    assert "stage 2: reusing the mined negatives" in caplog.text
    assert tree_hashes(out / "stage1" / "model") == models[1]


def _check_the_card_describes_the_run(model_dir: Path, stages: dict, tmp_path: Path) -> None:
    """The model card of the 3-stage run (what `--push-to-hub` pushes), parsed: every evaluated task and metric,
    the stages with their steps, before = the untrained model (issue 27, item 6)."""
    from huggingface_hub import ModelCard

    from mm_st.hub import plan_model_push

    plan = plan_model_push(model_dir, "org/mmembed-3", workdir=tmp_path / "card")
    card = ModelCard(plan.files["README.md"].decode("utf-8"))
    after = stages["3"]["after"]
    tasks = sorted(key.split("/")[1] for key in after if key.startswith("mbeir/") and key.endswith("/recall_at_1"))
    assert len(tasks) == 5
    # model-index: one entry per task, each with this model's (stage 3's) main score
    (index,) = card.data.to_dict()["model-index"]
    assert sorted(entry["dataset"]["config"] for entry in index["results"]) == [f"MMST-MBEIR-{t}" for t in tasks]
    assert {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results} == \
        {(f"MMST-MBEIR-{t}", "recall_at_1"): after[f"mbeir/{t}/recall_at_1"] for t in tasks}
    assert f"mteb run -m org/mmembed-3 -t MMST-MBEIR-{tasks[0]}`" in card.text
    evaluation = card.text.split("## Evaluation")[1].split("## Training")[0]
    assert "XTDT2IRetrieval" not in evaluation and all(f"`MMST-MBEIR-{t}`" in evaluation for t in tasks)
    lines = [line for line in evaluation.splitlines() if line.startswith("| ")]
    assert lines[0] == "| task | metric | untrained | after stage 1 | after stage 2 | after stage 3 |"
    table, task = {}, None
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        task = cells[0] or task
        table[task, cells[1]] = cells[2:]
    columns = [stages["1"]["before"], stages["1"]["after"], stages["2"]["after"], after]
    for key in after:  # every task and metric of the run, each column from what ran
        task, metric = key.split("/")[1:] if key.startswith("mbeir/") else ("mean over the tasks", key[len("mbeir_"):])
        assert table[task, metric] == [f"{c[key]:.4f}" if key in c else "-" for c in columns], key
    assert stages["1"]["before"] != stages["2"]["after"]
    training = card.text.split("## Training")[1].split("## Limitations")[0]
    for n in ("1", "2", "3"):
        assert f"stage {n} ({stages[n]['title']}): {stages[n]['steps']} steps" in training
    assert "**Steps:**" not in training and "configuration below" not in card.text
    assert "(see the recipe configuration under Training above)" in card.text.split("## Limitations")[1]


def _check_console(lines: list[str], out: Path) -> None:
    """The default console of the three stages (issue 27): short plans, one bar and one summary line per stage, the
    held-out table once; no library log line, no load report, no warning twice, no config dump."""
    text = "\n".join(lines)
    assert len(lines) <= 75, text
    for noise in ("LOAD REPORT", " INFO ", "Writing model shards", "Encoding", "Searching", "config (source", "{'loss'"):
        assert noise not in text, noise
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == len(set(warnings)), warnings
    assert [line.split(" steps in ")[0] for line in lines if line.startswith("done: ")] == ["done: 3", "done: 3", "done: 2"]
    assert sum(line.startswith("mined negatives: ") for line in lines) == 1
    assert text.count("task ") == 1  # the held-out table, once, at the end
    for n in (1, 2, 3):
        assert "config (source of each value):" in (out / f"stage{n}" / "plan.txt").read_text(encoding="utf-8")


def test_stage_3_alone_needs_stage_2(tmp_path, heldout, capsys):
    argv = ["--output-dir", str(tmp_path / "run"), "--eval-data", str(heldout), "--stages", "3", *SMALL]
    assert main(MMEmbedConfig, argv) == 2
    assert "mmembed stage 3 needs" in capsys.readouterr().err


def test_dry_run_plans_every_stage(tmp_path, capsys):
    assert main(MMEmbedConfig, ["--dry-run", "--output-dir", str(tmp_path / "run"), *SMALL]) == 0
    printed = capsys.readouterr().out
    for title in ("stage 1: random in-batch negatives", "stage 2: modality-aware hard negatives",
                  "stage 3: continual text-to-text fine-tuning", "negatives: 1 per query, mined by",
                  "false-negative filter: relative_margin 0.05 (right-modality candidates above 95% of the positive's",
                  "held-out comparison: after each stage, each task of"):
        assert title in printed
    assert "dry run: plan checked" in printed
    assert main(MMEmbedConfig, ["--dry-run", "--output-dir", str(tmp_path / "run"), *SMALL, "--no-evaluate",
                                "--mining-relative-margin", "none", "--mining-max-score", "0.9"]) == 0
    printed = capsys.readouterr().out
    assert "false-negative filter: max_score 0.9;" in printed and "held-out comparison: none" in printed


def test_the_embedded_default_scores_its_stages_on_the_eval_data_given(tmp_path, heldout, capsys):
    """--eval-data is honoured on the embedded default too (it used to be replaced by the bundled test split)."""
    argv = ["--dry-run", "--output-dir", str(tmp_path / "run"), "--eval-data", str(heldout), *SMALL]
    assert main(MMEmbedConfig, argv) == 0
    printed = capsys.readouterr().out
    assert f"held-out comparison: after each stage, each task of {heldout}" in printed
    assert "mbeir-seed42" not in printed.split("held-out comparison:")[1].splitlines()[0]


# -- a user's M-BEIR data: small pools, long texts, missing images ---------------------------------------------------


@pytest.mark.slow
def test_user_data_with_small_pools_long_texts_and_missing_images(tmp_path, capsys):
    from mm_st.training.mmembed import read_mined

    data = write_user_mbeir(tmp_path / "mbeir")
    argv = ["--model", tiny_model("llava_next", head=False), "--data", str(data), "--stages", "1,2", "--no-evaluate",
            "--output-dir", str(tmp_path / "run"), "--max-steps", "2", "--global-batch-size", "4", "--adapter", "none",
            "--max-length", "64", "--mining-top-k", "1", "--num-negatives", "3"]  # at most 1 type-1
    assert main(MMEmbedConfig, argv) == 2
    assert "1 image reference(s) missing or unreadable" in capsys.readouterr().err
    assert main(MMEmbedConfig, argv + ["--on-missing", "skip"]) == 0
    printed = capsys.readouterr().out
    # the pool holds 12 texts: the type-2 window 46-50 moves to the ranks the pool has
    assert "type-2 at ranks 7-11" in printed
    assert (tmp_path / "run" / "stage2" / "model" / "modules.json").is_file()
    # query 7:1000 lists every caption as a positive: none is its negative (issue 27.10), only images are left
    # (one type-1 at most with --mining-top-k 1, the others by the fallback; without the exclusion the type-2 window
    # holds captions);
    # no row is dropped
    folder = tmp_path / "run" / "mined-negatives"
    record = json.loads((folder / "mining.json").read_text(encoding="utf-8"))
    (task,) = record["counts"]
    assert record["counts"][task]["rows"] == record["counts"][task]["of"] == 11
    first = [row for row in read_mined(folder / f"{task}.parquet", data) if row["positive"]["text"].startswith(
        "A long caption about " + load_emoji("train")[0]["name_en"] + ".")]
    assert len(first) == 1
    negatives = [first[0][f"negative_{k}"] for k in (1, 2, 3)]
    assert all(n["text"] is None and n["image"] is not None for n in negatives), negatives


# -- resuming after a kill -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_stage_resumes_and_finished_stages_are_kept(tmp_path, heldout, capfd):
    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "recipes" / "train_mmembed.py"), "--output-dir", str(out), "--no-evaluate",
               "--stages", "1,2", *SMALL, "--max-steps", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (out / "stage2" / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
        assert process.poll() is None and time.time() < deadline, "run ended before stage 2's checkpoint"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stage1 = tree_hashes(out / "stage1" / "model")
    assert not (out / "stage2" / "model" / "modules.json").exists()
    capfd.readouterr()
    # the same command again, in this process (the recipe script is `main(MMEmbedConfig)`)
    assert main(MMEmbedConfig, command[2:]) == 0
    resumed = capfd.readouterr().out
    assert "holds this run, finished" in resumed and "resuming from" in resumed
    assert tree_hashes(out / "stage1" / "model") == stage1
    assert json.loads((out / "stage2" / "model" / "recipe_config.json").read_text())["max_steps"] == 6


@pytest.mark.slow
def test_latent_attention_bidirectional_chain(tmp_path):
    """MM-Embed's architecture through the three stages: stage 2 mines with, and stage 3 continues, a saved
    latent-attention model (its shipped code file is mm_st's own, so no trust_remote_code is needed)."""
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "run"
    argv = ["--output-dir", str(out), "--no-evaluate", "--pooling", "latent_attention", "--attention", "bidirectional",
            *SMALL]
    assert main(MMEmbedConfig, argv) == 0
    for n in (1, 2, 3):
        modules = json.loads((out / f"stage{n}" / "model" / "modules.json").read_text(encoding="utf-8"))
        assert modules[1]["type"] == "latent_attention.LatentAttentionPooling"
        assert (out / f"stage{n}" / "model" / "latent_attention.py").is_file()
    stage3 = SentenceTransformer(str(out / "stage3" / "model"), trust_remote_code=True)
    assert stage3[0].model.config.get_text_config().is_causal is False
    with pytest.raises(ValueError, match="mmembed config: attention='bidirectional' with an adapter needs"):
        MMEmbedConfig(attention="bidirectional", adapter="lora").check()


def test_a_saved_module_file_that_is_not_mm_st_s_is_refused(tmp_path):
    model = build_model(tiny_model("qwen2_vl"), recipe="mmembed", pooling="latent_attention",
                        pooling_kwargs={"num_latents": 8})
    model.save(str(tmp_path / "m"))
    code = tmp_path / "m" / "latent_attention.py"
    code.write_text(code.read_text(encoding="utf-8") + "\n# changed\n", encoding="utf-8")
    with pytest.raises(ValueError, match="latent_attention.py' \\(module LatentAttentionPooling\\) is not mm_st's own code"):
        build_model(str(tmp_path / "m"), recipe="mmembed")


# -- stage 2's mining reads pool paths inside the data root; warnings of a stage that makes things worse -----------


@pytest.mark.parametrize("escape", ["absolute", "dotdot", "symlink"])
def test_mining_pool_paths_stay_inside_the_data_root(tmp_path, escape):
    """A pool candidate that no query names (only stage 2's mining reads it) may not leave the data root (27.11),
    not even with ``--on-missing skip`` (a path outside the root is no missing image)."""
    from PIL import Image

    from mm_st.data.converters import mbeir_candidate_pools
    from mm_st.io import PathOutsideRoot

    root = tmp_path / "mbeir"
    (root / "cand_pool" / "local").mkdir(parents=True)
    (root / "images").mkdir()
    outside = tmp_path / "outside.png"
    for image in (outside, root / "images" / "ok.png"):
        Image.new("RGB", (4, 4)).save(image)
    path = {"absolute": str(outside), "dotdot": "../outside.png", "symlink": "images/link.png"}[escape]
    if escape == "symlink":
        (root / "images" / "link.png").symlink_to(outside)
    rows = [{"did": "7:1", "txt": None, "img_path": "images/ok.png", "modality": "image"},
            {"did": "7:2", "txt": "a caption", "img_path": None, "modality": "text"},
            {"did": "7:3", "txt": None, "img_path": path, "modality": "image"}]
    pool_file = root / "cand_pool" / "local" / "mbeir_user_train_cand_pool.jsonl"
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for on_missing in ("error", "skip"):
        with pytest.raises(PathOutsideRoot, match=r"mbeir_user_train_cand_pool.jsonl row 2 \(candidate 7:3\)"):
            mbeir_candidate_pools(root, "train", on_missing)
    rows[2]["img_path"] = "images/ok.png"
    pool_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pools, dropped = mbeir_candidate_pools(root, "train")
    assert dropped == 0 and [e["image"] for e in pools["7"]] == [str((root / "images" / "ok.png").resolve()), None,
                                                                 str((root / "images" / "ok.png").resolve())]


def test_a_stage_that_lowers_a_held_out_score_is_a_warning():
    from mm_st.training.mmembed import score_drops

    stage1 = {"after": {"mbeir/A_t2i/hit_rate_at_1": 0.9, "mbeir/A_t2i/recall_at_1": 0.02, "mbeir/B_t2t/recall_at_1": 0.8}}
    before = {"mbeir/A_t2i/hit_rate_at_1": 0.1, "mbeir/A_t2i/recall_at_1": 0.0, "mbeir/B_t2t/recall_at_1": 0.5}
    after = {"mbeir/A_t2i/hit_rate_at_1": 0.3, "mbeir/A_t2i/recall_at_1": 0.01, "mbeir/B_t2t/recall_at_1": 0.77}
    warnings = score_drops(before, after, {"1": stage1}, 2, threshold=0.05)
    # A: hit_rate 0.9 -> 0.3 against stage 1 (above its own start 0.1); B: 0.8 -> 0.77 is within the threshold
    assert warnings == ["warning: stage 2 lowered A_t2i hit_rate_at_1 against stage 1: 0.900 -> 0.300 "
                        "(more than max_score_drop 0.05)"]
    assert score_drops(before, after, {"1": stage1}, 2, threshold=0.7) == []
    dropped = score_drops({"mbeir/B_t2t/recall_at_1": 0.8}, {"mbeir/B_t2t/recall_at_1": 0.6}, {}, 3, 0.05)
    assert dropped == ["warning: stage 3 lowered B_t2t recall_at_1 against its start: 0.800 -> 0.600 "
                       "(more than max_score_drop 0.05)"]
    # stage 3 starts from stage 2's model: one warning names both, not two warnings for one drop
    stage2 = {"after": {"mbeir/B_t2t/recall_at_1": 0.8}}
    same = score_drops({"mbeir/B_t2t/recall_at_1": 0.8}, {"mbeir/B_t2t/recall_at_1": 0.6}, {"2": stage2}, 3, 0.05)
    assert same == ["warning: stage 3 lowered B_t2t recall_at_1 against its start = stage 2: 0.800 -> 0.600 "
                    "(more than max_score_drop 0.05)"]


def test_rows_without_a_negative_are_named_and_a_large_loss_is_a_warning(capsys):
    from mm_st.training.mmembed import ModalityAwareStage, report_mining

    stage = ModalityAwareStage()
    counts = {"T_t2i": {"rows": 98, "of": 100, "type1": 10, "type2": 80, "fallback": 8, "fallback_rows": 8, "dropped": 2,
                        "filtered_false_negatives": 1234, "queries_with_filtered": 90, "type2_ranks": [46, 50]},
              "T_t2t": {"rows": 70, "of": 100, "type1": 0, "type2": 70, "fallback": 0, "fallback_rows": 0, "dropped": 30,
                        "filtered_false_negatives": 0, "queries_with_filtered": 0, "type2_ranks": [46, 50]}}
    warnings = report_mining(stage, counts)
    printed = capsys.readouterr().out
    assert "stage 2, T_t2i: 98 of 100 rows mined" in printed and "1,234 candidates filtered as likely false negatives" in printed
    assert "stage 2, T_t2i: 2 of 100 rows dropped: no candidate" in printed
    assert "stage 2, T_t2t: 30 of 100 rows dropped" in printed
    assert warnings == [line for line in printed.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "T_t2t" in warnings[0] and "30%" in warnings[0]  # 2% of T_t2i is under 5%



def test_a_large_fallback_share_is_named_with_its_reason_and_recorded_in_the_counts(monkeypatch, tmp_path, capsys):
    import datasets

    import mm_st.mining
    from mm_st.mining.output import MiningReport
    from mm_st.training.mmembed import ModalityAwareStage, _mine_task, fallback_note, report_mining

    stage = ModalityAwareStage()
    # 10 queries: 6 took a fallback negative, 4 of them after the filter removed candidates
    report = MiningReport(negative_type=[["fallback"]] * 6 + [["type2"]] * 4, fallback_queries=list(range(6)),
                          filtered=[3, 0, 5, 1, 0, 2, 9, 0, 0, 0], margin_removed=20)
    monkeypatch.setattr(mm_st.mining, "mine_hard_negatives", lambda *a, **k: (datasets.Dataset.from_dict(
        {"anchor": ["q"] * 10}), report))
    ds = datasets.Dataset.from_dict({"qid": [f"9:{i}" for i in range(10)], "positive_id": [f"9:c{i}" for i in range(10)],
                                     "anchor": ["q"] * 10})
    pool = [{"did": f"9:c{i}", "txt": None, "image": "x.png", "modality": "image"} for i in range(60)]
    plan = type("Plan", (), {"work_dir": lambda self, name: tmp_path / name})()
    _, counts = _mine_task(stage, "Cat_t2i", ds, {"9": pool}, {}, None, plan)
    assert counts["fallback_rows"] == 6 and counts["fallback_rows_filtered"] == 4
    expected = ("stage 2, Cat_t2i: 6 of 10 rows (60%) had no candidate at ranks 46-50 and took the nearest one above "
                "them: for 4 of them the false-negative filter (relative_margin 0.05) removed the window's candidates; ")
    assert counts["fallback_note"].startswith(expected)
    assert counts["fallback_note"].endswith("; 2 had too few right-modality candidates besides their positives in the top 50")
    json.dumps(counts)  # goes into mining.json as is
    report_mining(stage, {"Cat_t2i": counts})
    assert capsys.readouterr().out.count(expected) == 1
    # at or under max_unmined_share (5%): no line; older mining.json counts without the note still print
    assert fallback_note(stage, "Cat_t2i", {**counts, "of": 120}) is None  # 6 of 120 = 5%
    report_mining(stage, {"Cat_t2i": {k: v for k, v in counts.items() if k != "fallback_note"}})
    assert "took the nearest" not in capsys.readouterr().out


# -- under torchrun ------------------------------------------------------------------------------------------------

# float64 and no dropout: 2 processes reproduce 1 process up to the order of the sums
DIST = ["--dtype", "float64", "--lora-dropout", "0", "--threads", "1", "--seed", "3"]


def _stage_losses(out: Path, n: int) -> dict[int, float]:
    from transformers.trainer_utils import get_last_checkpoint

    state = Path(get_last_checkpoint(str(out / f"stage{n}" / "checkpoints"))) / "trainer_state.json"
    return {e["step"]: e["loss"] for e in json.loads(state.read_text(encoding="utf-8"))["log_history"] if "loss" in e}


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {f"{p.name}/{k}": v for p in sorted(model_dir.rglob("*.safetensors")) for k, v in load_file(p).items()}


def _torchrun(runs: list[list[str]]) -> subprocess.CompletedProcess:
    """One torchrun start (2 processes) running the MM-Embed recipe's main once per argument list, in turn
    (tests/recipe_runs_worker.py; recipes/train_mmembed.py is that main)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                           str(ROOT / "tests" / "recipe_runs_worker.py"), "MMEmbedConfig", json.dumps(runs)], env=env,
                          capture_output=True, text=True, timeout=900)


def _same_stages(one: Path, two: Path, stages: tuple[int, ...]) -> None:
    """Each stage's logged losses and saved weights, and stage 2's mined negatives, are those of one process."""
    for n in stages:
        single, double = _stage_losses(one, n), _stage_losses(two, n)
        assert sorted(single) == sorted(double) and single, (n, single, double)
        assert double == {step: pytest.approx(loss, rel=1e-6) for step, loss in single.items()}, (n, single, double)
        a, b = _weights(one / f"stage{n}" / "model"), _weights(two / f"stage{n}" / "model")
        assert a.keys() == b.keys() and a
        for name in a:
            # Adam turns last-bit differences of near-zero gradients into weight differences up to ~1e-7 (measured
            # 7.6e-8 on weights ~0.08); a step moves weights by up to lr = 5e-4
            torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=f"stage {n} {name}")
    if 2 in stages:
        import datasets

        def rows(out: Path, name: str) -> str:  # the embedded default's image paths lie under each output folder
            return json.dumps(datasets.Dataset.from_parquet(str(out / "mined-negatives" / name)).to_list()).replace(str(out), "")

        names = sorted(p.name for p in (one / "mined-negatives").glob("*.parquet"))
        assert names and names == sorted(p.name for p in (two / "mined-negatives").glob("*.parquet"))
        for name in names:
            assert rows(one, name) == rows(two, name), name


TWO_PROCESS_CASES = ("embedded", "user-qwen2_vl")


def _two_process_case(case: str, root: Path, heldout: Path) -> tuple[list[str], tuple[int, ...]]:
    """The recipe's arguments (no output folder) and the stages it runs, for one case of the 2-process test."""
    if case == "embedded":  # its three stages: the backbone and data are written by rank 0 and read by both
        return [*SMALL, "--no-evaluate", *DIST], (1, 2, 3)
    data = write_mbeir(root / "mbeir", split="train", limit=24)
    return ["--model", tiny_model("qwen2_vl", head=False), "--data", str(data), "--stages", "1,2",
            "--eval-data", str(heldout),
            "--max-steps", "2", "--global-batch-size", "8", "--save-steps", "2", "--logging-steps", "1",
            "--mining-top-k", "10", "--mining-ranks", "6,8", *DIST], (1, 2)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> dict[str, tuple[Path, tuple[int, ...], str]]:
    """Each case of test_two_processes_run_the_stages_of_one_process run in 1 process (here) and in 2 (torchrun):
    both 2-process runs in one torchrun start, one after the other. Per case: its folder (one/, two/), its stages and
    the 2-process run's main-process output. The user case evaluates on 8 held-out emoji (the five tasks, as with
    16: what is compared is the same scores in 1 and 2 processes, not their values)."""
    root = tmp_path_factory.mktemp("two-process")
    heldout = write_mbeir(root / "heldout", split="test", limit=8)
    cases = {case: _two_process_case(case, root / case, heldout) for case in TWO_PROCESS_CASES}
    for case, (argv, _) in cases.items():
        assert main(MMEmbedConfig, [*argv, "--output-dir", str(root / case / "one")]) == 0, case
    two = _torchrun([[*argv, "--output-dir", str(root / case / "two")] for case, (argv, _) in cases.items()])
    assert two.returncode == 0, two.stderr[-3000:]
    outputs = outputs_by_run(two.stdout)
    assert len(outputs) == len(cases), two.stdout[-3000:]
    return {case: (root / case, stages, out) for (case, (_, stages)), out in zip(cases.items(), outputs)}


@pytest.mark.slow
@pytest.mark.parametrize("case", TWO_PROCESS_CASES)
def test_two_processes_run_the_stages_of_one_process(two_process_runs, case):
    """torchrun, 2 CPU processes (gloo) at the same global batch: every stage boundary, the embedded default's files and
    stage 2's mining wait for the process that writes them; the losses, mined negatives and saved models are those of
    1 process. The user case mixes image and text columns on a LoRA model (DDP once failed there: a vision-tower
    parameter 'marked as ready twice') and is evaluated after each stage (rank 0 evaluates while the other waits).
    Both cases' 2-process runs share one torchrun start (fixture two_process_runs)."""
    tmp_path, stages, two_stdout = two_process_runs[case]
    for n in stages:  # the full plan (the console's is short)
        plan = (tmp_path / "two" / f"stage{n}" / "plan.txt").read_text(encoding="utf-8")
        assert "8 queries per step = 4 per process x 2 process(es)" in plan, n
    assert two_stdout.count("=== MM-Embed stage") == len(stages)  # printed once, by the main process
    _same_stages(tmp_path / "one", tmp_path / "two", stages)
    single, double = _manifest(tmp_path / "one")["stages"], _manifest(tmp_path / "two")["stages"]
    for n in map(str, stages):
        assert double[n]["after"] == pytest.approx(single[n]["after"]), n
    assert bool(single["1"]["after"]) == (case != "embedded")
