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


# ----------------------------------------------------------------------------------------------
# 9. Training with per-task prompts on struct columns: model-card widget examples do not crash
# ----------------------------------------------------------------------------------------------


def _mbeir_root(root, images, n):
    """An M-BEIR layout with ``n`` t2i and ``n`` i2t queries over a few real images."""
    (root / "img").mkdir(parents=True)
    for i, image in enumerate(images):
        image.save(root / "img" / f"{i}.png")
    k = len(images)
    pool = [{"did": f"9:{i}", "txt": None, "img_path": f"img/{i % k}.png", "modality": "image"} for i in range(n)]
    pool += [{"did": f"9:{n + i}", "txt": f"caption number {i}", "img_path": None, "modality": "text"} for i in range(n)]
    queries = [{"qid": f"9:{i}", "query_txt": f"a picture number {i}", "query_img_path": None, "query_modality": "text",
                "pos_cand_list": [f"9:{i}"], "neg_cand_list": [f"9:{(i + 1) % n}"], "task_id": 0} for i in range(n)]
    queries += [{"qid": f"9:{2 * n + i}", "query_txt": None, "query_img_path": f"img/{i % k}.png", "query_modality": "image",
                 "pos_cand_list": [f"9:{n + i}"], "neg_cand_list": [], "task_id": 3} for i in range(n)]  # fmt: skip
    for folder, name, entries in (("cand_pool", "pool.jsonl", pool), ("query/train", "q.jsonl", queries)):
        (root / folder).mkdir(parents=True)
        (root / folder / name).write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    (root / "instructions").mkdir()
    (root / "instructions" / "query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\n"
        "text\timage\tMSCOCO\t9\tFind me an everyday image that matches the given caption.\n"
        "image\ttext\tMSCOCO\t9\tFind an image caption describing the following everyday image.\n"
    )
    return root


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_trainer_with_mbeir_prompts_builds_text_widgets(tmp_path, emoji_images, seed):
    import random

    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from mm_st.data.converters import load_mbeir, mbeir_instructions
    from mm_st.losses import MultimodalInfoNCELoss

    root = _mbeir_root(tmp_path / "mbeir", emoji_images, 1200)
    data = load_mbeir(root, instructions="none", num_negatives=1)
    prompts = {task: {"anchor": text} for task, text in mbeir_instructions(root).items()}
    for tasks in (data, {"MSCOCO_t2i": data["MSCOCO_t2i"]}):
        model = build_model(tiny_model("qwen2_vl"), recipe="mmembed")
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=2, report_to="none",
            use_cpu=True, prompts={task: prompts[task] for task in tasks},
        )  # fmt: skip
        random.seed(seed)
        train = type(data)(tasks)
        SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=MultimodalInfoNCELoss(model))
        widget = model.model_card_data.widget
        assert widget, seed
        texts = [widget[0]["source_sentence"], *widget[0]["sentences"]]
        assert all(isinstance(text, str) and ("number" in text) for text in texts), texts
