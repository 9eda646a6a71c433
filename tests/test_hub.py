"""mm_st.hub against a local Hub (tests/hub_server.py, a real HTTP server on 127.0.0.1): a recipe run that pushes,
the round trip into a Python where mm_st is not importable, mteb by Hub id, the card, tokens, failures mid-push,
and what a saved folder carries (mm_st.portable)."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard

from mm_st import build_model
from mm_st.hub import PushError, push_model
from mm_st.portable import local_state
from mm_st.testing import tiny_model
from tests.hub_server import FakeHub, use_in_process

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_mmstFakeHubToken_Q7x2Lw9pK4"
TEXTS = ["a red heart", "grinning face with big eyes"]
# The start of a script for ``python -I -S`` that proves mm_st cannot be imported there (site-packages only).
NO_MM_ST = f"""
import sys
sys.path.append({sysconfig.get_path("purelib")!r})
try:
    import mm_st
except ImportError:
    pass
else:
    raise SystemExit("mm_st is importable here")
"""
BASE_CARD = "---\nlicense: apache-2.0\n---\n\n# tiny base\n"


def client_env(hub: FakeHub, home: Path, token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    """Environment of a process that talks to ``hub`` (online, no Xet, its own HF_HOME)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "PYTHONPATH")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home), OMP_NUM_THREADS="1",
               HF_HUB_DISABLE_TELEMETRY="1", **extra)
    if token:
        env["HF_TOKEN"] = token
    return env


