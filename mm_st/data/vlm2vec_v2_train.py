"""VLM2Vec-V2's training data: its dataset-config YAML (``experiments/public/train/train_alltasks.yaml``) and the five
parsers it names, read into mm_st's ``anchor`` / ``positive`` columns.

Each entry of the YAML is one dataset: ``dataset_parser`` (:data:`PARSERS`: ``mmeb`` image rows, ``llavahound_caption``
/ ``llavahound_qa`` video rows, ``vidore`` / ``visrag`` document pages), its ``weight`` (the share of sub-batches drawn
from it, ``src/data/loader/mixed_dataset.py:9-11``) and its files. Relative paths are read under ``basedir`` (V2's
``--data_basedir``), else next to the YAML. The text around each row's image or video is V2's parser's own, carried
per row as a full prompt (``instruction`` with ``<image>`` (an image's or a video's) / ``<sent>`` markers,
:mod:`mm_st.recipes.vlm2vec_v2`). A video is the list of its frame files sampled as V2's ``process_video_frames``
does (``src/utils/vision_utils/vision_utils.py:254-284``).

Example:
    >>> sample_frames([f"f{i}" for i in range(10)], 4)
    ['f0', 'f3', 'f6', 'f9']
    >>> sample_frames(["a", "b"], 8)
    ['a', 'b']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from mm_st.data.images import check_on_missing
from mm_st.data.rows import read_rows
from mm_st.recipes import vlm2vec_v2 as v2

# dataset_parser -> modality group (MMEB-V2's three parts)
PARSERS = {"mmeb": "image", "llavahound_caption": "video", "llavahound_qa": "video", "vidore": "visdoc",
           "visrag": "visdoc"}
GROUPS = ("image", "video", "visdoc")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DATA_MODES = ("caption_retrieval", "video_retrieval")  # llavahound_dataset_caption.py:37, 50


@dataclass(frozen=True)
class V2Dataset:
    """One entry of a V2 dataset config: its name, parser, weight and the entry's other keys."""

    name: str
    parser: str
    weight: float
    options: dict[str, Any] = field(default_factory=dict)
    root: Path = Path(".")

    @property
    def group(self) -> str:
        return PARSERS[self.parser]

    def path(self, key: str) -> Path:
        """The entry's path ``key``, under the config's root when relative."""
        if key not in self.options:
            raise ValueError(f"{self.where}: {self.parser} needs {key!r}.")
        value = Path(os.path.expanduser(str(self.options[key])))
        return value if value.is_absolute() else self.root / value

    def source(self) -> str:
        """``dataset_path`` when given, else ``dataset_name`` (a local folder under the root, or a Hub id)."""
        if "dataset_path" in self.options:
            return str(self.path("dataset_path"))
        name = str(self.options.get("dataset_name", ""))
        local = self.root / name
        return str(local) if name and local.exists() else name

    @property
    def where(self) -> str:
        return f"dataset {self.name!r}"

    @property
    def limit(self) -> int | None:
        """``num_sample_per_subset``: the first N rows (mmeb_dataset.py:124-127 and the other parsers)."""
        value = self.options.get("num_sample_per_subset")
        return int(value) if value is not None else None


