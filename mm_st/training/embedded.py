"""The embedded default's data: the bundled emoji written out in each paper's own data layout.

The recipes read these files with the same converters as the real data (``load_nli``,
``load_mmeb_train``, ``load_mme5_synthetic``) and evaluate on held-out emoji written in the XTD
layout (``XTDT2IRetrieval``): train split for training, test split (unseen emoji) for evaluation.
Each row uses a name in one of the XTD languages, rotating, so the multilingual evaluation sees
every language in training. Hard negatives are siblings: emoji of the same subgroup (then group).

Example:
    >>> import tempfile
    >>> from mm_st.training.embedded import write_nli
    >>> path = write_nli(tempfile.mkdtemp(), limit=4)
    >>> open(path, encoding="utf-8").readline().strip()
    'sent0,sent1,hard_neg'
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from mm_st.data import load_emoji

LANGUAGES = ("en", "es", "it", "ko", "pl", "ru", "tr", "zh")  # XTD10's languages that the emoji names cover
IMAGE_TOKEN = "<|image_1|>"  # VLM2Vec / mmE5 data placeholder (the converters strip it)

# MMEB-train-style rows: (query text, query has image, positive text, positive has image)
MMEB_TRAIN_ROWS = {
    "ImageNet_1K": (IMAGE_TOKEN + "\nRepresent the given image for classification\n", True, "{name}", False),
    "MSCOCO_t2i": ("Find me an everyday image that matches the given caption: {name}", False,
                   IMAGE_TOKEN + "\nRepresent the given image.", True),
    "MSCOCO_i2t": (IMAGE_TOKEN + "\nFind an image caption describing the given everyday image.\n", True, "{name}", False),
}
# mmE5-synthetic-style rows (same columns, lists of 3 negatives): (query, query image, positive, positive image)
SYNTHETIC_ROWS = {
    "Classification": (IMAGE_TOKEN + "\nName the emoji shown in the image in {language}: ", True, "{name}", False),
    "Retrieval": ("Find the emoji image whose name is: {name}", False, IMAGE_TOKEN + "\nRepresent the given image.", True),
    "VQA": (IMAGE_TOKEN + "\nRepresent the given image with the following question: Which category is this emoji in?",
            True, "{group}", False),
}
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "it": "Italian", "ko": "Korean", "pl": "Polish",
                  "ru": "Russian", "tr": "Turkish", "zh": "Chinese"}


def _split(split: str, limit: int | None) -> datasets.Dataset:
    ds = load_emoji(split)
    return ds.select(range(min(limit, len(ds)))) if limit else ds


def _siblings(ds: datasets.Dataset, count: int, seed: int) -> list[list[int]]:
    """For each row, ``count`` other rows of the same subgroup, then group, then any (seeded order)."""
    rng = random.Random(seed)
    subgroup, group = ds["subgroup"], ds["group"]
    by_sub: dict[str, list[int]] = {}
    by_group: dict[str, list[int]] = {}
    for i, (s, g) in enumerate(zip(subgroup, group)):
        by_sub.setdefault(s, []).append(i)
        by_group.setdefault(g, []).append(i)
    out = []
    for i in range(len(ds)):
        picks: list[int] = []
        for pool in (by_sub[subgroup[i]], by_group[group[i]], range(len(ds))):
            rest = [j for j in pool if j != i and j not in picks]
            rng.shuffle(rest)
            picks += rest[: count - len(picks)]
            if len(picks) == count:
                break
        out.append(picks)
    return out


def _names(ds: datasets.Dataset) -> tuple[list[str], list[dict[str, str]]]:
    """Per row: its language (rotating over LANGUAGES) and its names by language (English when missing)."""
    columns = {lang: ds[f"name_{lang}"] for lang in LANGUAGES}
    names = [{lang: columns[lang][i] or columns["en"][i] for lang in LANGUAGES} for i in range(len(ds))]
    return [LANGUAGES[i % len(LANGUAGES)] for i in range(len(ds))], names


def _write_images(ds: datasets.Dataset, root: Path, folder: str) -> list[str]:
    (root / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(ds["image"]):
        relative = f"{folder}/{i}.png"
        if not (root / relative).is_file():
            image.convert("RGB").save(root / relative)
        paths.append(relative)
    return paths


def write_nli(directory: str | Path, limit: int | None = None, seed: int = 0) -> Path:
    """SimCSE's ``nli_for_simcse.csv`` layout (E5-V's training file): ``sent0, sent1, hard_neg``.

    sent0 = an emoji's English name, sent1 = its name in another language, hard_neg = a sibling's
    name in that language.
    """
    ds = _split("train", limit)
    langs, names = _names(ds)
    siblings = _siblings(ds, 1, seed)
    path = Path(directory) / "nli_for_simcse.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sent0", "sent1", "hard_neg"])
        for i, lang in enumerate(langs):
            other = lang if lang != "en" else LANGUAGES[1 + i % (len(LANGUAGES) - 1)]
            writer.writerow([names[i]["en"], names[i][other], names[siblings[i][0]][other]])
    return path


def _vlm2vec_rows(spec: tuple, ds: datasets.Dataset, paths: list[str], negatives: int, seed: int) -> list[dict]:
    query, query_image, positive, positive_image = spec
    langs, names = _names(ds)
    groups = ds["group"]
    siblings = _siblings(ds, negatives, seed) if negatives else [[] for _ in range(len(ds))]
    rows = []
    for i, lang in enumerate(langs):
        def fill(text: str, j: int) -> str:
            return text.format(name=names[j][lang], language=LANGUAGE_NAMES[lang], group=groups[j])

        row = {"qry": fill(query, i), "qry_image_path": paths[i] if query_image else "",
               "pos_text": fill(positive, i), "pos_image_path": paths[i] if positive_image else ""}
        if negatives:
            row["neg_text"] = [fill(positive, j) for j in siblings[i]]
            row["neg_image_path"] = [paths[j] if positive_image else "" for j in siblings[i]]
        else:
            row["neg_text"], row["neg_image_path"] = "", ""
        rows.append(row)
    return rows


def write_mmeb_train(directory: str | Path, configs=tuple(MMEB_TRAIN_ROWS), limit: int | None = None,
                     split: str = "original", seed: int = 0) -> Path:
    """MMEB-train's layout: ``{dir}/{config}/{split}-00000-of-00001.parquet`` + ``{dir}/images/`` (the image root)."""
    return _write_layout(Path(directory), MMEB_TRAIN_ROWS, configs, split, limit, 0, seed)


