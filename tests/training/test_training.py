"""The training layer (mm_st.training) and the recipes recipes/train_{e5v,vlm2vec,mme5}.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mm_st.training import E5VConfig, MME5Config, VLM2VecConfig, load_config, run_stage
from mm_st.training.cli import main
from tests.recipe_runs_worker import outputs_by_run
from tests.synthesis_support import free_port

ROOT = Path(__file__).resolve().parents[2]
E5V_LM_ONLY = r"^(?!.*vision|.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
V1_TARGETS = "qkv_proj,o_proj,gate_up_proj,down_proj,k_proj,q_proj,out_proj,v_proj"
FAST = ["--eval-languages", "en", "--logging-steps", "1"]


# -- configs ------------------------------------------------------------------------------------


def test_e5v_defaults_are_kongds_run_sh():
    c = E5VConfig()
    assert (c.temperature, c.lora_r, c.lora_alpha, c.lora_dropout, c.learning_rate) == (0.05, 64, 16, 0.05, 4e-4)
    assert (c.global_batch_size, c.mini_batch_size, c.max_text_tokens, c.max_length) == (768, 24, 32, None)
    assert (c.num_train_epochs, c.warmup, c.quantization, c.adapter) == (2.0, 100, "4bit", "lora")
    assert (c.num_negatives, c.hard_negative_scope, c.gather_across_devices, c.mask_duplicates) == (1, "shared", True, False)
    assert c.lora_target_modules == E5V_LM_ONLY and c.prompt_format == "inference"
    assert E5VConfig(train_template="upstream").prompt_format == "train"
    with pytest.raises(ValueError, match="train_template='other' is not one of inference, upstream"):
        E5VConfig(train_template="other")


@pytest.mark.parametrize("family", ["llava_next", "qwen2_vl", "mllama", pytest.param("text_lm", marks=pytest.mark.slow)])
def test_e5v_adapter_covers_the_language_model_only(family, request):
    from mm_st import build_model
    from mm_st.testing import tiny_model

    path = request.getfixturevalue("smollm2") if family == "text_lm" else tiny_model(family)
    model = build_model(path, recipe="e5v", adapter=E5VConfig().adapter_config())
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in model[0].model.named_parameters() if ".lora_A." in n}
    assert adapted and not [n for n in adapted if "vision" in n or "visual" in n]
    assert {n.rsplit(".", 1)[1] for n in adapted} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_vlm2vec_defaults_are_the_v1_llava_next_run():
    c = VLM2VecConfig()
    assert (c.temperature, c.adapter, c.lora_r, c.lora_alpha, c.lora_dropout, c.lora_init) == (0.02, "dora", 8, 64, 0.1, "gaussian")
    assert (c.learning_rate, c.max_steps, c.warmup, c.global_batch_size, c.mini_batch_size) == (2e-5, 2000, 100, 1024, 2)
    assert (c.max_length, c.num_negatives, c.hard_negative_scope, c.data_split, c.batch_mixing) == (256, 0, "shared", "original", "mixed")
    assert c.lora_target_modules == V1_TARGETS and c.max_rows_per_dataset == 50000 and len(c.data_configs) == 20
    assert c.adapter_config()["target_modules"] == V1_TARGETS.split(",")
    assert c.adapter_config()["init_lora_weights"] == "gaussian" and c.adapter_config()["use_dora"] is True


def test_mme5_defaults_are_haon_chen_train_sh():
    c = MME5Config()
    assert (c.adapter, c.lora_r, c.lora_alpha, c.lora_dropout, c.learning_rate) == ("dora", 8, 64, 0.1, 1e-5)
    assert (c.num_train_epochs, c.max_length, c.temperature, c.warmup, c.max_grad_norm) == (1.0, 256, 0.02, 0.05, 5.0)
    assert (c.num_negatives, c.hard_negative_scope, c.mine_rank, c.mini_batch_size) == (3, "own", 70, 2)
    assert (c.global_batch_size, c.synthetic_configs, c.synthetic_only) == (128, ["Classification", "Retrieval", "VQA"], False)


def test_every_paper_value_names_its_source():
    from mm_st.training import describe

    lines = "\n".join(describe(E5VConfig()))
    assert "temperature = 0.05   (kongds/E5-V run.sh / ft_llm.py (cosine / 0.05))" in lines
    assert "num_train_epochs = 2.0   (kongds/E5-V run.sh EPOCH=2 (the paper says 1: --num-train-epochs 1))" in lines
    assert "llava16-mistral-lora8-bs1024-step2k.sh" in "\n".join(describe(VLM2VecConfig()))


def test_config_file_then_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: org/name\ndata: some/data\nlearning_rate: 0.5\nglobal-batch-size: 64\n", encoding="utf-8")
    c = load_config(VLM2VecConfig, ["--config", str(path), "--learning-rate", "0.25", "--data-configs", "A,B"])
    assert (c.learning_rate, c.global_batch_size, c.data_configs, c.max_steps) == (0.25, 64, ["A", "B"], 2000)
    assert not c.embedded
    embedded = load_config(VLM2VecConfig, ["--max-steps", "7"])
    assert embedded.embedded and embedded.max_steps == 7 and embedded.global_batch_size == 32
    assert load_config(VLM2VecConfig, ["--no-gather-across-devices"]).gather_across_devices is False


@pytest.mark.parametrize("text, message", [
    ("learning_rte: 0.1\n", "unknown config field(s) ['learning_rte']"),
    ("global_batch_size: many\n", "global_batch_size='many' is not a valid int"),
    ("recipe: mme5\n", "is a config for another recipe, not 'vlm2vec'"),
    ("adapter: prefix\n", "adapter='prefix' is not one of lora, dora, none"),
    ("temperature: 0\n", "temperature must be > 0, got 0.0"),
])
def test_bad_config_file_names_the_field_and_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        load_config(VLM2VecConfig, ["--config", str(path)])
    assert message in str(info.value)
    assert "bad.yaml" in str(info.value) or "config:" in str(info.value)


# -- dry run ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, expected", [
    (E5VConfig, ["model: ", "(family llava_next", "data: nli 1,458 rows", "loss: MultimodalInfoNCELoss(temperature=0.05"]),
    (VLM2VecConfig, ["data: ImageNet_1K 1,458 rows, MSCOCO_t2i 1,458 rows, MSCOCO_i2t 1,458 rows = 4,374 rows",
                     "hard_negative_scope='shared'", "steps: 150 optimizer steps"]),
    (MME5Config, ["(family mllama", "synthetic/Classification 400 rows", "hard_negative_scope='own'",
                  "MMEB-train negatives: mined at rank 70 with the base model before training, padded to 3"]),
])
def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys, cls, expected):
    out_dir = tmp_path / "run"
    assert main(cls, ["--dry-run", "--output-dir", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    for line in expected + ["batch: ", "gradient accumulation 1", f"output: {out_dir}", "dry run: plan checked"]:
        assert line in printed
    assert not (out_dir / "checkpoints").exists() and not (out_dir / "model").exists()


def test_mme5_synthetic_only_plan_has_no_mmeb_train_and_no_mining(tmp_path, capsys):
    assert main(MME5Config, ["--dry-run", "--synthetic-only", "--output-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "data: synthetic/Classification 400 rows, synthetic/Retrieval 400 rows = 800 rows" in printed
    assert "ImageNet_1K" not in printed.split("config (source")[0] and "mined at rank" not in printed


@pytest.mark.parametrize("recipe, model", [("e5v", "llava-hf/llama3-llava-next-8b-hf"),
                                           ("vlm2vec", "llava-hf/llava-v1.6-mistral-7b-hf"),
                                           ("mme5", "meta-llama/Llama-3.2-11B-Vision")])
def test_paper_configs_offline_stop_at_the_download(tmp_path, capsys, recipe, model):
    from mm_st.training import CONFIGS

    config = ROOT / "recipes" / "configs" / f"{recipe}.yaml"
    assert main(CONFIGS[recipe], ["--dry-run", "--config", str(config), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"error: Could not resolve model {model!r} (a Hub id needs network access or the HF cache" in err


@pytest.fixture(scope="module")
def embedded_mmeb(tmp_path_factory):
    """The embedded VLM2Vec data and tiny backbone, written once (a dry run)."""
    out = tmp_path_factory.mktemp("embedded")
    assert main(VLM2VecConfig, ["--dry-run", "--output-dir", str(out)]) == 0
    return out


@pytest.mark.parametrize("flags, message", [
    (["--data-configs", "ImageNet_1K,Nope"], "dataset config(s) ['Nope'] not in"),
    (["--image-root", "/nonexistent/images"], "image_root '/nonexistent/images' is not a directory"),
    (["--max-rows-per-dataset", "4", "--global-batch-size", "32"], "12 training rows are fewer than one global batch of 32"),
    (["--batch-mixing", "per_dataset", "--max-rows-per-dataset", "8", "--global-batch-size", "16"],
     "have fewer rows than one batch of 16 per process"),
])
def test_dry_run_refuses_inconsistent_plans(embedded_mmeb, capsys, flags, message):
    data = next((embedded_mmeb / "data").glob("mmeb-train-seed42-*"))
    argv = ["--dry-run", "--model", str(embedded_mmeb / "base-model" / "llava_next-seed42"), "--data", str(data), "--image-root",
            str(data / "images"), "--data-configs", "ImageNet_1K,MSCOCO_t2i,MSCOCO_i2t", "--output-dir",
            str(embedded_mmeb / "bad"), "--eval-data", str(embedded_mmeb / "data" / "xtd-heldout")]
    assert main(VLM2VecConfig, argv + flags) == 2
    assert message in capsys.readouterr().err


def test_batch_not_divisible_by_processes(embedded_mmeb, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(VLM2VecConfig, ["--dry-run", "--output-dir", str(embedded_mmeb)]) == 2
    assert "global_batch_size 32 is not divisible by the 3 processes" in capsys.readouterr().err


# -- end to end ---------------------------------------------------------------------------------


def _trainer_losses(checkpoint: Path) -> dict[int, float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}


@pytest.mark.slow
@pytest.mark.parametrize("cls", [E5VConfig, VLM2VecConfig, MME5Config])
def test_embedded_recipe_end_to_end(tmp_path, cls):
    from sentence_transformers import SentenceTransformer

    from mm_st.training.embedded import write_xtd

    # the paper's adapter (the embedded default itself trains full weights); evaluated on 32 held-out emoji in the XTD
    # layout instead of the embedded default's 391 (which test_hub's `published` recipe run evaluates)
    config = cls.embedded_default(max_steps=3, save_steps=3, logging_steps=1, eval_languages=["en", "zh"],
                                  eval_data=str(write_xtd(tmp_path / "xtd", languages=("en", "zh"), limit=32)),
                                  max_rows_per_dataset=96, output_dir=str(tmp_path / "run"), adapter=cls().adapter)
    result = run_stage(config)
    model_dir = tmp_path / "run" / "model"
    assert result.model_dir == model_dir and result.steps == 3
    for name in ("modules.json", "adapter_model.safetensors", "training_curve.png", "recipe_config.json", "eval_results.json"):
        assert (model_dir / name).is_file(), name
    scores = json.loads((model_dir / "eval_results.json").read_text(encoding="utf-8"))
    assert set(scores["before"]) == set(scores["after"]) == {"xtd_recall_at_1", "xtd_recall_at_10"}
    assert all(0.0 <= v <= 1.0 for v in scores["after"].values())
    mteb_files = sorted((model_dir / "eval").rglob("XTDT2IRetrieval.json"))
    assert [p.parent.name for p in mteb_files] == ["step-0", "step-3"]
    assert {s["hf_subset"] for s in json.loads(mteb_files[1].read_text())["scores"]["test"]} == {"en", "zh"}
    # the saved folder is a plain sentence-transformers model with the trained weights
    inputs = ["a red heart", "grinning face"]
    loaded = SentenceTransformer(str(model_dir))
    assert torch.allclose(loaded.encode(inputs, convert_to_tensor=True), result.model.encode(inputs, convert_to_tensor=True), atol=1e-5)
    assert json.loads((model_dir / "recipe_config.json").read_text())["recipe"] == cls.recipe


def test_e5v_cuts_sentences_before_the_prompt(tmp_path):
    from mm_st.training.data import cut_texts

    from transformers import AutoTokenizer
    from mm_st.testing import tiny_model
    import datasets

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("llava_next"))
    long = "one two three four five six seven eight nine ten"
    ds = {"nli": datasets.Dataset.from_dict({"anchor": [long], "positive": ["short"]})}
    cut = cut_texts(ds, tokenizer, 3)["nli"][0]
    assert cut["positive"] == "short"
    assert len(tokenizer(cut["anchor"], add_special_tokens=False)["input_ids"]) == 3 and long.startswith(cut["anchor"])


@pytest.mark.slow
def test_second_run_with_another_config_in_the_same_folder_is_refused_or_starts_over(tmp_path):
    from mm_st.training.embedded import write_xtd

    out = str(tmp_path / "run")
    # what is pinned is the refusal and the start-over, not training or evaluation: one step, and the held-out
    # evaluation (before and after each run) on 64 emoji instead of the embedded default's 391, written once here
    held_out = str(write_xtd(tmp_path / "xtd", limit=64))
    common = dict(max_steps=1, save_steps=1, max_rows_per_dataset=64, output_dir=out, eval_data=held_out)
    first = run_stage(E5VConfig.embedded_default(**common, eval_languages=["es"]))
    with pytest.raises(ValueError, match=r"holds a run with another config \(eval_languages: .*; learning_rate: 0.001 -> 0.5\)"):
        run_stage(E5VConfig.embedded_default(**common, learning_rate=0.5))
    # --resume never starts over: nothing of the first run (its 'before' scores, data, backbone) is reused
    again = run_stage(E5VConfig.embedded_default(**common, eval_languages=["zh"], resume="never", seed=7))
    fresh = run_stage(E5VConfig.embedded_default(**{**common, "output_dir": str(tmp_path / "fresh")},
                                                 eval_languages=["zh"], seed=7))
    assert again.before == fresh.before != first.before
    assert sorted(p.name for p in (tmp_path / "run" / "base-model").iterdir()) == ["llava_next-seed7"]


# -- distributed and resumable ------------------------------------------------------------------

TWO_PROC = ["--max-steps", "2", "--save-steps", "2", "--dtype", "float64", "--lora-dropout", "0", "--no-evaluate",
            "--max-rows-per-dataset", "64", "--logging-steps", "1", "--seed", "3"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_two_processes_give_the_loss_of_one_process_on_the_whole_batch(tmp_path):
    """torchrun, 2 CPU processes (gloo), cross-device negatives: losses equal 1 process with both halves."""
    # the 1-process reference in this process (the recipe script is `main(VLM2VecConfig)`): no interpreter start-up
    assert main(VLM2VecConfig, [*TWO_PROC, "--global-batch-size", "16", "--output-dir", str(tmp_path / "one")]) == 0
    single = _trainer_losses(tmp_path / "one" / "checkpoints" / "checkpoint-2")
    cases = (("two", []), ("two-gradcache", ["--mini-batch-size", "4"]))  # GradCache under DDP too
    # one torchrun start serves both 2-process runs: each rank runs the recipe's main once per case, in turn
    runs = [[*TWO_PROC, *extra, "--global-batch-size", "16", "--output-dir", str(tmp_path / name)] for name, extra in cases]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), str(ROOT / "tests" / "recipe_runs_worker.py"), "VLM2VecConfig",
                          json.dumps(runs)], env=_env(), capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    outputs = outputs_by_run(two.stdout)  # the main process's output, by run
    assert len(outputs) == len(cases), two.stdout[-3000:]
    for (name, extra), stdout in zip(cases, outputs):
        plan = (tmp_path / name / "plan.txt").read_text(encoding="utf-8")  # the full plan (the console's is short)
        assert "16 queries per step = 8 per process x 2 process(es)" in plan
        assert ("CachedMultimodalInfoNCELoss" in plan) == ("CachedMultimodalInfoNCELoss" in stdout) == bool(extra)
        double = _trainer_losses(tmp_path / name / "checkpoints" / "checkpoint-2")
        assert sorted(single) == sorted(double) == [1, 2]
        for step in single:
            assert double[step] == pytest.approx(single[step], rel=1e-6), (name, step, single, double)


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tmp_path, capfd):
    """SIGKILL after a complete checkpoint, the newest checkpoint then stripped to what a kill right after its
    creation leaves (whatever the kill's moment, the window is hit on purpose); the same command skips it and
    logs the losses of an uninterrupted run."""
    from mm_st.training.outputs import checkpoint_gaps, checkpoints_newest_first

    script = str(ROOT / "recipes" / "train_vlm2vec.py")
    args = ["--max-steps", "8", "--save-steps", "2", "--no-evaluate", "--max-rows-per-dataset", "96",
            "--global-batch-size", "8", "--logging-steps", "1"]
    # the uninterrupted reference in this process (only the killed run needs a process of its own)
    assert main(VLM2VecConfig, [*args, "--output-dir", str(tmp_path / "full")]) == 0
    command = [sys.executable, script, *args, "--output-dir", str(tmp_path / "killed")]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 600
    while not (checkpoints / "checkpoint-4").is_dir() or checkpoint_gaps(checkpoints / "checkpoint-4"):
        assert process.poll() is None and time.time() < deadline, "run ended before its checkpoint"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "model").exists()
    newest = checkpoints_newest_first(checkpoints)[0]
    for path in newest.iterdir():  # a kill right after the trainer created it: its first config file only
        if path.name != "config_sentence_transformers.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    capfd.readouterr()
    # the same command again, in this process (the recipe script is `main(VLM2VecConfig)`)
    assert main(VLM2VecConfig, command[2:]) == 0
    resumed = capfd.readouterr()
    assert f"{newest.name} is incomplete (lacks modules.json" in resumed.out
    assert "resuming from " in resumed.out and "checkpoint-" in resumed.out
    expected = _trainer_losses(tmp_path / "full" / "checkpoints" / "checkpoint-8")
    got = _trainer_losses(tmp_path / "killed" / "checkpoints" / "checkpoint-8")
    assert sorted(got) == list(range(1, 9))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-5), (step, expected, got)


@pytest.mark.slow
def test_runs_under_accelerate_launch_with_the_shipped_ddp_config(tmp_path):
    """accelerate's launcher and config file (on CPU accelerate runs one process without MPI)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--config_file", str(ROOT / "recipes" / "configs" / "accelerate" / "ddp.yaml"),
               "--cpu", "--num_processes", "1", str(ROOT / "recipes" / "train_vlm2vec.py"), "--max-steps", "1",
               "--save-steps", "1", "--no-evaluate", "--max-rows-per-dataset", "32", "--global-batch-size", "8",
               "--output-dir", str(tmp_path / "run")]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "model" / "modules.json").is_file()
    assert _trainer_losses(tmp_path / "run" / "checkpoints" / "checkpoint-1").keys() == {1}