def read_dataset_config(path: str | os.PathLike, basedir: str | os.PathLike | None = None) -> list[V2Dataset]:
    """The datasets of a V2 dataset-config YAML; errors name the file and the entry."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VLM2Vec-V2 dataset config {str(path)!r} not found.")
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{str(path)!r}: not valid YAML ({exc}).") from None
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{str(path)!r}: expected a mapping of dataset name -> its entry (V2's train_*.yaml layout).")
    root = Path(basedir) if basedir else path.parent
    out = []
    for name, entry in entries.items():
        where = f"{str(path)!r} dataset {name!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}.")
        parser = entry.get("dataset_parser")
        if parser not in PARSERS:
            raise ValueError(f"{where}: dataset_parser {parser!r} is not one of {', '.join(PARSERS)}.")
        weight = entry.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ValueError(f"{where}: weight must be a number > 0, got {weight!r}.")
        options = {k: v for k, v in entry.items() if k not in ("dataset_parser", "weight")}
        out.append(V2Dataset(str(name), parser, float(weight), options, root))
    return out


def sample_frames(frames: list[str], num_frames: int | None) -> list[str]:
    """V2's ``process_video_frames``: ``num_frames`` evenly spaced frames (``np.linspace(0, n-1, k, dtype=int)``);
    all frames when there are fewer (or ``num_frames`` is None)."""
    if num_frames is None or num_frames > len(frames):
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, num_frames, dtype=int).tolist()]


def video_frames(root: Path, video: str, num_frames: int | None, where: str) -> list[str]:
    """The sampled frame files of video folder ``root/video`` (files sorted by name; empty when there are none),
    each kept inside ``root`` (a ``..`` or a symbolic link out of it is an error naming ``where``)."""
    from mm_st.io import resolve_inside

    folder = resolve_inside(root, video, where=where, what="video")
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
    frames = sample_frames([str(p) for p in files], num_frames)
    return [str(resolve_inside(root, frame, where=where, what="video frame")) for frame in frames]


# -- rows -> columns ------------------------------------------------------------------------------------------------

def _feature(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The struct of one input column: text and instruction, plus image or video when the rows hold one."""
    feature: dict[str, Any] = {"text": datasets.Value("string")}
    if any(row.get("video") for row in rows):
        feature["video"] = datasets.List(datasets.Value("string"))
    else:
        feature["image"] = datasets.Image()
    feature["instruction"] = datasets.Value("string")
    return feature


def _input(text: str | None = None, instruction: str | None = None, image: Any = None,
           video: list[str] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"text": text or None, "instruction": instruction}
    if video is not None:
        row["video"] = video
    else:
        row["image"] = image
    return row


def build_pairs(name: str, pairs: list[tuple[dict, dict]]) -> datasets.Dataset:
    """``anchor`` / ``positive`` columns from (query, target) inputs."""
    anchors, positives = [a for a, _ in pairs], [p for _, p in pairs]
    if not pairs:
        raise ValueError(f"dataset {name!r}: no rows (an empty file, or every row skipped).")
    features = datasets.Features({"anchor": _feature(anchors), "positive": _feature(positives)})
    return datasets.Dataset.from_dict({"anchor": anchors, "positive": positives}, features=features)


# -- the parsers ----------------------------------------------------------------------------------------------------

def _load_mmeb(entry: V2Dataset, on_missing: str, seed: int) -> datasets.Dataset:
    """mmeb_dataset.py:116-151: MMEB-train rows as written (VLM2Vec's loader), negatives dropped (train_collator.py:
    196-213 feeds only query and positive)."""
    from mm_st.data.mmeb_train import load_mmeb_train

    subset = entry.options.get("subset_name")
    if not subset:
        raise ValueError(f"{entry.where}: mmeb needs 'subset_name'.")
    image_dir = entry.path("image_dir") if "image_dir" in entry.options else None
    loaded = load_mmeb_train(entry.source(), [subset], split=entry.options.get("dataset_split", "original"),
                             image_root=image_dir, num_negatives=0, on_missing=on_missing, seed=seed)
    ds = loaded[subset]
    return ds.select(range(min(entry.limit, len(ds)))) if entry.limit else ds


def _llava_hound_rows(entry: V2Dataset) -> list[dict[str, Any]]:
    rows = read_rows(entry.path("dataset_path"))
    return rows[: entry.limit] if entry.limit else rows


def _turns(row: dict[str, Any], where: str) -> tuple[str, str]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) and "value" in t for t in turns[:2]):
        raise ValueError(f"{where}: 'conversations' must hold a human and a gpt turn with 'value', got {turns!r}.")
    return str(turns[0]["value"]), str(turns[1]["value"])


