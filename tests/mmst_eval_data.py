"""Tiny local data sets in the MMEB-eval, XTD and CIRR layouts, built from the bundled emoji images.

Every row is derived from emoji indices, so an oracle encoder (:class:`OracleEncoder`) knows which
query belongs with which candidate: images are keyed by their pixels, texts by the emoji name.
Used by tests/evaluation/test_evaluation.py and benchmarks/mmeb_eval.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ScoringFunction
from mteb.types import PromptType

from mm_st.data import load_emoji
from mm_st.evaluation.instructions import IMAGE_TOKEN, MMEB

LANGS = ("en", "es", "it", "ko", "pl", "ru", "tr", "zh")


def emoji(n: int, langs=LANGS):
    """The first ``n`` test emoji whose names are unique in every language of ``langs``: (images, names by lang)."""
    ds = load_emoji("test")
    seen = {lang: set() for lang in langs}
    keep = []
    for i in range(len(ds)):
        row = ds[i]
        if all(row[f"name_{lang}"] not in seen[lang] for lang in langs):
            keep.append(i)
            for lang in langs:
                seen[lang].add(row[f"name_{lang}"])
        if len(keep) == n:
            break
    if len(keep) < n:
        raise ValueError(f"only {len(keep)} emoji have names unique in {langs}; asked for {n}")
    rows = [ds[i] for i in keep]
    return [r["image"].convert("RGB") for r in rows], {lang: [r[f"name_{lang}"] for r in rows] for lang in langs}


def write_images(root: Path, images, folder: str = "emoji") -> list[str]:
    """Save images as PNG under ``root/folder`` and return their paths relative to ``root``."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        relative = f"{folder}/{i}.png"
        if not (root / relative).is_file():
            image.save(root / relative)
        paths.append(relative)
    return paths


def _rows(entry, n_queries: int, n_candidates: int, pool: int, paths, names, rng, unique_lists: bool):
    """MMEB rows for one dataset: query i belongs with emoji i; negatives drawn from the pool."""
    q_mods, d_mods = entry.category.split("2")
    q_instr, d_instr = entry.query[0], entry.document[0] if entry.document else ""
    rows = []
    for i in range(n_queries):
        others = [k for k in range(pool) if k != i]
        negs = rng.sample(others, n_candidates - 1) if unique_lists else [rng.choice(others) for _ in range(n_candidates - 1)]
        targets = [i, *negs]
        q_text = (IMAGE_TOKEN + "\n" if "i" in q_mods else "") + q_instr + ("What is this?" if q_mods == "it" else "")
        if q_mods == "t":
            q_text += names[i]
        tgt_text, tgt_img = [], []
        for k in targets:
            if d_mods == "t":
                tgt_text.append(names[k])
                tgt_img.append("")
            else:
                tgt_text.append(IMAGE_TOKEN + "\n" + d_instr + (names[k] if d_mods == "it" else ""))
                tgt_img.append(paths[k])
        rows.append({"qry_text": q_text, "qry_img_path": paths[i] if "i" in q_mods else "", "tgt_text": tgt_text, "tgt_img_path": tgt_img})
    return rows


