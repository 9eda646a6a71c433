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