def write_mme5_synthetic(directory: str | Path, configs=tuple(SYNTHETIC_ROWS), limit: int | None = None,
                         negatives: int = 3, seed: int = 0) -> Path:
    """mmE5-synthetic's layout (``{dir}/{config}/train-*.parquet``, list-valued negatives) + ``{dir}/images/``."""
    return _write_layout(Path(directory), SYNTHETIC_ROWS, configs, "train", limit, negatives, seed)


def _write_layout(root: Path, specs: dict, configs, split: str, limit: int | None, negatives: int, seed: int) -> Path:
    unknown = [c for c in configs if c not in specs]
    if unknown:
        raise ValueError(f"The embedded data has no config(s) {unknown}; it has {', '.join(specs)}.")
    ds = _split("train", limit)
    paths = _write_images(ds, root / "images", "emoji")
    for config in configs:
        rows = _vlm2vec_rows(specs[config], ds, paths, negatives, seed)
        (root / config).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / config / f"{split}-00000-of-00001.parquet")
    return root


TEXT_PAIR_LANGUAGES = ("de", "fr", "es", "it", "pt")
TEXT_PAIR_INSTRUCTION = "Find the English keywords of this emoji name."


def write_text_pairs(directory: str | Path, limit: int | None = None) -> Path:
    """Text retrieval pairs (MM-Embed's stage 3) from the train split, as ``text-pairs.jsonl``: an emoji's
    name in another language (rotating over :data:`TEXT_PAIR_LANGUAGES`) -> its English name and keywords,
    with the instruction in each row.

    Example:
        >>> import json, tempfile
        >>> path = write_text_pairs(tempfile.mkdtemp(), limit=2)
        >>> sorted(json.loads(open(path, encoding="utf-8").readline()))
        ['instruction', 'positive', 'query']
    """
    import json

    ds = _split("train", limit)
    path = Path(directory) / "text-pairs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (name, keywords) in enumerate(zip(ds["name_en"], ds["keywords_en"])):
        lang = TEXT_PAIR_LANGUAGES[i % len(TEXT_PAIR_LANGUAGES)]
        query = ds[f"name_{lang}"][i] or name
        positive = ", ".join(sorted({*keywords, name}, key=lambda word: (word.lower(), word)))
        lines.append(json.dumps({"query": query, "positive": positive, "instruction": TEXT_PAIR_INSTRUCTION},
                                ensure_ascii=False) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_xtd(directory: str | Path, languages=LANGUAGES, limit: int | None = None) -> Path:
    """Held-out (test split) emoji in the XTD10 layout: ``test_image_names.txt``, ``test_1kcaptions_<lang>.txt``, images/."""
    root = Path(directory)
    ds = _split("test", limit)
    _, names = _names(ds)
    files = _write_images(ds, root / "images", "emoji")
    (root / "test_image_names.txt").write_text("\n".join(files) + "\n", encoding="utf-8")
    for lang in languages:
        if lang not in LANGUAGES:
            raise ValueError(f"The embedded evaluation has no language {lang!r}; it has {', '.join(LANGUAGES)}.")
        lines = [n[lang].replace("\n", " ") for n in names]
        (root / f"test_1kcaptions_{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
