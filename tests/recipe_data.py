"""Small training sets of the shapes real users have, in the papers' layouts (tests' support code).

Real emoji images from the bundled data; few labels, long texts, missing images, a missing column, an
empty config: the shapes the embedded default (large pools, a fresh output folder) never shows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mm_st.data import load_emoji

CLASSIFY = "<|image_1|>\nRepresent the given image for classification\n"


def _image(root: Path, ds, index: int) -> str:
    """Emoji ``index`` of the train split written under ``root/images`` once; its relative path."""
    relative = f"emoji-{index}.png"
    (root / "images").mkdir(parents=True, exist_ok=True)
    if not (root / "images" / relative).is_file():
        ds[index]["image"].convert("RGB").save(root / "images" / relative)
    return relative


def write_rows(root: Path, config: str, rows: list[dict], split: str = "original") -> Path:
    (root / config).mkdir(parents=True, exist_ok=True)
    path = root / config / f"{split}-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_classification(root: Path, config: str, labels: int, rows: int, long_texts: bool = False) -> Path:
    """An MMEB-train classification config: emoji image -> its subgroup, ``labels`` distinct labels (the
    largest subgroups) dealt round-robin over ``rows`` rows, each row a different image where the subgroup has one."""
    ds = load_emoji("train")
    members: dict[str, list[int]] = {}
    for index, subgroup in enumerate(ds["subgroup"]):
        members.setdefault(subgroup, []).append(index)
    names = sorted(members, key=lambda name: (-len(members[name]), name))[:labels]
    table = []
    for i in range(rows):
        label = names[i % labels]
        index = members[label][(i // labels) % len(members[label])]
        text = " ".join([label] * 60) if long_texts else label
        table.append({"qry": CLASSIFY, "qry_image_path": _image(root, ds, index), "pos_text": text,
                      "pos_image_path": "", "neg_text": "", "neg_image_path": ""})
    return write_rows(root, config, table)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest): inputs must stay byte-identical."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def listing(root: Path) -> list[str]:
    """Every path under ``root`` (empty when it does not exist)."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")) if Path(root).exists() else []


def write_user_mbeir(root: Path) -> Path:
    """A user's M-BEIR layout: 12 image->text queries over a pool of 12 long captions and 6 images (smaller than the
    type-2 window), one query image missing; query 0's ``pos_cand_list`` lists every caption (its own first)."""
    ds = load_emoji("train").select(range(12))
    (root / "images").mkdir(parents=True)
    pool, queries = [], []
    for i, (image, name) in enumerate(zip(ds["image"], ds["name_en"])):
        if i != 5:
            image.convert("RGB").save(root / "images" / f"{i}.png")
        pool.append({"did": f"7:{i}", "txt": f"A long caption about {name}. " * 20, "img_path": None, "modality": "text"})
        if i < 6:
            pool.append({"did": f"7:{100 + i}", "txt": None, "img_path": f"images/{i + 6}.png", "modality": "image"})
        listed = [f"7:{j}" for j in range(12)] if i == 0 else [f"7:{i}"]  # query 0 lists every caption
        queries.append({"qid": f"7:{1000 + i}", "query_txt": None, "query_img_path": f"images/{i}.png",
                        "query_modality": "image", "pos_cand_list": listed, "neg_cand_list": [], "task_id": 3})
    for folder, name, rows in (("query/train", "mbeir_user_task3_train.jsonl", queries),
                               ("cand_pool/local", "mbeir_user_train_cand_pool.jsonl", pool)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "instructions").mkdir()
    (root / "instructions" / "query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\nimage\ttext\tUser\t7\tCaption this picture.\n",
        encoding="utf-8")
    return root


def _write_jsonl(root: Path, relative: str, rows: list[dict]) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


MBEIR_INSTRUCTIONS = {("9", "text", "image"): "Find me an everyday image that matches the given caption.",
                      ("9", "image", "text"): "Find an image caption describing the following everyday image.",
                      ("2", "text", "text"): "Retrieve passages from Wikipedia that provide answers to the question."}
HELD_OUT = "held-out"  # in every text and image path of a candidate that only a val/test pool holds