@pytest.fixture(scope="module")
def hub():
    with FakeHub(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """The E5-V recipe (embedded default, LoRA, 2 steps) run with --push-to-hub against the local Hub, its tiny base
    model pushed there first (with a card stating a licence)."""
    root = tmp_path_factory.mktemp("published")
    out = root / "run"
    argv = [sys.executable, "recipes/train_e5v.py", "--adapter", "lora", "--max-steps", "2", "--save-steps", "2",
            "--max-rows-per-dataset", "64", "--eval-languages", "en", "--output-dir", str(out),
            "--push-to-hub", "org/e5v-tiny", "--hub-base-model", "org/tiny-base"]
    with pytest.MonkeyPatch.context() as patch:
        use_in_process(patch, hub, TOKEN)
        from mm_st.hub import push_folder
        from mm_st.training import E5VConfig
        from mm_st.training.cli import main

        # the dry run (in this process: the recipe script is `main(E5VConfig)`) writes the run's embedded backbone
        # (recorded as the run's own), which the run then reuses
        assert main(E5VConfig, [*argv[2:], "--dry-run"]) == 0
        base = out / "base-model" / "llava_next-seed42"
        (base / "README.md").write_text(BASE_CARD, encoding="utf-8")
        push_folder(base, "org/tiny-base", repo_type="model", endpoint=hub.url)
    run = subprocess.run(argv, cwd=ROOT, env=client_env(hub, root / "hf-home"), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return {"root": root, "model_dir": out / "model", "base": base, "argv": [argv], "outputs": [run.stdout, run.stderr]}


def _isolated_embed(repos: list[str], image: Path, out: Path) -> str:
    """A script for ``python -I -S`` (no site hooks: neither the editable mm_st finder nor mm_st's mteb hook; no
    current directory on sys.path) that proves ``import mm_st`` fails, then loads each repo by id and saves its
    embeddings of TEXTS and one image."""
    return NO_MM_ST + f"""
import numpy as np
from PIL import Image
from sentence_transformers import SentenceTransformer

for index, repo in enumerate({repos!r}):
    model = SentenceTransformer(repo)
    text = model.encode({TEXTS!r})
    image = model.encode([Image.open({str(image)!r})])
    np.save({str(out)!r} + f"/{{index}}.npy", np.concatenate([text, image]))
print("isolated ok", repr(type(model).__module__))
"""


@pytest.mark.slow
def test_recipe_push_round_trip_loads_anywhere_and_runs_in_mteb(hub, published, tmp_path, monkeypatch):
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    from mm_st.data import load_emoji
    from mm_st.training.embedded import write_xtd

    model_dir = published["model_dir"]
    # adapter only, pointing at the base model's Hub id; the pushed JSON files carry nothing of the training machine
    files = hub.files("org/e5v-tiny")
    assert {"adapter_config.json", "adapter_model.safetensors", "modules.json", "chat_template.jinja",
            "processor_config.json", "README.md", "training_curve.png", "recipe_config.json"} <= set(files)
    assert "model.safetensors" not in files and "config.json" not in files
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "org/tiny-base"
    assert files["adapter_model.safetensors"] == (model_dir / "adapter_model.safetensors").read_bytes()
    assert [c.title for c in hub.commits("org/e5v-tiny")] == ["initial commit", "Upload adapter with mm_st"]
    # mteb (with mm_st) evaluates the adapter repo by its id, in its own process, while this one goes on
    xtd = write_xtd(tmp_path / "xtd", languages=("en",), limit=16)
    mteb_argv = [str(Path(sys.executable).with_name("mteb")), "run", "-m", "org/e5v-tiny", "-t", "XTDT2IRetrieval",
                 "-l", "eng", "--output-folder", str(tmp_path / "mteb"), "--no-co2-tracker"]
    mteb = _start(mteb_argv, tmp_path / "mteb.log", cwd=tmp_path,
                  env=client_env(hub, tmp_path / "home-mteb", MM_ST_XTD_DATA=str(xtd)))
    # merged weights of the same model, through the command line, with the token from the login cache
    use_in_process(monkeypatch, hub, None)
    login_cache = tmp_path / "login-token"
    login_cache.write_text(TOKEN)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(login_cache))
    from mm_st.__main__ import main

    # in this process huggingface_hub read HF_ENDPOINT at import: the command's push goes to the local Hub explicitly
    monkeypatch.setattr("mm_st.hub.push_model", _with_endpoint(push_model, hub.url))
    assert main(["push", str(model_dir), "org/e5v-tiny-merged", "--merge-adapter"]) == 0
    merged = hub.files("org/e5v-tiny-merged")
    assert "model.safetensors" in merged and "adapter_config.json" not in merged
    # a fresh Python without mm_st loads both repos by id
    image_path = tmp_path / "emoji.png"
    load_emoji("test")[0]["image"].convert("RGB").save(image_path)
    (tmp_path / "emb").mkdir()
    load_argv = [sys.executable, "-I", "-S", "-c", _isolated_embed(["org/e5v-tiny", "org/e5v-tiny-merged"], image_path,
                                                                   tmp_path / "emb")]
    loader = _start(load_argv, tmp_path / "load.log", cwd=tmp_path, env=client_env(hub, tmp_path / "home-load", token=None))
    # reference: the trained folder on this machine
    local = SentenceTransformer(str(model_dir))
    reference = np.concatenate([local.encode(TEXTS), local.encode([Image.open(image_path)])])
    load_out, mteb_out = _finish(loader, tmp_path / "load.log"), _finish(mteb, tmp_path / "mteb.log")
    assert loader.returncode == 0, load_out[-3000:]
    assert "isolated ok 'sentence_transformers" in load_out
    for index in (0, 1):  # adapter-only, then merged
        assert np.abs(np.load(tmp_path / "emb" / f"{index}.npy") - reference).max() <= 1e-6
    assert mteb.returncode == 0, mteb_out[-3000:]
    (result,) = (tmp_path / "mteb").rglob("XTDT2IRetrieval.json")
    scores = json.loads(result.read_text())["scores"]["test"]
    assert [s["hf_subset"] for s in scores] == ["en"] and 0.0 <= scores[0]["recall_at_10"] <= 1.0
    # the token is in no output, file, card, request body or command line of the whole flow
    texts = [*published["outputs"], load_out, mteb_out]
    assert not [t for t in texts if TOKEN in t]
    stored = [p for folder in (published["root"], tmp_path) for p in folder.rglob("*")
              if p.is_file() and p != login_cache and TOKEN.encode() in p.read_bytes()]
    assert stored == []
    assert not [b for b in [*hub.blobs.values(), *hub.bodies] if TOKEN.encode() in b]
    assert not [a for argv in [*published["argv"], load_argv, mteb_argv] for a in argv if TOKEN in a]
    assert any(h.get("authorization") == f"Bearer {TOKEN}" for h in hub.headers)  # sent, as a header only


def _start(argv: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """Start a process with its output (stdout and stderr) going to ``log``."""
    with log.open("w") as handle:
        return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, text=True, **kwargs)


def _finish(process: subprocess.Popen, log: Path) -> str:
    process.wait(timeout=600)
    return log.read_text()


def _with_endpoint(function, endpoint):
    return lambda *args, **kwargs: function(*args, **{"endpoint": endpoint, **kwargs})


@pytest.mark.slow
def test_card_parses_and_holds_metadata_model_index_usage_and_sources(hub, published):
    card = ModelCard(hub.files("org/e5v-tiny")["README.md"].decode())
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.base_model, data.license) == (
        "sentence-transformers", "sentence-similarity", "org/tiny-base", "apache-2.0")  # licence inherited
    assert data.to_dict()["base_model_relation"] == "adapter"
    assert {"mteb", "mm_st", "e5v", "sentence-transformers"} <= set(data.tags)
    assert data.language == ["en", "es", "it", "ko", "pl", "ru", "tr", "zh"]
    # the model-index (mteb's conversion, read back by huggingface_hub) holds the run's score after training
    mteb_file = max(published["model_dir"].glob("eval/results/*/step-*/XTDT2IRetrieval.json"), key=lambda p: p.parent.name)
    after = json.loads(mteb_file.read_text())["scores"]["test"][0]
    (result,) = data.eval_results
    assert (result.dataset_type, result.dataset_config, result.metric_type, result.metric_value) == (
        "mm_st/emoji-heldout", "en", "recall_at_10", after["recall_at_10"])
    assert data.model_name == "org/e5v-tiny"
    text = card.text
    assert 'SentenceTransformer("org/e5v-tiny")' in text and "encode_query(" in text and "encode_document(" in text
    assert "pip install -U sentence-transformers peft" in text
    assert "![Training loss and held-out metric per optimizer step](training_curve.png)" in text
    assert "max_steps = 2   (set for this run)" in text and "temperature = 0.05   (kongds/E5-V" in text
    assert "author={Jiang, Ting and Song, Minghui" in text and "@inproceedings{reimers-2019-sentence-bert" in text
    assert "no instruction slot" in text and "## Limitations" in text
    scores = json.loads((published["model_dir"] / "eval_results.json").read_text())
    assert "`XTDT2IRetrieval` on unseen emoji of mm_st's bundled data (test split), in the XTD layout" in text
    assert "| task | metric | before training | after training |" in text
    for key in ("xtd_recall_at_1", "xtd_recall_at_10"):
        assert (f"| XTDT2IRetrieval (mean over languages) | {key[4:]} | {scores['before'][key]:.4f} | "
                f"{scores['after'][key]:.4f} |") in text
    # sentence-transformers' own content that still holds appears once; its placeholders and wrong parts do not
    assert text.count("### Full Model Architecture") == 1 and text.count("#### Framework Versions") == 1
    assert "sentence_transformers_model_id" not in text and "[Unknown]" not in text
    assert str(published["root"]) not in text and "<local path, not published>" in text
    assert local_state_of_files(hub.files("org/e5v-tiny")) == []


