"""Issue 12 item 4: the recipe metadata lives in config_sentence_transformers.json, not in a regex over Jinja."""

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mm_st import build_model, load_model, metadata, templates
from mm_st.evaluation import MMSTEncoder, mm_st_model_meta
from mm_st.testing import tiny_model

E5V = {"recipe": "e5v", "family": "llava_next", "wrapper": "llama3", "prompt_format": "inference"}
TEXT = "A red heart."

PLAIN = textwrap.dedent(
    """
    import json, sys
    sys.modules["mm_st"] = None  # mm_st must not be importable here
    from PIL import Image
    from sentence_transformers import SentenceTransformer
    source, target, image = sys.argv[1:]
    model = SentenceTransformer(source)
    out = model.encode([%r, Image.open(image).convert("RGB")], batch_size=1).tolist()
    model.save(target)  # a plain save
    print("RESULT" + json.dumps({"type": type(model).__name__, "embeddings": out}))
    """ % TEXT
)


def _config(path: Path) -> dict:
    return json.loads((path / "config_sentence_transformers.json").read_text())


@pytest.fixture(scope="module")
def saved(tmp_path_factory, emoji_images, plain_python):
    """An e5v model saved by mm_st, its embeddings, and the same model re-saved by plain sentence-transformers."""
    root = tmp_path_factory.mktemp("meta")
    model = build_model(tiny_model("llava_next"), recipe="e5v")
    model.save(str(root / "mm_st"))
    emoji_images[0].save(root / "emoji.png")
    expected = model.encode([TEXT, emoji_images[0]], batch_size=1)
    arguments = [str(root / "mm_st"), str(root / "plain"), str(root / "emoji.png")]
    run = plain_python.run(PLAIN, *arguments)
    assert run.returncode == 0, run.stderr[-3000:]
    return root, expected, json.loads(run.stdout.split("RESULT", 1)[1])


@pytest.mark.slow
def test_saved_in_config_and_plain_sentence_transformers_loads_without_mm_st(saved):
    root, expected, plain = saved
    assert _config(root / "mm_st")["mm_st"] == E5V
    assert plain["type"] == "SentenceTransformer"
    assert np.abs(np.array(plain["embeddings"]) - expected).max() <= 1e-6
    loaded = load_model(str(root / "mm_st"))
    assert loaded.mm_st_metadata == E5V
    assert MMSTEncoder(loaded, name="local/e5v").recipe == "e5v"


@pytest.mark.parametrize("model, kwargs, expected", [
    # the llava_next tiny tokenizer has llama3's markers; the llava family's default wrapper is vicuna
    ("llava_next", {"recipe": "e5v", "family": "llava"}, {"recipe": "e5v", "family": "llava", "wrapper": "llama3"}),
    ("llava_next", {"recipe": "e5v", "prompt_format": "train"}, {"wrapper": "llama3_upstream_train", "prompt_format": "train"}),
    ("mllama", {"recipe": "mme5", "prompt_format": "train"}, {"recipe": "mme5", "family": "mllama", "wrapper": "raw"}),
])
def test_metadata_names_what_the_saved_template_was_rendered_from(model, kwargs, expected):
    built = build_model(tiny_model(model), **kwargs)
    meta = built.mm_st_metadata
    assert meta == {**E5V, **expected, "prompt_format": kwargs.get("prompt_format", "inference")}
    assert built[0].processor.chat_template == templates.render_chat_template(
        meta["recipe"], meta["family"], wrapper=meta["wrapper"], fmt=meta["prompt_format"])


@pytest.mark.slow
def test_plain_save_drops_the_key_the_template_header_keeps_it_and_mm_st_writes_it_again(saved, tmp_path):
    root, _, _ = saved
    # sentence-transformers 6.2 rewrites config_sentence_transformers.json from its own keys only
    assert "mm_st" not in _config(root / "plain")
    assert metadata.read_dir(root / "plain") == E5V  # from '{#- mm_st recipe=e5v ... wrapper=llama3 -#}'
    reloaded = load_model(str(root / "plain"))
    assert reloaded.mm_st_metadata is None and metadata.of_model(reloaded) == E5V
    reloaded.save(str(tmp_path / "again"))
    assert _config(tmp_path / "again")["mm_st"] == E5V


def _copy_with(source: Path, target: Path, config=None, header=None) -> Path:
    shutil.copytree(source, target)
    if config is not None:
        (target / "config_sentence_transformers.json").write_text(json.dumps(config))
    if header is not None:
        lines = (target / "chat_template.jinja").read_text().split("\n")
        (target / "chat_template.jinja").write_text("\n".join([header, *lines[1:]]) if header else "\n".join(lines[1:]))
    return target


@pytest.mark.slow
def test_the_config_key_is_read_not_the_template(saved, tmp_path, caplog):
    root, _, _ = saved
    path = _copy_with(root / "mm_st", tmp_path / "no-header", header="")
    assert "mm_st recipe" not in (path / "chat_template.jinja").read_text()
    assert metadata.read_dir(path) == E5V
    assert mm_st_model_meta(str(path)).use_instructions is False  # e5v: recognised as an mm_st model
    model = load_model(str(path))
    assert metadata.of_model(model) == E5V
    with caplog.at_level("WARNING", logger="mm_st.model"):
        model.encode_query(["a red car"], prompt="Find it: ")
    assert any("Recipe 'e5v' has no instruction slot" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_models_saved_before_the_key_are_read_from_the_template_header(saved, tmp_path):
    root, _, _ = saved
    config = {k: v for k, v in _config(root / "mm_st").items() if k != "mm_st"}
    issue11 = _copy_with(root / "mm_st", tmp_path / "issue11", config,
                         "{#- mm_st recipe=e5v family=llava_next format=inference -#}")
    older = _copy_with(root / "mm_st", tmp_path / "older", config, "{#- mm_st recipe=e5v family=llava_next -#}")
    assert metadata.read_dir(issue11) == {"recipe": "e5v", "family": "llava_next", "wrapper": None, "prompt_format": "inference"}
    assert metadata.read_dir(older) == {"recipe": "e5v", "family": "llava_next", "wrapper": None, "prompt_format": None}
    assert MMSTEncoder(load_model(str(older)), name="local/older").recipe == "e5v"
    load_model(str(issue11)).save(str(tmp_path / "upgraded"))
    assert _config(tmp_path / "upgraded")["mm_st"] == {
        "recipe": "e5v", "family": "llava_next", "wrapper": None, "prompt_format": "inference"}


@pytest.mark.slow
def test_malformed_key_names_the_file(saved, tmp_path):
    root, _, _ = saved
    path = _copy_with(root / "mm_st", tmp_path / "bad", {**_config(root / "mm_st"), "mm_st": "e5v"})
    with pytest.raises(ValueError, match=r"bad/config_sentence_transformers.json: 'mm_st' must be an object with "
                                         r"string 'recipe' and 'family', got 'e5v'"):
        metadata.read_dir(path)
    with pytest.raises(ValueError, match=r"'mm_st' must be an object with string 'recipe' and 'family', got 'e5v'"):
        load_model(str(path))