def _load_llava_hound(entry: V2Dataset, on_missing: str, seed: int) -> datasets.Dataset:
    """llavahound_dataset_caption.py:26-72 / llavahound_dataset_qa.py:18-50: a video and its conversation."""
    mode = entry.options.get("data_mode", "caption_retrieval") if entry.parser == "llavahound_caption" else "qa"
    if mode not in (*DATA_MODES, "qa"):
        raise ValueError(f"{entry.where}: data_mode {mode!r} is not one of {', '.join(DATA_MODES)}.")
    frame_root, num_frames = entry.path("video_frame_basedir"), entry.options.get("num_frames")
    pairs, missing = [], []
    for index, row in enumerate(_llava_hound_rows(entry)):
        where = f"{entry.where} ({entry.path('dataset_path')}) row {index}"
        human, gpt = _turns(row, where)
        frames = video_frames(frame_root, str(row.get("video", "")), num_frames, where)
        if not frames:
            missing.append(f"{where}: no frames under {str(frame_root / str(row.get('video', '')))!r}")
            continue
        if mode == "caption_retrieval":
            pairs.append((_input(instruction=v2.llava_hound_query(human), video=frames), _input(gpt)))
        elif mode == "video_retrieval":
            pairs.append((_input(gpt, v2.VRET_QRY_PROMPT + v2.SENT), _input(instruction=v2.VRET_TGT_PROMPT + v2.VIDEO,
                                                                            video=frames)))
        else:
            pairs.append((_input(instruction=v2.llava_hound_query(human, v2.QA_QUERY_PROMPT), video=frames), _input(gpt)))
    _report(entry, missing, on_missing, len(pairs) + len(missing))
    return build_pairs(entry.name, pairs)


def _report(entry: V2Dataset, missing: list[str], on_missing: str, total: int) -> None:
    if not missing:
        return
    if on_missing == "error":
        raise FileNotFoundError(f"{len(missing)} of {total} rows have no video frames (V2 skips them; mm_st: "
                                "--on-missing skip):\n  " + "\n  ".join(missing[:5]))
    import logging

    logging.getLogger("mm_st.data.converters").warning("%s: skipped %d of %d rows without video frames.",
                                                        entry.name, len(missing), total)


def _page_rows(entry: V2Dataset, columns: tuple[str, ...]) -> datasets.Dataset:
    source = entry.source()
    if source.endswith(".parquet"):
        import pyarrow.parquet as pq

        if not Path(source).is_file():
            raise FileNotFoundError(f"{entry.where}: {source!r} not found.")
        ds = datasets.Dataset(pq.read_table(source))
    else:
        ds = datasets.load_dataset(source, split=entry.options.get("dataset_split", "train"))
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{entry.where} ({source}): no column(s) {missing}; it has {ds.column_names}.")
    ds = ds.select_columns(list(columns)).cast_column("image", datasets.Image(decode=False))  # bytes kept as they are
    return ds.select(range(min(entry.limit, len(ds)))) if entry.limit else ds


def _load_vidore(entry: V2Dataset, on_missing: str, seed: int) -> datasets.Dataset:
    """vidore_dataset.py:21-54: the page and its question -> the answer (colpali_train_set)."""
    ds = _page_rows(entry, ("query", "image", "answer"))
    return build_pairs(entry.name, [(_input(r["query"], v2.VIDORE_QUERY_PROMPT, image=r["image"]), _input(r["answer"]))
                                    for r in ds])


def _load_visrag(entry: V2Dataset, on_missing: str, seed: int) -> datasets.Dataset:
    """visrag_dataset.py:43-75: the query with its source's prompt -> the page with its source's description."""
    ds = _page_rows(entry, ("query", "image", "source"))
    return build_pairs(entry.name, [(_input(r["query"], v2.visrag_query_prompt(r["source"])),
                                     _input(instruction=v2.visrag_target_prompt(r["source"]), image=r["image"]))
                                    for r in ds])


LOADERS = {"mmeb": _load_mmeb, "llavahound_caption": _load_llava_hound, "llavahound_qa": _load_llava_hound,
           "vidore": _load_vidore, "visrag": _load_visrag}


def load_v2_dataset(entry: V2Dataset, on_missing: str = "error", seed: int = 0) -> datasets.Dataset:
    """One dataset of a V2 dataset config as ``anchor`` / ``positive`` columns."""
    check_on_missing(on_missing)
    return LOADERS[entry.parser](entry, on_missing, seed)