def local_state_of_files(files: dict[str, bytes]) -> list[str]:
    from mm_st.portable import state_of

    return [p for name, data in files.items() if name.endswith(".json") for p in state_of(json.loads(data), name)]


@pytest.mark.slow
def test_saved_folder_keeps_no_load_time_state(published):
    """A stage's saved model: no load-time flag in any JSON file; its only local paths are the adapter's base (a
    local-only tiny backbone, so the folder still loads here; never pushed, see the merged push) and the run
    record's output directory (published as a marker)."""
    found = local_state(published["model_dir"])
    assert not [f for f in found if "load-time flag" in f]
    assert sorted(f.split(":")[0] for f in found) == ["adapter_config.json", "recipe_config.json"]
    tokenizer_config = json.loads((published["model_dir"] / "tokenizer_config.json").read_text())
    assert "local_files_only" not in tokenizer_config and "is_local" not in tokenizer_config


def test_base_from_the_hf_cache_is_saved_as_its_hub_id(tmp_path, monkeypatch):
    """Saved from a base read out of the Hugging Face cache, no JSON file holds a local path or a load-time flag,
    and the folder loads (offline, from that cache) to the same embeddings."""
    from huggingface_hub import constants
    from sentence_transformers import SentenceTransformer

    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--org--tiny-llava" / "snapshots" / ("0123456789abcdef" * 3)[:40]
    shutil.copytree(tiny_model("llava_next"), snapshot)
    (cache / "models--org--tiny-llava" / "refs").mkdir()
    (cache / "models--org--tiny-llava" / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    model = build_model(str(snapshot), recipe="e5v", adapter={"r": 4, "lora_alpha": 8, "init_lora_weights": False})
    model.save(str(tmp_path / "saved"))
    assert local_state(tmp_path / "saved") == []
    assert json.loads((tmp_path / "saved" / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/tiny-llava"
    loaded = SentenceTransformer(str(tmp_path / "saved"))
    assert np.abs(loaded.encode(TEXTS) - model.encode(TEXTS)).max() <= 1e-6


@pytest.fixture(scope="module")
def full_model(tmp_path_factory):
    """A saved full-weights model (no adapter)."""
    folder = tmp_path_factory.mktemp("full") / "model"
    build_model(tiny_model("llava"), recipe="vlm2vec").save(str(folder))
    return folder


@pytest.mark.parametrize("breakage, message", [
    ("no-modules", "modules.json' is missing"),
    ("pickle", "holds pickle files ['pytorch_model.bin']; mm_st pushes safetensors only"),
    ("adapter-without-weights", "has adapter_config.json but no adapter_model.safetensors"),
    ("no-weights", "has no weights (config.json with model*.safetensors"),
    ("not-a-folder", "is not a directory"),
])
def test_incomplete_folder_is_refused_before_anything_is_uploaded(hub, full_model, tmp_path, monkeypatch, breakage, message):
    use_in_process(monkeypatch, hub, TOKEN)
    folder = tmp_path / "model"
    shutil.copytree(full_model, folder)
    if breakage == "no-modules":
        (folder / "modules.json").unlink()
    elif breakage == "pickle":
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    elif breakage == "adapter-without-weights":
        (folder / "adapter_config.json").write_text("{}")
    elif breakage == "no-weights":
        (folder / "model.safetensors").unlink()
    else:
        folder = tmp_path / "missing"
    before = len(hub.requests)
    with pytest.raises(PushError, match=re.escape(message)):
        push_model(folder, "org/refused", endpoint=hub.url)
    assert len(hub.requests) == before and ("model", "org/refused") not in hub.repos


def test_no_token_or_a_wrong_one_is_a_clear_error_without_the_token(hub, full_model, tmp_path, monkeypatch):
    from huggingface_hub import constants

    use_in_process(monkeypatch, hub, None)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login"))
    before = len(hub.requests)
    with pytest.raises(PushError, match="No Hugging Face token: set HF_TOKEN or run `hf auth login`"):
        push_model(full_model, "org/no-token", endpoint=hub.url)
    assert len(hub.requests) == before
    wrong = "hf_wrongTokenValue_123456"
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(PushError) as error:
        push_model(full_model, "org/wrong-token", endpoint=hub.url)
    assert "401" in str(error.value) and "may write to this repo" in str(error.value) and wrong not in str(error.value)


def test_failed_push_changes_nothing_and_rerunning_completes_it_in_one_commit(hub, full_model, tmp_path, monkeypatch):
    use_in_process(monkeypatch, hub, TOKEN)
    folder = tmp_path / "model"
    shutil.copytree(full_model, folder)
    (folder / "notes.txt").write_text("first push only")
    push_model(folder, "org/flaky", endpoint=hub.url)
    assert len(hub.commits("org/flaky")) == 2 and "notes.txt" in hub.files("org/flaky")
    # changed model: the commit fails with a 500 whose body echoes the credentials, then with a dropped connection
    (folder / "notes.txt").unlink()
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "Query: ", "document": ""}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    hub.fail_next("POST", r"/api/models/org/flaky/commit/", "500", body=f"upstream said: Authorization: Bearer {TOKEN}")
    hub.fail_next("POST", r"/api/models/org/flaky/commit/", "drop")
    for expected in ("HfHubHTTPError", "RemoteProtocolError"):
        with pytest.raises(PushError) as error:
            push_model(folder, "org/flaky", endpoint=hub.url)
        message = str(error.value)
        assert expected in message and "re-run the same push to complete it" in message and TOKEN not in message, message
        assert error.value.__cause__ is None and error.value.__context__ is None  # the client's error is not chained
        assert len(hub.commits("org/flaky")) == 2 and "notes.txt" in hub.files("org/flaky")  # nothing applied
    start = len(hub.requests)
    push_model(folder, "org/flaky", endpoint=hub.url)
    commits = hub.commits("org/flaky")
    assert len(commits) == 3  # one new commit for the update
    files = hub.files("org/flaky")
    assert "notes.txt" not in files and json.loads(files["config_sentence_transformers.json"])["prompts"]["query"] == "Query: "
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert not [r for r in hub.requests[start:] if r[0] == "PUT"]  # weights already on the Hub: not sent again


@pytest.mark.slow
def test_adapter_is_never_pushed_for_a_base_the_hub_does_not_have(hub, published, monkeypatch):
    use_in_process(monkeypatch, hub, TOKEN)
    with pytest.raises(PushError, match="The base model 'org/not-there' is not on http://127.0.0.1:.*push the base first"):
        push_model(published["model_dir"], "org/orphan", base_model_id="org/not-there", endpoint=hub.url)
    assert ("model", "org/orphan") not in hub.repos
    # without a Hub id for its local-only base, the adapter is merged, and the result says so
    result = push_model(published["model_dir"], "org/e5v-auto", endpoint=hub.url)
    assert result.kind == "merged" and "exists only on the machine that trained this model" in result.notes[0]
    files = hub.files("org/e5v-auto")
    assert "adapter_config.json" not in files and local_state_of_files(files) == []
    assert "exists only on the machine that trained this model" in files["README.md"].decode()


def test_every_recipe_takes_the_push_flags_and_checks_them_before_training(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    from mm_st.training import CONFIGS, load_config
    from mm_st.training.cli import main

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for cls in CONFIGS.values():
        config = load_config(cls, ["--push-to-hub", "org/x", "--private", "--merge-adapter", "--hub-base-model", "org/b"])
        assert (config.push_to_hub, config.private, config.merge_adapter, config.hub_base_model) == ("org/x", True, True, "org/b")
    with pytest.raises(ValueError, match="mme5 config: push_to_hub: 'runs/x/model' is not a Hub repo id"):
        load_config(CONFIGS["mme5"], ["--push-to-hub", "runs/x/model"])
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login"))
    assert main(CONFIGS["vlm2vec"], ["--dry-run", "--push-to-hub", "org/x", "--output-dir", str(tmp_path / "run")]) == 2
    assert "vlm2vec config: push_to_hub: No Hugging Face token" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written, nothing trained
    # the synthesis recipe checks its dataset push the same way, before generating any sample
    import importlib.util

    spec = importlib.util.spec_from_file_location("synthesize_recipe", ROOT / "recipes" / "synthesize_mme5_data.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    assert recipe.main(["--backend", "dry-run", "--num-samples", "2", "--output-dir", str(tmp_path / "syn"),
                        "--export-dir", str(tmp_path / "export"), "--push-to-hub", "me/syn", "--no-progress"]) == 2
    assert "No Hugging Face token" in capsys.readouterr().err and not (tmp_path / "syn").exists()


def test_a_failed_push_after_training_says_how_to_push_the_saved_model(hub, full_model, monkeypatch, capsys):
    from types import SimpleNamespace

    from mm_st.hub import push_trained_model

    use_in_process(monkeypatch, hub, TOKEN)
    monkeypatch.setattr("mm_st.hub.push_model", _with_endpoint(push_model, hub.url))
    config = SimpleNamespace(push_to_hub="org/after-training", private=True, merge_adapter=False, hub_base_model=None)
    hub.fail_next("POST", r"/api/models/org/after-training/commit/", "drop")
    with pytest.raises(PushError) as error:
        push_trained_model(config, full_model)
    assert (f"The trained model is saved in {full_model}: re-run the same command, or `python -m mm_st push "
            f"{full_model} org/after-training`, to push it.") in str(error.value)
    result = push_trained_model(config, full_model)  # the same push again completes it
    assert result.kind == "full" and hub.repos[("model", "org/after-training")].private
    assert f"pushed full to {hub.url}/org/after-training (commit {result.commit})" in capsys.readouterr().out


def test_merging_a_dora_adapter_on_mllama_gives_the_adapter_models_embeddings(tmp_path):
    """peft's DoRA merge (magnitudes saved under mm_st's portable keys) on mmE5's Mllama: the merged full weights load
    without peft and embed as the adapter model does."""
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    from mm_st.hub import merge_adapter_weights

    model = build_model(tiny_model("mllama"), recipe="mme5",
                        adapter={"r": 4, "lora_alpha": 8, "use_dora": True, "init_lora_weights": False})
    model.save(str(tmp_path / "adapter"))
    merged = merge_adapter_weights(tmp_path / "adapter", tmp_path / "merged")
    assert not (merged / "adapter_config.json").exists() and (merged / "model.safetensors").is_file()
    loaded = SentenceTransformer(str(merged))
    image = Image.new("RGB", (40, 40), "red")
    for inputs in (TEXTS, [image]):  # separate calls: Mllama with plain sentence-transformers (README)
        assert np.abs(loaded.encode(inputs) - model.encode(inputs)).max() <= 1e-6


@pytest.mark.slow
def test_a_latent_attention_model_pushes_with_its_code_file_and_loads_with_trust_remote_code(hub, tmp_path, monkeypatch):
    """MM-Embed's architecture pushes like any model: the module's code file travels, the card says loading needs
    trust_remote_code=True, and a Python without mm_st loads it by id with that flag and gives the same embeddings."""
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "model"
    build_model(tiny_model("qwen2_vl"), recipe="mmembed", pooling="latent_attention", attention="bidirectional",
                pooling_kwargs={"num_latents": 8}).save(str(folder))
    use_in_process(monkeypatch, hub, TOKEN)
    push_model(folder, "org/mmembed-latent", endpoint=hub.url)
    files = hub.files("org/mmembed-latent")
    assert files["latent_attention.py"] == (folder / "latent_attention.py").read_bytes()
    assert "trust_remote_code=True" in files["README.md"].decode("utf-8")
    script = NO_MM_ST + f"""
import numpy as np
from sentence_transformers import SentenceTransformer
try:
    SentenceTransformer("org/mmembed-latent")
except Exception as exc:
    print("refused without trust_remote_code:", type(exc).__name__)
model = SentenceTransformer("org/mmembed-latent", trust_remote_code=True)
np.save({str(tmp_path / "emb.npy")!r}, model.encode({TEXTS!r}))
"""
    # with mm_st, mteb loads it by id (what `mteb run -m org/mmembed-latent` does): the shipped file is mm_st's own
    in_mteb = f"""
import mteb, numpy as np
encoder = mteb.get_model("org/mmembed-latent")
np.save({str(tmp_path / "mteb.npy")!r}, encoder.model.encode({TEXTS!r}))
"""
    with_mteb = _start([sys.executable, "-c", in_mteb], tmp_path / "mteb.log", cwd=tmp_path,
                       env=client_env(hub, tmp_path / "home-mteb", token=None))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=client_env(hub, tmp_path / "home", token=None))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused without trust_remote_code" in done.stdout
    local = SentenceTransformer(str(folder), trust_remote_code=True).encode(TEXTS)
    assert np.abs(np.load(tmp_path / "emb.npy") - local).max() <= 1e-6
    mteb_out = _finish(with_mteb, tmp_path / "mteb.log")
    assert with_mteb.returncode == 0, mteb_out[-3000:]
    assert np.abs(np.load(tmp_path / "mteb.npy") - local).max() <= 1e-6


@pytest.mark.slow
def test_mmembed_recipe_pushes_its_last_stage(hub, tmp_path, monkeypatch, capsys):
    """MM-Embed's recipe with --push-to-hub pushes the last stage it ran (stage 1 here), with its card."""
    from mm_st.training import MMEmbedConfig
    from mm_st.training.cli import main

    use_in_process(monkeypatch, hub, TOKEN)
    monkeypatch.setattr("mm_st.hub.push_model", _with_endpoint(push_model, hub.url))
    argv = ["--output-dir", str(tmp_path / "run"), "--stages", "1", "--no-evaluate", "--max-rows-per-dataset", "16",
            "--max-steps", "1", "--global-batch-size", "8", "--push-to-hub", "org/mmembed-tiny"]
    # the push after training fails (server 500 on the commit): the model is kept, the error says to re-run
    hub.fail_next("POST", r"/api/models/org/mmembed-tiny/commit/", "500")
    assert main(MMEmbedConfig, argv) == 2
    assert "re-run the same command" in capsys.readouterr().err and len(hub.commits("org/mmembed-tiny")) == 1
    # the re-run trains nothing and completes the push; the next re-run finds it done and pushes nothing
    assert main(MMEmbedConfig, argv) == 0
    printed = capsys.readouterr().out
    assert "holds this run, finished" in printed and "pushed full to" in printed
    assert main(MMEmbedConfig, argv) == 0
    assert "is already pushed to org/mmembed-tiny" in capsys.readouterr().out
    assert len(hub.commits("org/mmembed-tiny")) == 2
    files = hub.files("org/mmembed-tiny")
    assert "model.safetensors" in files and "adapter_config.json" not in files  # full weights (embedded default)
    card = files["README.md"].decode("utf-8")
    assert "**MM-Embed** recipe" in card and "MM-Embed released no training code" in card
    assert json.loads(files["recipe_config.json"])["stages"] == ["1"]


def test_a_finished_run_whose_push_failed_pushes_on_the_rerun(hub, tmp_path, monkeypatch, capsys):
    """A one-stage recipe: the push after training fails, the re-run (nothing trained) completes it, the next
    re-run pushes nothing; another push target on the re-run is pushed too."""
    from mm_st.training import VLM2VecConfig
    from mm_st.training.cli import main

    use_in_process(monkeypatch, hub, TOKEN)
    monkeypatch.setattr("mm_st.hub.push_model", _with_endpoint(push_model, hub.url))
    argv = ["--output-dir", str(tmp_path / "run"), "--no-evaluate", "--max-rows-per-dataset", "16", "--max-steps", "1",
            "--global-batch-size", "8", "--push-to-hub", "org/vlm2vec-retry"]
    hub.fail_next("POST", r"/api/models/org/vlm2vec-retry/commit/", "500")
    assert main(VLM2VecConfig, argv) == 2
    assert "re-run the same command" in capsys.readouterr().err
    model = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    assert main(VLM2VecConfig, argv) == 0
    assert "pushed full to" in capsys.readouterr().out
    assert hub.files("org/vlm2vec-retry")["model.safetensors"] == model
    assert main(VLM2VecConfig, argv) == 0
    assert "is already pushed to org/vlm2vec-retry" in capsys.readouterr().out
    assert len(hub.commits("org/vlm2vec-retry")) == 2
    assert main(VLM2VecConfig, argv[:-1] + ["org/vlm2vec-elsewhere"]) == 0
    assert hub.files("org/vlm2vec-elsewhere")["model.safetensors"] == model


def test_a_wrong_or_read_only_token_fails_before_training_and_before_merging(hub, tmp_path, monkeypatch, capsys):
    from mm_st.training import MMEmbedConfig, VLM2VecConfig
    from mm_st.training.cli import main

    wrong = "hf_wrongTokenValue_987654"
    use_in_process(monkeypatch, hub, wrong)
    for cls in (VLM2VecConfig, MMEmbedConfig):
        out = tmp_path / cls.recipe
        assert main(cls, ["--output-dir", str(out), "--max-steps", "1", "--push-to-hub", "org/never"]) == 2
        err = capsys.readouterr().err
        assert "Checking the token on" in err and "401" in err and wrong not in err, err
        assert not out.exists()  # nothing written, nothing trained
    # `mm_st push` asks before merging an adapter (the merge loads the whole model): its base is local only
    adapter = tmp_path / "adapter"
    build_model(tiny_model("llava_next"), recipe="e5v", adapter={"r": 4, "lora_alpha": 8}).save(str(adapter))
    monkeypatch.setattr("mm_st.hub.merge_adapter_weights", lambda *a: pytest.fail("merged with a wrong token"))
    with pytest.raises(PushError, match="Checking the token on .*401"):
        push_model(adapter, "org/never", endpoint=hub.url)
    # a read-only token: refused the same way
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(hub, "role", "read")
    with pytest.raises(PushError, match="read-only on http://127.0.0.1:.*needs a token that may write"):
        push_model(adapter, "org/never", endpoint=hub.url)
    assert ("model", "org/never") not in hub.repos
