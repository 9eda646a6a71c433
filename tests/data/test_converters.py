"""Converters on small local fixtures in each paper's layout, built from the bundled emoji images."""

import json
import logging

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mm_st import build_model
from mm_st.data import load_emoji
from mm_st.data.columns import modality_of
from mm_st.data.converters import (
    load_mbeir,
    load_mme5_synthetic,
    load_mmeb_train,
    load_nli,
    mbeir_instructions,
)
from mm_st.losses import MultimodalInfoNCELoss
from mm_st.testing import tiny_model


@pytest.fixture(scope="module")
def emoji():
    test = load_emoji("test")
    return [(test[i]["name_en"], test[i]["image"]) for i in range(12)]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory, emoji):
    root = tmp_path_factory.mktemp("images")
    (root / "emoji").mkdir()
    for i, (_, image) in enumerate(emoji):
        image.save(root / "emoji" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_model("qwen2_vl"), recipe="vlm2vec", prompt_format="train")


def one_training_step(model, train, tmp_path, prompts=None, hard_negative_scope="shared"):
    """One trainer step; returns the loss and whether any parameter changed."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-2,
        save_strategy="no", report_to="none", use_cpu=True, logging_steps=1, prompts=prompts,
    )  # fmt: skip
    loss = MultimodalInfoNCELoss(model, temperature=0.02, hard_negative_scope=hard_negative_scope)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
    trainer.train()
    logged = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    changed = any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    return logged[0], changed


def write_parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def mmeb_rows(emoji, kind):
    rows = []
    for i, (name, _) in enumerate(emoji[:8]):
        other = emoji[(i + 1) % 8][0]
        if kind == "i2t":  # ImageNet-style classification: image + instruction -> label
            rows.append({"qry": "<|image_1|>\nRepresent the given image for classification\n", "qry_image_path": f"emoji/{i}.png",
                         "pos_text": name, "pos_image_path": "", "neg_text": other, "neg_image_path": ""})
        elif kind == "t2i":  # MSCOCO_t2i: caption -> image
            rows.append({"qry": f"Find me an everyday image that matches the given caption: {name}", "qry_image_path": "",
                         "pos_text": "<|image_1|>\nRepresent the given image.", "pos_image_path": f"emoji/{i}.png",
                         "neg_text": "", "neg_image_path": ""})
        else:  # VQA: image + question -> answer (repeated answers like "yes")
            rows.append({"qry": f"<|image_1|>\nRepresent the given image with the following question: Is this a {name}?",
                         "qry_image_path": f"emoji/{i}.png", "pos_text": "yes", "pos_image_path": "",
                         "neg_text": "no", "neg_image_path": ""})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def mmeb_dir(tmp_path_factory, emoji):
    root = tmp_path_factory.mktemp("mmeb_train")
    write_parquet(root / "ImageNet_1K" / "original-00000-of-00001.parquet", mmeb_rows(emoji, "i2t"))
    write_parquet(root / "MSCOCO_t2i" / "original-00000-of-00001.parquet", mmeb_rows(emoji, "t2i"))
    (root / "OK-VQA").mkdir()
    with open(root / "OK-VQA" / "diverse_instruction.jsonl", "w") as handle:
        for row in mmeb_rows(emoji, "vqa"):
            handle.write(json.dumps(row) + "\n")
    return root


def test_mmeb_train_layout(mmeb_dir, image_root, model, tmp_path):
    ds = load_mmeb_train(mmeb_dir, configs=["ImageNet_1K", "MSCOCO_t2i"], image_root=image_root, num_negatives=1)
    assert set(ds) == {"ImageNet_1K", "MSCOCO_t2i"}
    assert [len(ds[c]) for c in ds] == [8, 8]
    cls, t2i = ds["ImageNet_1K"], ds["MSCOCO_t2i"]
    assert cls.column_names == ["anchor", "positive", "negative_1"]
    row = cls[0]
    assert modality_of(row["anchor"]) == "image+text" and row["anchor"]["text"] == "Represent the given image for classification\n"
    assert row["positive"] == {"text": cls[0]["positive"]["text"], "image": None} and modality_of(row["negative_1"]) == "text"
    # MSCOCO_t2i rows carry no negative at all: that dataset keeps its rows, without negative columns.
    assert t2i.column_names == ["anchor", "positive"] and len(t2i) == 8
    assert load_mmeb_train(mmeb_dir, configs=["MSCOCO_t2i"], image_root=image_root)["MSCOCO_t2i"]["anchor"] == t2i["anchor"]
    assert modality_of(t2i[0]["anchor"]) == "text" and modality_of(t2i[0]["positive"]) == "image+text"
    assert t2i[0]["positive"]["text"] == "Represent the given image." and t2i[0]["positive"]["image"].size == (64, 64)
    # What the vlm2vec recipe's training format renders for these rows is VLM2Vec's own training text
    # (src/data/dataset/mmeb_dataset.py: the row as written, '<|image_1|>' -> the bare '<|image_pad|>').
    features = model.preprocess([cls[0]["anchor"]])
    text = model[0].tokenizer.decode(features["input_ids"][0], skip_special_tokens=False)
    assert "<|vision_start|>" not in text and text.endswith("<|image_pad|>\nRepresent the given image for classification\n")
    loss, changed = one_training_step(model, datasets.DatasetDict({"ImageNet_1K": cls, "MSCOCO_t2i": t2i}), tmp_path)
    assert loss > 0 and changed


def test_mmeb_train_diverse_instruction_split_jsonl(mmeb_dir, image_root):
    ds = load_mmeb_train(mmeb_dir, configs=["OK-VQA"], split="diverse_instruction", image_root=image_root, num_negatives=1)
    vqa = ds["OK-VQA"]
    assert len(vqa) == 8 and [r["text"] for r in vqa["positive"]] == ["yes"] * 8
    assert vqa[3]["anchor"]["text"].startswith("Represent the given image with the following question: Is this a")


def test_missing_config_names_the_layout(mmeb_dir, image_root):
    with pytest.raises(FileNotFoundError, match=r"No data for config 'VOC2007', split 'original'.*VOC2007/original-00000-of-00001.parquet"):
        load_mmeb_train(mmeb_dir, configs=["VOC2007"], image_root=image_root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mmeb_train(str(mmeb_dir / "nowhere"), configs=["VOC2007"], image_root=image_root)


def test_missing_unreadable_and_escaping_images(tmp_path, emoji, image_root, caplog):
    rows = mmeb_rows(emoji, "i2t")
    rows[2]["qry_image_path"] = "emoji/missing.png"
    rows[5]["qry_image_path"] = "emoji/broken.png"
    (image_root / "emoji" / "broken.png").write_bytes(b"not a png")
    write_parquet(tmp_path / "data" / "ImageNet_1K" / "original.parquet", rows)
    with pytest.raises(FileNotFoundError) as error:
        load_mmeb_train(tmp_path / "data", configs=["ImageNet_1K"], image_root=image_root)
    message = str(error.value)
    assert "2 image reference(s) missing or unreadable in 2 of 8 rows" in message
    assert "row 2 qry: 'emoji/missing.png'" in message and "row 5 qry: 'emoji/broken.png'" in message
    with caplog.at_level(logging.WARNING, logger="mm_st.data.converters"):
        ds = load_mmeb_train(tmp_path / "data", configs=["ImageNet_1K"], image_root=image_root, on_missing="skip")
    assert len(ds["ImageNet_1K"]) == 6 and "dropped 2 of 8 rows" in caplog.text
    rows[0]["qry_image_path"] = "../../etc/passwd"
    write_parquet(tmp_path / "data" / "ImageNet_1K" / "original.parquet", rows)
    with pytest.raises(ValueError, match=r"row 0 qry: image path '../../etc/passwd' resolves outside the image root"):
        load_mmeb_train(tmp_path / "data", configs=["ImageNet_1K"], image_root=image_root, on_missing="skip")


def test_mme5_synthetic_layout_mixed_modalities(tmp_path, emoji, image_root, model):
    """Retrieval config mixing T->I, T->T and IT->IT rows (text, image, image+text in one column); negatives as lists."""
    laion = tmp_path / "laion"
    (laion / "syn").mkdir(parents=True)
    emoji[11][1].save(laion / "syn" / "a.png")
    rows = []
    for i in range(8):
        name, other = emoji[i][0], emoji[(i + 3) % 8][0]
        if i % 3 == 0:  # T -> I
            row = {"qry": f"Retrieve an image of: {name}", "qry_image_path": "",
                   "pos_text": "<|image_1|>\nRepresent the given image.", "pos_image_path": f"emoji/{i}.png",
                   "neg_text": str(["<|image_1|>\nRepresent the given image."] * 2),
                   "neg_image_path": str([f"emoji/{(i + 3) % 8}.png", "syn/a.png"])}
        elif i % 3 == 1:  # T -> T, three negatives
            row = {"qry": f"Find the name of: {name}", "qry_image_path": "", "pos_text": name, "pos_image_path": "",
                   "neg_text": str([other, "a teapot", "a kite"]), "neg_image_path": str(["", "", ""])}
        else:  # IT -> IT, one negative (padded to 3 by repetition)
            row = {"qry": f"<|image_1|>\nFind a similar image with this caption: {name}", "qry_image_path": f"emoji/{i}.png",
                   "pos_text": f"<|image_1|>\n{name}", "pos_image_path": f"emoji/{i}.png",
                   "neg_text": str([f"<|image_1|>\n{other}"]), "neg_image_path": str(["syn/a.png"])}  # fmt: skip
        rows.append(row)
    rows[6]["pos_text"] = "<|image_1|>"  # a bare image positive
    write_parquet(tmp_path / "syn" / "Retrieval" / "train-00000-of-00001.parquet", rows)
    ds = load_mme5_synthetic(tmp_path / "syn", configs=["Retrieval"], image_root=[image_root, laion])["Retrieval"]
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"] and len(ds) == 8
    assert [modality_of(r) for r in ds["positive"]] == ["image+text", "text", "image+text"] * 2 + ["image", "text"]
    assert [modality_of(r) for r in ds["anchor"]][:3] == ["text", "text", "image+text"]
    row0, row2 = ds[0], ds[2]
    assert row0["negative_3"] == row0["negative_2"] and row0["negative_2"]["image"].size == (64, 64)
    assert row2["negative_1"]["text"] == row2["negative_2"]["text"] == row2["negative_3"]["text"] == emoji[5][0]
    assert ds[1]["negative_2"] == {"text": "a teapot", "image": None}
    loss, changed = one_training_step(model, ds, tmp_path / "run", hard_negative_scope="own")
    assert loss > 0 and changed


@pytest.fixture(scope="module")
def mbeir_dir(tmp_path_factory, emoji):
    root = tmp_path_factory.mktemp("mbeir")
    (root / "mbeir_images" / "mscoco").mkdir(parents=True)
    for i, (_, image) in enumerate(emoji[:8]):
        image.save(root / "mbeir_images" / "mscoco" / f"{i}.png")
    pool = [{"did": f"9:{i}", "txt": None, "img_path": f"mbeir_images/mscoco/{i}.png", "modality": "image"} for i in range(8)]
    pool += [{"did": f"9:{100 + i}", "txt": name, "img_path": None, "modality": "text"} for i, (name, _) in enumerate(emoji[:8])]
    pool += [{"did": f"8:{i}", "txt": None, "img_path": f"mbeir_images/mscoco/{i}.png", "modality": "image"} for i in range(8)]
    (root / "cand_pool" / "local").mkdir(parents=True)
    with open(root / "cand_pool" / "local" / "mbeir_pool.jsonl", "w") as handle:
        handle.writelines(json.dumps(entry) + "\n" for entry in pool)
    queries = []
    for i, (name, _) in enumerate(emoji[:8]):
        queries.append({"qid": f"9:{i}", "query_txt": name, "query_img_path": None, "query_modality": "text",
                        "pos_cand_list": [f"9:{i}"], "neg_cand_list": [f"9:{(i + 1) % 8}", f"9:{(i + 2) % 8}"], "task_id": 0})
        queries.append({"qid": f"9:{50 + i}", "query_txt": None, "query_img_path": f"mbeir_images/mscoco/{i}.png",
                        "query_modality": "image", "pos_cand_list": [f"9:{100 + i}"], "neg_cand_list": [f"9:{100 + (i + 1) % 8}"],
                        "task_id": 3})
        queries.append({"qid": f"8:{i}", "query_txt": f"make it {name}", "query_img_path": f"mbeir_images/mscoco/{(i + 1) % 8}.png",
                        "query_modality": "image,text", "pos_cand_list": [f"8:{i}"], "neg_cand_list": [], "task_id": 7})  # fmt: skip
    (root / "query" / "train").mkdir(parents=True)
    with open(root / "query" / "train" / "mbeir_union_train.jsonl", "w") as handle:
        handle.writelines(json.dumps(q) + "\n" for q in queries)
    (root / "instructions").mkdir()
    (root / "instructions" / "query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\tprompt_2\n"
        "text\timage\tMSCOCO\t9\tFind me an everyday image that matches the given caption.\tShow me an image of this.\n"
        "image\ttext\tMSCOCO\t9\tFind an image caption describing the following everyday image.\t\n"
        "image,text\timage\tCIRR\t8\tRetrieve a day-to-day image that aligns with the modification instructions of the provided image.\t\n"
    )  # fmt: skip
    return root


def test_mbeir_layout(mbeir_dir, emoji, model, tmp_path):
    ds = load_mbeir(mbeir_dir, num_negatives=1)
    assert set(ds) == {"MSCOCO_t2i", "MSCOCO_i2t", "CIRR_it2i"} and all(len(ds[t]) for t in ds)
    t2i, i2t = ds["MSCOCO_t2i"], ds["MSCOCO_i2t"]
    assert len(t2i) == 8 and len(i2t) == 8 and len(ds["CIRR_it2i"]) == 8
    assert ds["CIRR_it2i"].column_names == ["anchor", "positive"]  # no CIRR row has a negative
    t2i_instructions = ("Find me an everyday image that matches the given caption.", "Show me an image of this.")
    for i in range(8):  # UniIR format: one of the task's instructions, a space, the query text
        assert t2i[i]["anchor"]["text"] in [f"{inst} {emoji[i][0]}" for inst in t2i_instructions]
    assert len({row["text"].split(".")[0] for row in t2i["anchor"]}) == 2  # both instructions drawn
    assert modality_of(t2i[0]["positive"]) == "image" and modality_of(t2i[0]["negative_1"]) == "image"
    assert i2t[0]["anchor"]["text"] == "Find an image caption describing the following everyday image."
    assert modality_of(i2t[0]["anchor"]) == "image+text" and i2t[0]["positive"] == {"text": emoji[0][0], "image": None}
    # Seeded: the same instructions are drawn again.
    assert load_mbeir(mbeir_dir, num_negatives=1)["MSCOCO_t2i"]["anchor"] == t2i["anchor"]
    plain = load_mbeir(mbeir_dir, instructions="none")
    cirr = plain["CIRR_it2i"]
    assert len(cirr) == 8 and modality_of(cirr[0]["anchor"]) == "image+text" and cirr[0]["anchor"]["text"].startswith("make it ")
    prompts = {task: {"anchor": text} for task, text in mbeir_instructions(mbeir_dir).items()}
    assert prompts["CIRR_it2i"]["anchor"].startswith("Retrieve a day-to-day image")
    loss, changed = one_training_step(model, plain, tmp_path, prompts=prompts)
    assert loss > 0 and changed


def test_mbeir_bad_input(mbeir_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="No query files"):
        load_mbeir(mbeir_dir, split="val")
    broken = tmp_path / "q.jsonl"
    broken.write_text(json.dumps({"qid": "9:1", "query_txt": "x", "query_modality": "text", "pos_cand_list": ["9:999"]}) + "\n")
    with pytest.raises(KeyError, match=r"qid 9:1\).*candidate id '9:999' is in no candidate pool"):
        load_mbeir(mbeir_dir, query_files=[str(broken)])


def test_nli(tmp_path):
    (tmp_path / "nli.csv").write_text("sent0,sent1,hard_neg\nA man sleeps.,A person rests.,A man runs.\nA,B,C\n")
    ds = load_nli(tmp_path / "nli.csv")
    assert ds.column_names == ["anchor", "positive", "negative"] and ds["negative"] == ["A man runs.", "C"]
    (tmp_path / "bad.csv").write_text("premise,hypothesis\na,b\n")
    with pytest.raises(ValueError, match=r"expected columns .*sent0.*found \['hypothesis', 'premise'\]"):
        load_nli(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("sent0,sent1,hard_neg\na,,c\n")
    with pytest.raises(ValueError, match="row 0: empty or missing text"):
        load_nli(tmp_path / "empty.csv")


def test_mme5_empty_negative_texts_filled_as_upstream(tmp_path, emoji, image_root):
    """Issue 11 item 8: haon-chen/mmE5 src/dataset.py fills an empty negative text (default), "keep" does not."""
    rows = [
        {"qry": "Retrieve an image of: cat", "qry_image_path": "", "pos_text": "<|image_1|>\nRepresent the given image.",
         "pos_image_path": "emoji/0.png", "neg_text": str(["", ""]), "neg_image_path": str(["emoji/1.png", "emoji/2.png"])},
        {"qry": "Find: dog", "qry_image_path": "", "pos_text": "dog", "pos_image_path": "",
         "neg_text": str(["", "a kite", "a teapot"]), "neg_image_path": str(["emoji/3.png", "", ""])},
    ]
    write_parquet(tmp_path / "syn" / "Retrieval" / "train-00000-of-00001.parquet", rows)
    filled = load_mme5_synthetic(tmp_path / "syn", configs=["Retrieval"], image_root=image_root)["Retrieval"]
    # all negative texts identical (empty): each takes the positive's text, keeping its own image
    assert [filled[0][f"negative_{j}"]["text"] for j in (1, 2)] == ["Represent the given image.", "Represent the given image."]
    assert filled[0]["negative_1"]["image"].size == (64, 64)
    # otherwise: a random non-empty negative text of the row (seeded)
    assert filled[1]["negative_1"]["text"] in ("a kite", "a teapot") and filled[1]["negative_1"]["image"] is not None
    again = load_mme5_synthetic(tmp_path / "syn", configs=["Retrieval"], image_root=image_root)["Retrieval"]
    assert again[1]["negative_1"]["text"] == filled[1]["negative_1"]["text"]
    kept = load_mme5_synthetic(tmp_path / "syn", configs=["Retrieval"], image_root=image_root, empty_negative_text="keep")
    assert kept["Retrieval"][0]["negative_1"]["text"] is None and kept["Retrieval"][1]["negative_1"]["text"] is None
    assert kept["Retrieval"][1]["negative_2"] == {"text": "a kite", "image": None}
    with pytest.raises(ValueError, match=r"empty_negative_text must be one of \('fill', 'keep'\), got 'drop'"):
        load_mme5_synthetic(tmp_path / "syn", configs=["Retrieval"], image_root=image_root, empty_negative_text="drop")


# Names mm_st.data.converters held before it was split into one module per format (users and scripts import them).
CONVERTERS_NAMES = (
    "load_mbeir", "load_mme5_synthetic", "load_mmeb_train", "load_nli", "load_text_pairs", "mbeir_candidate_pools",
    "mbeir_instructions", "mbeir_modality", "mbeir_task_name", "mbeir_pool_files", "MBEIR_REPO", "MBEIR_DATASETS",
    "MMEB_TRAIN_REPO", "MMEB_TRAIN_CONFIGS", "MME5_SYNTHETIC_REPO", "MME5_SYNTHETIC_CONFIGS", "IMAGE_PLACEHOLDERS",
    "ON_MISSING", "PROGRESS_MIN_ROWS", "EMPTY_NEGATIVE_TEXT", "VLM2VEC_COLUMNS", "TEXT_PAIR_COLUMNS", "NLI_COLUMN_SETS",
    "read_rows", "pool_rows", "query_rows",
)


def test_converters_re_exports_every_format_from_its_own_module():
    import importlib

    from mm_st.data import converters

    homes = {"load_mmeb_train": "mmeb_train", "load_mme5_synthetic": "mme5_synthetic", "load_mbeir": "mbeir_train",
             "load_nli": "nli", "load_text_pairs": "text_pairs", "ImageChecker": "images"}
    for name in CONVERTERS_NAMES:
        assert hasattr(converters, name), name
    for name, module in homes.items():
        assert getattr(converters, name) is getattr(importlib.import_module(f"mm_st.data.{module}"), name)
        assert getattr(converters, name).__module__ == f"mm_st.data.{module}"


def test_on_missing_has_one_home():
    from mm_st.data import images
    from mm_st.training import config

    assert config.ON_MISSING is images.ON_MISSING == ("error", "skip")
    with pytest.raises(ValueError, match=r"^on_missing must be one of \('error', 'skip'\), got 'ignore'\.$"):
        images.check_on_missing("ignore")


def test_a_missing_image_names_the_row_in_every_format_alike(tmp_path):
    from mm_st.data.images import ImageChecker, image_roots, report_missing

    checker = ImageChecker(image_roots(tmp_path))
    assert checker.resolve("a.png", "row 0 qry") is None and checker.resolve("a.png", "row 1 qry") is None
    assert checker.problems == ["row 0 qry: 'a.png'", "row 1 qry"]  # each file checked once; later rows named
    with pytest.raises(FileNotFoundError, match=r"^T: 2 image reference\(s\) missing or unreadable in 2 of 5 rows"):
        report_missing("T", checker.problems, {0, 1}, "error", 5)
    report_missing("T", checker.problems, {0, 1}, "skip", 5)  # logged, not raised