def write_real_mbeir(root: Path, size: int = 8) -> Path:
    """M-BEIR's own file names (TIGER-Lab/M-BEIR's card) on emoji: MSCOCO (id 9: t2i, i2t) and WebQA (id 2: t2t).

    ``query/train/mbeir_{mscoco,webqa}_train.jsonl`` (one file per dataset, its tasks interleaved),
    ``query/union_train/mbeir_union_up_train.jsonl`` (every training query, WebQA's upsampled: each twice),
    ``query/{val,test}/mbeir_<dataset>_task<k>_{val,test}.jsonl``, the training pools
    ``cand_pool/local/mbeir_<dataset>_task<k>_cand_pool.jsonl`` (no split in the name), MSCOCO's test-only
    ``cand_pool/local/mbeir_mscoco_task<k>_test_cand_pool.jsonl``, ``cand_pool/global/mbeir_union_{val,test}_cand_pool.jsonl``
    (no training union pool), ``qrels/{val,test}/``, ``instructions/query_instructions.tsv``. Every candidate that
    only a val/test pool holds has :data:`HELD_OUT` in its text or image path (and an id no training pool has)."""
    ds = load_emoji("train")
    names = ds["name_en"]

    def image(i: int, held: bool = False) -> str:
        return f"images/{HELD_OUT}-{i}.png" if held else f"images/{_image(root, ds, i)}"

    for i in range(size, 2 * size):  # the held-out images: other emoji, under held-out names
        (root / "images").mkdir(parents=True, exist_ok=True)
        ds[i]["image"].convert("RGB").save(root / "images" / f"{HELD_OUT}-{i}.png")
    pictures = [{"did": f"9:{1 + i}", "txt": None, "img_path": image(i), "modality": "image"} for i in range(size)]
    captions = [{"did": f"9:{101 + i}", "txt": names[i], "img_path": None, "modality": "text"} for i in range(size)]
    passages = [{"did": f"2:{1 + i}", "txt": f"A passage about {names[i]}.", "img_path": None, "modality": "text"}
                for i in range(size)]
    test_pictures = [{"did": f"9:{201 + i}", "txt": None, "img_path": image(size + i, True), "modality": "image"}
                     for i in range(size)]
    test_captions = [{"did": f"9:{301 + i}", "txt": f"{HELD_OUT} {names[size + i]}", "img_path": None, "modality": "text"}
                     for i in range(size)]
    val_captions = [{"did": f"9:{401 + i}", "txt": f"{HELD_OUT} val {names[i]}", "img_path": None, "modality": "text"}
                    for i in range(size)]
    distractors = [{"did": f"2:{501 + i}", "txt": f"{HELD_OUT} passage {i} about {names[i]}", "img_path": None,
                    "modality": "text"} for i in range(size)]

    def query(qid, text, img, modality, positive, task):
        return {"qid": qid, "query_txt": text, "query_img_path": img, "query_modality": modality,
                "pos_cand_list": [positive], "neg_cand_list": [], "task_id": task}

    mscoco = [q for i in range(size) for q in (query(f"9:{1001 + i}", names[i], None, "text", f"9:{1 + i}", 0),
                                               query(f"9:{2001 + i}", None, image(i), "image", f"9:{101 + i}", 3))]
    webqa = [query(f"2:{1001 + i}", f"What is {names[i]}?", None, "text", f"2:{1 + i}", 1) for i in range(size)]
    tests = {"mscoco_task0": [query(f"9:{3001 + i}", names[size + i], None, "text", f"9:{201 + i}", 0) for i in range(size)],
             "mscoco_task3": [query(f"9:{4001 + i}", None, image(size + i, True), "image", f"9:{301 + i}", 3)
                              for i in range(size)],
             "webqa_task1": [query(f"2:{3001 + i}", f"Who is {names[i]}?", None, "text", f"2:{1 + i}", 1) for i in range(size)]}
    vals = {"mscoco_task3": [query(f"9:{5001 + i}", None, image(i), "image", f"9:{401 + i}", 3) for i in range(size)]}
    files = {"query/train/mbeir_mscoco_train.jsonl": mscoco, "query/train/mbeir_webqa_train.jsonl": webqa,
             "query/union_train/mbeir_union_up_train.jsonl": [r for pair in zip(webqa, mscoco[:size], webqa, mscoco[size:])
                                                              for r in pair],
             "cand_pool/local/mbeir_mscoco_task0_cand_pool.jsonl": pictures,
             "cand_pool/local/mbeir_mscoco_task3_cand_pool.jsonl": captions,
             "cand_pool/local/mbeir_webqa_task1_cand_pool.jsonl": passages,
             "cand_pool/local/mbeir_mscoco_task0_test_cand_pool.jsonl": test_pictures,
             "cand_pool/local/mbeir_mscoco_task3_test_cand_pool.jsonl": test_captions,
             "cand_pool/global/mbeir_union_test_cand_pool.jsonl": test_pictures + test_captions + passages + distractors,
             "cand_pool/global/mbeir_union_val_cand_pool.jsonl": val_captions + distractors}
    files.update({f"query/test/mbeir_{task}_test.jsonl": rows for task, rows in tests.items()})
    files.update({f"query/val/mbeir_{task}_val.jsonl": rows for task, rows in vals.items()})
    for relative, rows in files.items():
        _write_jsonl(root, relative, rows)
    for split, tasks in (("test", tests), ("val", vals)):
        for task, rows in tasks.items():
            qrels = root / "qrels" / split / f"mbeir_{task}_{split}_qrels.txt"
            qrels.parent.mkdir(parents=True, exist_ok=True)
            qrels.write_text("".join(f"{r['qid']} 0 {r['pos_cand_list'][0]} 1\n" for r in rows), encoding="utf-8")
    (root / "instructions").mkdir(exist_ok=True)
    (root / "instructions" / "query_instructions.tsv").write_text(
        "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\n" + "".join(
            f"{q}\t{c}\t{'MSCOCO' if d == '9' else 'WebQA'}\t{d}\t{text}\n" for (d, q, c), text in MBEIR_INSTRUCTIONS.items()),
        encoding="utf-8")
    return root