def write_mmeb(root: Path, names=None, n_queries: int = 6, n_candidates: int = 5, pool: int | None = None,
               seed: int = 0, unique_lists: bool = True, fmt: str = "parquet") -> dict[str, list[dict]]:
    """An MMEB-eval mirror: ``root/<Dataset>/test-00000-of-00001.parquet`` + ``root/eval_images``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(names or MMEB)
    pool = pool or max(n_queries, n_candidates)
    images, labels = emoji(pool)
    paths = write_images(root / "eval_images", images)
    rng = random.Random(seed)
    out = {}
    for name in names:
        rows = _rows(MMEB[name], n_queries, n_candidates, pool, paths, labels["en"], rng, unique_lists)
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")
        else:
            with (folder / "test.jsonl").open("w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r) + "\n" for r in rows)
        out[name] = rows
    return out


def write_xtd(root: Path, n: int = 12, langs=LANGS) -> dict[str, list[str]]:
    """An XTD10 directory: test_image_names.txt, test_1kcaptions_<lang>.txt, images/."""
    images, labels = emoji(n)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    names = [f"COCO_train2014_{i:012d}.png" for i in range(n)]
    for name, image in zip(names, images):
        image.save(root / "images" / name)
    (root / "test_image_names.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    for lang in langs:
        (root / f"test_1kcaptions_{lang}.txt").write_text("\n".join(labels[lang]) + "\n", encoding="utf-8")
    return labels


CIRR_QUERIES = [  # (pairid, reference, target, members) over images img0..img7
    (1, 0, 1, [0, 1, 2, 3, 4, 5]),
    (2, 2, 3, [2, 3, 6, 7, 0, 1]),
    (3, 4, 5, [4, 5, 6, 7, 1, 2]),
]


def write_cirr(root: Path, split: str = "val") -> list[str]:
    """An official-layout CIRR directory with 8 images and the 3 queries of :data:`CIRR_QUERIES`."""
    images, labels = emoji(8)
    names = [f"{split}-{i}-0-img{i}" for i in range(8)]
    write_images(root / "img_raw", images, folder="dev")
    (root / "captions").mkdir(parents=True, exist_ok=True)
    (root / "image_splits").mkdir(parents=True, exist_ok=True)
    split_map = {n: f"./dev/{i}.png" for i, n in enumerate(names)}
    caps = [
        {"pairid": p, "reference": names[r], "target_hard": names[t], "caption": f"make it a {labels['en'][t]}",
         "img_set": {"id": p, "members": [names[m] for m in members]}}
        for p, r, t, members in CIRR_QUERIES
    ]
    (root / "image_splits" / f"split.rc2.{split}.json").write_text(json.dumps(split_map), encoding="utf-8")
    (root / "captions" / f"cap.rc2.{split}.json").write_text(json.dumps(caps), encoding="utf-8")
    return names


class OracleEncoder(AbsEncoder):
    """Embeds an input as the one-hot vector of its emoji (image pixels, else the name in any language).

    ``reverse=True`` negates document embeddings, so the right candidate scores lowest.
    ``vectors`` maps input ids to fixed vectors instead (hand-made cases).
    """

    def __init__(self, n: int, reverse: bool = False, vectors: dict[str, list[float]] | None = None, dim: int | None = None):
        images, labels = emoji(n)
        self.by_pixels = {im.tobytes(): i for i, im in enumerate(images)}
        self.by_name = {name: i for lang in labels.values() for i, name in enumerate(lang)}
        self.n, self.reverse, self.vectors = n, reverse, vectors
        self.dim = dim or n
        self.encoded = {"query": 0, "document": 0}
        self.mteb_model_meta = ModelMeta.create_empty(overwrites=dict(
            name="test/oracle", revision="1", modalities=["image", "text"], similarity_fn_name=ScoringFunction.COSINE,
            framework=["NumPy"]))

    def key(self, text, image) -> int:
        if image is not None:
            return self.by_pixels[image.convert("RGB").tobytes()]
        return self.by_name[text]

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        out = []
        for batch in inputs:
            n = len(batch["id"])
            texts, images = batch.get("text", [None] * n), batch.get("image", [None] * n)
            for rid, text, image in zip(batch["id"], texts, images):
                if self.vectors is not None:
                    vec = np.asarray(self.vectors[rid], dtype=np.float32)
                else:
                    vec = np.zeros(self.dim, dtype=np.float32)
                    vec[self.key(text, image)] = 1.0
                if self.reverse and prompt_type == PromptType.document:
                    vec = -vec
                out.append(vec)
            self.encoded[prompt_type.value] += n
        return np.stack(out)
