"""A tiny local MMEB-V2 root in VLM2Vec's evaluation layout (mm_st.evaluation.mmeb_v2_files.LAYOUT), generated.

Each video is a folder of PNG frames drawn with Pillow, each page an image, and every one has a *key*: the red
channel of its pixels is ``KEY_STEP * key``. Texts name their key as ``key<k>`` (or are the key'th label of a fixed
label list). :class:`KeyEncoder` embeds an input as the one-hot vector of its key, so an oracle run must score 1.0
and a reversed one 0.0 on every dataset written here. :data:`WRITTEN` lists the datasets ``write_layout`` writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ScoringFunction
from mteb.types import PromptType
from PIL import Image, ImageDraw

from mm_st.evaluation.mmeb_v2_files import DATASETS, MVBENCH_SUBSETS
from mm_st.evaluation.mmeb_v2_labels import VIDEO_CLASSIFICATION_LABELS

KEY_STEP, DIM = 20, 12
BREAKFAST = VIDEO_CLASSIFICATION_LABELS["Breakfast"]
VOCABULARY = {**{label: i for i, label in enumerate(BREAKFAST)}, "yes": 0, "no": 1}


def picture(key: int, size: int = 16, mark: int = 0) -> Image.Image:
    """A picture of ``key``: red channel ``KEY_STEP * key`` everywhere, a small square at ``mark`` (frames differ)."""
    image = Image.new("RGB", (size, size), (KEY_STEP * key, 90, 160))
    ImageDraw.Draw(image).rectangle([mark % (size - 4), 2, mark % (size - 4) + 3, 5], fill=(KEY_STEP * key, 200, 30))
    return image


def write_frames(folder: Path, key: int, n: int = 10) -> Path:
    """``n`` frames ``frame_0.png`` ... ``frame_<n-1>.png`` (unpadded: their order is the natural sort's)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        picture(key, mark=i).save(folder / f"frame_{i}.png")
    return folder


def write_hf(root: Path, repo: str, configs: dict[str | None, dict[str, dict]], split: str = "test") -> None:
    """A local copy of a Hub dataset repo: one parquet file per (subset, split), a README declaring the subsets."""
    folder = root / repo
    lines = []
    for subset, columns in configs.items():
        features = columns.pop("_features", None)
        name = subset or "default"
        path = folder / name / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
        lines += [f"- config_name: {name}", "  data_files:", f"  - split: {split}", f"    path: {name}/{split}-*"]
    (folder / "README.md").write_text("---\nconfigs:\n" + "\n".join(lines) + "\n---\n", encoding="utf-8")


def _frames_root(root: Path, name: str) -> Path:
    return root / DATASETS[name].frame_root


def write_classification(root: Path) -> None:
    """Breakfast (global over its 10 labels) and SmthSmthV2 (local: each row's own labels)."""
    ids = ["P03_cam01_P03_coffee", "P05_webcam_tea", "P07_juice"]
    keys = [BREAKFAST.index(x) for x in ("coffee", "tea", "juice")]
    for vid, key in zip(ids, keys):
        write_frames(_frames_root(root, "Breakfast") / vid, key, n=12)
    write_hf(root, "VLM2Vec/Breakfast", {None: {"video_id": ids, "pos_text": [BREAKFAST[k] for k in keys]}})
    for i in range(2):
        write_frames(_frames_root(root, "SmthSmthV2") / str(100 + i), i + 2, n=5)
    write_hf(root, "VLM2Vec/SmthSmthV2", {None: {
        "video_id": [100, 101], "pos_text": ["key2 pushing", "key3 pulling"],
        "neg_text": [["key0 a", "key2 pushing", "key5 b"], ["key3 pulling", "key4 c"]]}})


def write_retrieval(root: Path) -> None:
    """MSR-VTT: three captions of three videos, global over the videos."""
    ids = ["video7020", "video7021", "video7022"]
    for i, vid in enumerate(ids):
        write_frames(_frames_root(root, "MSR-VTT") / vid, i + 1)
    write_hf(root, "VLM2Vec/MSR-VTT", {"test_1k": {"video_id": ids, "video": [f"{v}.mp4" for v in ids],
                                                   "caption": [f"key{i + 1} a person does thing {i}" for i in range(3)]}})


def write_moments(root: Path) -> None:
    """QVHighlight (query clip + text -> clip folders beside it) and MomentSeeker (text, image or video queries)."""
    qv = _frames_root(root, "QVHighlight")
    for v, key in (("vidA_60.0_210.0", 4), ("vidB_0.0_150.0", 6)):
        write_frames(qv / v / "query", key)
        write_frames(qv / v / "positive_0", key, n=8)
        for j, other in enumerate((1, 2)):
            write_frames(qv / v / f"negative_{j}", other, n=8)
    write_hf(root, "VLM2Vec/QVHighlight", {None: {"query": ["key4 a man talks", "key6 a dog runs"],
                                                  "video_path": ["videos/vidA_60.0_210.0.mp4", "videos/vidB_0.0_150.0.mp4"]}})
    ms = _frames_root(root, "MomentSeeker")
    for clip, key in (("ms/c1.mp4", 3), ("ms/c2.mp4", 5), ("ms/c3.mp4", 7), ("src/q.mp4", 5)):
        write_frames(ms / "video_frames" / clip.replace("/", "_").split(".mp4")[0], key, n=6)
    ms.mkdir(parents=True, exist_ok=True)
    picture(7).save(ms / "query_img7.jpg", format="PNG")
    write_hf(root, "VLM2Vec/MomentSeeker", {None: {
        "query": ["key3 text only", "key5 with a clip", "key7 with an image"],
        "input_frames": ["", "src/q.mp4", "img7.jpg"],
        "positive_frames": [[{"output_path": "ms/c1.mp4"}], [{"output_path": "ms/c2.mp4"}], [{"output_path": "ms/c3.mp4"}]],
        "negative_frames": [[{"output_path": "ms/c2.mp4"}], [{"output_path": "ms/c3.mp4"}, {"output_path": "ms/c1.mp4"}],
                            [{"output_path": "ms/c1.mp4"}]]}})


def write_qa(root: Path) -> None:
    """Video-MME, NExTQA, EgoSchema, ActivityNetQA: one or two questions each, the answer's key is the video's."""
    write_frames(_frames_root(root, "Video-MME") / "vmme1", 2)
    write_hf(root, "VLM2Vec/Video-MME", {None: {
        "question": ["What is shown?"], "videoID": ["vmme1"], "answer": ["C"], "question_id": ["001-1"],
        "options": [["A. key0 cat", "B. key1 dog", "C. key2 car", "D. key3 cup"]], "domain": ["x"], "sub_category": ["y"]}})
    write_frames(_frames_root(root, "NExTQA") / "4010", 1)
    write_hf(root, "VLM2Vec/NExTQA", {"MC": {
        "video": [4010], "question": ["why"], "answer": [1], "qid": [7], "type": ["CW"],
        **{f"a{i}": [f"key{i} option {i}"] for i in range(5)}}})
    write_frames(_frames_root(root, "EgoSchema") / "ego-1", 3)
    write_hf(root, "VLM2Vec/EgoSchema", {"Subset": {
        "video_idx": ["ego-1"], "question": ["What did c do?"], "answer": ["3"], "question_idx": ["q1"],
        "option": [[f"{chr(65 + i)}. key{i} did {i}" for i in range(5)]]}})
    for name, key in (("v_abc", 0), ("v_def", 1)):
        write_frames(_frames_root(root, "ActivityNetQA") / name, key)
    write_hf(root, "VLM2Vec/ActivityNetQA", {None: {"video_name": ["abc", "def"], "question": ["is it day", "is it red"],
                                                    "answer": ["yes", "no"], "question_id": ["a1", "a2"]}})


def write_mvbench(root: Path) -> None:
    """MVBench: one question in each of its 20 subsets (the parser loads them all)."""
    configs = {}
    for i, subset in enumerate(MVBENCH_SUBSETS):
        key = i % 4
        write_frames(_frames_root(root, "MVBench") / subset / f"v{i}.mp4", key, n=4)
        configs[subset] = {"video": [f"v{i}.mp4"], "question": [f"q{i}?"], "answer": [f"key{key} ans"],
                           "candidates": [[f"key{j} ans" for j in range(4)]]}
    write_hf(root, "VLM2Vec/MVBench", configs, split="train")


def write_pages(root: Path, repo: str, n_queries: int = 3, languages: list[str] | None = None, split: str = "test",
                names: list[str] | None = None) -> None:
    """A BEIR-style visual-document set: queries (``key<k>``), graded qrels, a corpus of pages of keys 0..4."""
    names = names or [str(10 + k) for k in range(5)]
    corpus = {"corpus-id": names, "image": [picture(k, size=24) for k in range(5)],
              "_features": datasets.Features({"corpus-id": datasets.Value("string"), "image": datasets.Image()})}
    queries = {"query-id": [f"q{i}" for i in range(n_queries)], "query": [f"key{i + 1} find it" for i in range(n_queries)]}
    if languages:
        queries["language"] = [languages[i % len(languages)] for i in range(n_queries)]
    qrels = {"query-id": [f"q{i}" for i in range(n_queries)] + ["q0"], "corpus-id": [names[i + 1] for i in range(n_queries)]
             + [names[4]], "score": [2] * n_queries + [0]}  # the last: a zero score VLM2Vec drops
    write_hf(root, repo, {"queries": queries, "qrels": qrels, "corpus": corpus}, split=split)


WRITTEN = ("Breakfast", "SmthSmthV2", "MSR-VTT", "QVHighlight", "MomentSeeker", "Video-MME", "NExTQA", "EgoSchema",
           "ActivityNetQA", "MVBench", "ViDoRe_arxivqa", "ViDoRe_esg_reports_v2", "ViDoRe_esg_reports_v2_multilingual",
           "VisRAG_ArxivQA")


def write_layout(root: Path) -> Path:
    """Write every dataset of :data:`WRITTEN` under ``root`` (returned)."""
    datasets.disable_progress_bars()
    write_classification(root)
    write_retrieval(root)
    write_moments(root)
    write_qa(root)
    write_mvbench(root)
    write_pages(root, "vidore/arxivqa_test_subsampled_beir")
    write_pages(root, "vidore/esg_reports_v2", n_queries=4, languages=["english", "french"])
    write_pages(root, "openbmb/VisRAG-Ret-Test-ArxivQA", split="train", names=[f"p{k}.png" for k in range(5)])
    return root


class KeyEncoder(AbsEncoder):
    """Embeds an input as the one-hot of its key: a video's or image's red channel, else ``key<k>`` in its text, else
    its index in :data:`VOCABULARY`. ``reverse`` negates the documents (every positive ranks last)."""

    def __init__(self, reverse: bool = False):
        self.reverse = reverse
        self.seen: dict[str, list] = {"query": [], "document": []}
        self.mteb_model_meta = ModelMeta.create_empty(overwrites=dict(
            name="test/key-oracle", revision="1", modalities=["image", "text", "video"],
            similarity_fn_name=ScoringFunction.COSINE, framework=["NumPy"]))

    @staticmethod
    def key(text, image, video) -> int:
        visual = image if image is not None else (Image.open(video[0]) if video else None)
        if visual is not None:
            return round(np.asarray(visual.convert("RGB"))[0, 0, 0] / KEY_STEP)
        found = re.search(r"key(\d+)", text or "")
        return int(found.group(1)) if found else VOCABULARY[text]

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        out = []
        for batch in inputs:
            n = len(batch["id"])
            columns = [batch.get(c) or [None] * n for c in ("text", "image", "video")]
            for text, image, video in zip(*columns):
                vec = np.zeros(DIM, dtype=np.float32)
                vec[self.key(text, image, video)] = 1.0
                out.append(-vec if self.reverse and prompt_type == PromptType.document else vec)
                self.seen[prompt_type.value].append((text, image is not None, tuple(video or ())))
        return np.stack(out)
