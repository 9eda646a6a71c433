"""MMEB-V2's video and visual-document datasets read from a local mirror of VLM2Vec's evaluation layout (no mteb).

Source: TIGER-AI-Lab/VLM2Vec at commit 6e1e1d42d4cba85ae4db4d3f7a25cba2465d1e16 (the v1 pin of
``benchmarks/reference/README.md``): ``experiments/public/eval/{video,visdoc}.yaml`` (which parser, frame folder,
``num_frames``, ``eval_type`` each dataset has), ``src/constant/dataset_hf_path.py`` (which Hugging Face dataset, subset
and split each parser loads) and the parsers ``src/data/eval_dataset/*.py`` (instructions, query and candidate
texts, candidate names, positives). :data:`DATASETS` is that table; :func:`task_inputs` turns one dataset into the
queries, candidates and positives VLM2Vec's ``eval.py`` scores, as plain Python objects: the function a script calls
to compare these inputs with VLM2Vec's own parser and collator.

What is read, under one root (``$MM_ST_MMEB_V2_DATA``, :data:`LAYOUT`):

- ``<root>/<repo>/``: a local copy of each Hugging Face dataset repo the parsers load (``hf download --repo-type
  dataset <repo> --local-dir <root>/<repo>``), read with ``datasets.load_dataset(<root>/<repo>, subset, split=...)``,
  the call the parsers make with the repo id.
- ``<root>/<frame_root>/<video id>/``: the extracted frames (``frame_0000.jpg`` ...), ``frame_root`` as in
  ``video.yaml`` (``video-tasks/frames/...``). VLM2Vec extracts them from the videos on first use; here they must
  be there (a missing folder is an error naming the dataset and the folder).
- Page images come from the ``image`` column of the dataset's ``corpus`` (VLM2Vec writes them to ``image_root`` as
  PNG files before reading them back: the same pixels).

Each video is the list of its frame files in VLM2Vec's order (``load_frames``: natural sort, ``.jpg/.jpeg/.png``),
sampled to the dataset's ``num_frames`` (8) as ``process_video_frames`` does (``np.linspace(0, n-1, num_frames,
dtype=int)``; fewer frames: all kept). MomentSeeker keeps every saved frame (``load_frames``, up to 8 saved).

Example:
    >>> DATASETS["MSR-VTT"].eval_type, DATASETS["MSR-VTT"].query_instruction
    ('global', 'Find a video that contains the following visual content:')
    >>> sample_frames([f"f{i}.jpg" for i in range(10)], 4)
    ['f0.jpg', 'f3.jpg', 'f6.jpg', 'f9.jpg']
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm_st.evaluation.data import DataLayoutError, DataSource
from mm_st.io import resolve_inside
from mm_st.evaluation.mmeb_v2_labels import VIDEO_CLASSIFICATION_LABELS

SOURCE_COMMIT = "6e1e1d42d4cba85ae4db4d3f7a25cba2465d1e16"

LAYOUT = """\
Expected layout of a local MMEB-V2 root (VLM2Vec's evaluation data, experiments/public/eval/{video,visdoc}.yaml):
  <root>/<repo>/                   a local copy of each Hugging Face dataset repo of VLM2Vec's
                                   src/constant/dataset_hf_path.py (e.g. <root>/VLM2Vec/MSR-VTT,
                                   <root>/vidore/arxivqa_test_subsampled_beir), loadable with
                                   datasets.load_dataset(<root>/<repo>, subset, split=split)
  <root>/<frame_root>/<video id>/  the frames of each video (frame_0000.jpg, ...), frame_root as in video.yaml,
                                   e.g. video-tasks/frames/video_ret/MSR-VTT/video7020/
  page images: the `image` column of each visual-document dataset's `corpus` subset"""

SOURCE = DataSource("MMEB-V2", "MM_ST_MMEB_V2_DATA", None, LAYOUT)

INSTRUCTION_COLUMN = "mm_st_instruction"  # a query's own instruction ("" = the task's), read by MMSTEncoder
IMAGE_COLUMN = "mm_st_image"  # an image beside a video-category query (MomentSeeker), read by MMSTEncoder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # vision_utils.py IMAGE_EXTENSIONS
QA_PROMPT = ("Given a video and a question, select the most accurate answer from the provided candidates. "
             "Return only the exact text of your chosen answer. Question: ")  # TASK_PROMPT of the video QA parsers
VIDEO_TARGET = "Understand the content of the provided video."
PAGE_QUERY = "Find a document image that matches the given query:"
PAGE_TARGET = "Understand the content of the provided document image."
MOMENTSEEKER_QUERY = {  # momentseeker_dataset.py TASK_INST_QRY_{TEXT,IMG,VIDEO}: one per query modality
    "text": "Find the clip that corresponds to the given text:",
    "image": "Select the video clip that aligns with the given text and image:",
    "video": "Find the clip that corresponds to the given sentence and video segment:",
}


@dataclass(frozen=True)
class V2Dataset:
    """One MMEB-V2 dataset of ``video.yaml`` / ``visdoc.yaml``: where it is, how it is parsed and scored.

    ``name`` is the config key (the name of the score files); ``hf`` is ``(repo, subset, split)`` of
    ``dataset_hf_path.py``; ``group`` is the meta-task column of VLM2Vec's table; ``in_table`` whether
    ``experiments/report_score_v2.py`` lists it (the three English-only ViDoRe v2 subsets are evaluated by
    ``visdoc.yaml`` but not in the 78-dataset table).
    """

    name: str
    modality: str  # video | visdoc
    group: str  # CLS | QA | RET | MRET (video); VDRv1 | VDRv2 | VR | OOD (visdoc)
    parser: str
    hf: tuple[str, str | None, str]
    eval_type: str  # local: each query's own candidates; global: every candidate of the dataset
    query_instruction: str
    document_instruction: str | None = None
    frame_root: str | None = None
    num_frames: int | None = 8
    language: str | None = None  # visdoc: keep the queries of this language (dataset_hf_path.py's subset slot)
    source_name: str = ""  # VLM2Vec's dataset_name where it differs from the key (K700 -> Kinetics-700)
    in_table: bool = True
    num_rows: int | None = None  # num_sample_per_subset: the first rows only (sample_dataset)
    row_instructions: bool = False  # each query row carries its own instruction (INSTRUCTION_COLUMN)

    @property
    def category(self) -> str:
        return CATEGORIES[self.parser]


CATEGORIES = {  # mteb category (query 2 document) of each parser's inputs
    "ssv2": "v2t", "video_classification": "v2t", "msrvtt": "t2v", "msvd": "t2v", "didemo": "t2v", "youcook2": "t2v",
    "vatex": "t2v", "moment_retrieval": "vt2v", "momentseeker": "vt2v", "videomme": "vt2t", "nextqa": "vt2t",
    "egoschema": "vt2t", "mvbench": "vt2t", "activitynetqa": "vt2t", "vidore": "t2i", "visrag": "t2i",
}

_CLS = "video-tasks/frames/video_cls/"
_RET = "video-tasks/frames/video_ret/"
_MRET = "video-tasks/frames/video_mret/"
_QA = "video-tasks/frames/video_qa/"


def _classification(name, source, frames, instruction, eval_type="global", parser="video_classification",
                    num_rows=None):
    return V2Dataset(name, "video", "CLS", parser, (f"VLM2Vec/{source}", None, "test"), eval_type, instruction,
                     frame_root=_CLS + frames, source_name=source, num_rows=num_rows)


def _retrieval(name, parser, hf, frames, instruction):
    return V2Dataset(name, "video", "RET", parser, hf, "global", instruction, VIDEO_TARGET, frame_root=_RET + frames)


def _qa(name, parser, hf, frames=None):
    return V2Dataset(name, "video", "QA", parser, hf, "local", QA_PROMPT, frame_root=_QA + (frames or name))


def _page(name, parser, repo, group, split="test", language=None, in_table=True):
    return V2Dataset(name, "visdoc", group, parser, (repo, None, split), "global", PAGE_QUERY, PAGE_TARGET,
                     num_frames=None, language=language, in_table=in_table)


_VIDEO = [  # video.yaml, in VLM2Vec's table order (report_score_v2.py)
    _classification("K700", "Kinetics-700", "K700", "Recognize the category of the video content."),
    _classification("SmthSmthV2", "SmthSmthV2", "SSv2",
                    "What actions or object interactions are being performed by the person in the video?",
                    eval_type="local", parser="ssv2", num_rows=1000),
    _classification("HMDB51", "HMDB51", "HMDB51",
                    "What actions or objects interactions are the person in the video doing?"),
    _classification("UCF101", "UCF101", "UCF101",
                    "What activities or sports are being performed by the person in the video?"),
    _classification("Breakfast", "Breakfast", "Breakfast",
                    "Recognize the breakfast type that the person is cooking in the video. "),
    _qa("MVBench", "mvbench", ("VLM2Vec/MVBench", None, "train")),
    _qa("Video-MME", "videomme", ("VLM2Vec/Video-MME", None, "test")),
    _qa("NExTQA", "nextqa", ("VLM2Vec/NExTQA", "MC", "test")),
    _qa("EgoSchema", "egoschema", ("VLM2Vec/EgoSchema", "Subset", "test")),
    _qa("ActivityNetQA", "activitynetqa", ("VLM2Vec/ActivityNetQA", None, "test")),
    _retrieval("DiDeMo", "didemo", ("VLM2Vec/DiDeMo", None, "test"), "DiDeMo",
               "Find a video that includes the following described scenes:"),
    _retrieval("MSR-VTT", "msrvtt", ("VLM2Vec/MSR-VTT", "test_1k", "test"), "MSR-VTT",
               "Find a video that contains the following visual content:"),
    _retrieval("MSVD", "msvd", ("VLM2Vec/MSVD", None, "test"), "MSVD",
               "Find the video snippet that corresponds to the given summary:"),
    _retrieval("VATEX", "vatex", ("VLM2Vec/VATEX", None, "test"), "VATEX",
               "Select a video that fits the description provided:"),
    _retrieval("YouCook2", "youcook2", ("lmms-lab/YouCook2", None, "val"), "YouCook2",
               "Find a video that demonstrates the following action while making a recipe:"),
    V2Dataset("QVHighlight", "video", "MRET", "moment_retrieval", ("VLM2Vec/QVHighlight", None, "test"), "local",
              "Find the clip that corresponds to the described scene in the given video:", VIDEO_TARGET,
              frame_root=_MRET + "QVHighlight"),
    V2Dataset("Charades-STA", "video", "MRET", "moment_retrieval", ("VLM2Vec/Charades-STA", None, "test"), "local",
              "Find the clip that corresponds to the described scene in the given video:", VIDEO_TARGET,
              frame_root=_MRET + "Charades_STA"),
    V2Dataset("MomentSeeker", "video", "MRET", "momentseeker", ("VLM2Vec/MomentSeeker", None, "test"), "local",
              MOMENTSEEKER_QUERY["text"], "Understand the content of the provided video clip.",
              frame_root=_MRET + "MomentSeeker", num_frames=None, row_instructions=True),
]

_VIDORE_V1 = [("arxivqa", "arxivqa_test_subsampled_beir"), ("docvqa", "docvqa_test_subsampled_beir"),
              ("infovqa", "infovqa_test_subsampled_beir"), ("tabfquad", "tabfquad_test_subsampled_beir"),
              ("tatdqa", "tatdqa_test_beir"), ("shiftproject", "shiftproject_test_beir")] + [
    (f"syntheticDocQA_{topic}", f"syntheticDocQA_{topic}_test_beir")
    for topic in ("artificial_intelligence", "energy", "government_reports", "healthcare_industry")]
_VIDORE_V2 = ["biomedical_lectures_v2", "economics_reports_v2", "esg_reports_v2"]

_VISDOC = [  # visdoc.yaml; in_table: report_score_v2.py's visdoc list
    *(_page(f"ViDoRe_{key}", "vidore", f"vidore/{repo}", "VDRv1") for key, repo in _VIDORE_V1),
    _page("ViDoRe_esg_reports_human_labeled_v2", "vidore", "vidore/esg_reports_human_labeled_v2", "VDRv2"),
    *(_page(f"ViDoRe_{key}", "vidore", f"vidore/{key}", "VDRv2", language="english", in_table=False)
      for key in _VIDORE_V2),
    *(_page(f"ViDoRe_{key}_multilingual", "vidore", f"vidore/{key}", "VDRv2") for key in _VIDORE_V2),
    *(_page(f"VisRAG_{key}", "visrag", f"openbmb/VisRAG-Ret-Test-{key}", "VR", split="train")
      for key in ("ArxivQA", "ChartQA", "MP-DocVQA", "SlideVQA", "InfoVQA", "PlotQA")),
    _page("ViDoSeek-page", "vidore", "VLM2Vec/ViDoSeek-page-fixed", "OOD"),
    _page("ViDoSeek-doc", "vidore", "VLM2Vec/ViDoSeek", "OOD"),
    _page("MMLongBench-page", "vidore", "VLM2Vec/MMLongBench-page-fixed", "OOD"),
    _page("MMLongBench-doc", "vidore", "VLM2Vec/MMLongBench-doc", "OOD"),
]

DATASETS: dict[str, V2Dataset] = {d.name: d for d in (*_VIDEO, *_VISDOC)}
VIDEO_GROUPS = ("CLS", "QA", "RET", "MRET")
VISDOC_GROUPS = ("VDRv1", "VDRv2", "VR", "OOD")


# ----------------------------------------------------------------------------------------------
# What a task is made of
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One query or candidate input: text, a video (frame paths), an image (path or PIL image), and the
    instruction of this row where the dataset's rows differ (MomentSeeker's queries)."""

    text: str = ""
    video: tuple[str, ...] | None = None
    image: Any = None
    instruction: str | None = None


@dataclass
class TaskInputs:
    """A dataset as VLM2Vec scores it: query ``i`` is ``queries[i]``; ``candidates`` maps each candidate name
    (VLM2Vec's ``cand_name``, its identity) to its input in first-seen order; ``relevant[i]`` maps the names
    of query ``i``'s positives to their relevance; ``ranked[i]`` is its own candidate list (local datasets;
    None: every candidate)."""

    queries: list[Item] = field(default_factory=list)
    candidates: dict[str, Item] = field(default_factory=dict)
    relevant: list[dict[str, int]] = field(default_factory=list)
    ranked: list[list[str]] | None = None

    def add(self, query: Item, candidates: Iterable[tuple[str, Item]], relevant: dict[str, int]) -> None:
        names = []
        for name, item in candidates:
            self.candidates.setdefault(name, item)  # generate_cand_dataset: the first row's input of a name
            names.append(name)
        self.queries.append(query)
        self.relevant.append(relevant)
        if self.ranked is not None:
            self.ranked.append(names)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def root_dir(data: str | os.PathLike | None = None) -> Path:
    """The local MMEB-V2 root: ``data``, else ``$MM_ST_MMEB_V2_DATA`` (an existing directory)."""
    path = Path(SOURCE.resolve(data)).expanduser()
    if not path.is_dir():
        raise DataLayoutError(f"MMEB-V2 root not found: {str(path)!r}.\n{LAYOUT}")
    return path


def load_split(dataset: V2Dataset, root: Path, subset: str | None = None, repo: str | None = None):
    """The rows ``datasets.load_dataset(<root>/<repo>, subset, split=...)`` gives for the local copy of ``dataset``'s
    repo (``subset`` overrides its own), read straight from its data files: nothing is cached, so a changed copy is
    read as it is now."""
    import datasets

    repo = repo or dataset.hf[0]
    subset = subset if subset is not None else dataset.hf[1]
    split = dataset.hf[2]
    where = root / repo
    if not where.is_dir():
        raise DataLayoutError(f"{dataset.name}: the local copy of the Hugging Face dataset {repo!r} is missing: "
                              f"{str(where)!r}.\n{LAYOUT}")
    try:
        data_files = datasets.load_dataset_builder(str(where), subset).config.data_files or {}
        rows = datasets.concatenate_datasets([_read_table(str(f)) for f in data_files[split]])
        return rows.select(range(dataset.num_rows)) if dataset.num_rows and dataset.num_rows < len(rows) else rows
    except (ValueError, FileNotFoundError, KeyError, OSError) as error:
        raise DataLayoutError(f"{dataset.name}: cannot read split {split!r} of subset {subset!r} from {str(where)!r}: "
                              f"{type(error).__name__}: {error}\n{LAYOUT}") from None


def _read_table(path: str):
    """One data file as a ``datasets.Dataset`` (features from the file's own metadata: images stay images)."""
    import datasets
    import pyarrow.json
    import pyarrow.parquet

    if path.endswith(".parquet"):
        return datasets.Dataset(pyarrow.parquet.read_table(path))
    if path.endswith((".json", ".jsonl")):
        return datasets.Dataset(pyarrow.json.read_json(path))
    raise ValueError(f"{path!r}: only .parquet and .json/.jsonl data files are read")


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def load_frames(dataset: V2Dataset, folder: Path) -> list[str]:
    """The frame files of one video folder in VLM2Vec's order; an error names the dataset and folder when there
    are none."""
    names = sorted(os.listdir(folder), key=_natural) if folder.is_dir() else []
    frames = [str(folder / n) for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    if not frames:
        state = "has no frame images (.jpg/.jpeg/.png)" if folder.is_dir() else "is missing"
        raise DataLayoutError(f"{dataset.name}: the frame folder {str(folder)!r} {state}. Extract the video's frames "
                              f"there (VLM2Vec's save_frames, up to 64 per video).\n{LAYOUT}")
    return frames


def sample_frames(frames: list[str], num_frames: int | None) -> list[str]:
    """``process_video_frames``: ``num_frames`` frames at ``np.linspace(0, n-1, num_frames, dtype=int)``, or all
    when there are fewer (or ``num_frames`` is None)."""
    if num_frames is None or num_frames > len(frames):
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, num_frames, dtype=int)]


def inside(dataset: V2Dataset, root: Path, *parts: str) -> Path:
    """``<root>/<frame_root>/<parts...>``, refused (naming the dataset) when a data value leads it out of the root."""
    return resolve_inside(root, Path(dataset.frame_root or "", *parts), where=dataset.name, what="frame")


def video(dataset: V2Dataset, root: Path, *parts: str, num_frames: int | None = -1) -> tuple[str, ...]:
    """The sampled frames of ``<root>/<frame_root>/<parts...>``."""
    folder = inside(dataset, root, *parts)
    return tuple(sample_frames(load_frames(dataset, folder), dataset.num_frames if num_frames == -1 else num_frames))


# ----------------------------------------------------------------------------------------------
# The parsers: VLM2Vec's data_prepare of each dataset_parser, as (query, candidates, positives)
# ----------------------------------------------------------------------------------------------

Parser = Callable[[V2Dataset, Path, TaskInputs], None]
PARSERS: dict[str, Parser] = {}


def parser(*names: str) -> Callable[[Parser], Parser]:
    def register(function: Parser) -> Parser:
        for name in names:
            PARSERS[name] = function
        return function

    return register


def _texts(names: Iterable[str], texts: Iterable[str] | None = None) -> list[tuple[str, Item]]:
    names = list(names)
    return [(n, Item(text=t)) for n, t in zip(names, texts if texts is not None else names)]


@parser("video_classification", "ssv2")
def _video_classification(d: V2Dataset, root: Path, out: TaskInputs) -> None:
    rows = load_split(d, root)
    for row in rows:  # video_classification_datasets.py / ssv2_dataset.py
        query = Item(video=video(d, root, str(row["video_id"])))
        names = row["neg_text"] if d.parser == "ssv2" else [row["pos_text"]]
        out.add(query, _texts(names), {row["pos_text"]: 1})
    if d.parser == "video_classification":  # the corpus: every label (VIDEOCLS_LABEL_MAPPING)
        for label in VIDEO_CLASSIFICATION_LABELS[d.source_name]:
            out.candidates.setdefault(label, Item(text=label))


_RETRIEVAL_COLUMNS = {  # parser: (video name, query text) of a row
    "msrvtt": lambda r: (r["video_id"], r["caption"]),
    "msvd": lambda r: (r["video_id"], r["caption"][0]),
    "didemo": lambda r: (os.path.splitext(os.path.basename(r["video"]))[0], r["caption"]),
    "youcook2": lambda r: (r["id"], r["sentence"]),
    "vatex": lambda r: (r["videoID"], r["enCap"][0]),
}


@parser(*_RETRIEVAL_COLUMNS)
def _video_retrieval(d: V2Dataset, root: Path, out: TaskInputs) -> None:
    columns = _RETRIEVAL_COLUMNS[d.parser]
    for row in load_split(d, root):
        name, caption = columns(row)
        candidate = Item(video=video(d, root, name))
        out.add(Item(text=caption), [(name, candidate)], {name: 1})


@parser("moment_retrieval")
def _moment_retrieval(d: V2Dataset, root: Path, out: TaskInputs) -> None:
    for row in load_split(d, root):  # moment_retrieval_datasets.py: clips are the folders beside query/
        video_name = os.path.splitext(os.path.basename(row["video_path"]))[0]
        folder = inside(d, root, video_name)
        query = Item(text=row["query"], video=video(d, root, video_name, "query"))
        clips = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "query") if folder.is_dir() else []
        positive = [c for c in clips if c.startswith("positive")]
        if not positive:
            raise DataLayoutError(f"{d.name}: {str(folder)!r} has no clip folder named positive* beside query/ "
                                  f"(found {clips}).\n{LAYOUT}")
        candidates = [(str(folder / c), Item(video=video(d, root, video_name, c))) for c in clips]
        out.add(query, candidates, {str(folder / positive[-1]): 1})


def _clip_folder(path: str) -> str:
    return path.replace("/", "_").split(".mp4")[0]


@parser("momentseeker")
def _momentseeker(d: V2Dataset, root: Path, out: TaskInputs) -> None:
    frames = inside(d, root)
    for row in load_split(d, root):  # momentseeker_dataset.py: the query's modality picks its instruction
        given = row["input_frames"] or ""
        if given.endswith(".mp4"):
            query = Item(text=row["query"], video=video(d, root, "video_frames", _clip_folder(given)),
                         instruction=MOMENTSEEKER_QUERY["video"])
        elif given.endswith(".jpg"):
            image = inside(d, root, f"query_{given}")
            if not image.is_file():
                raise DataLayoutError(f"{d.name}: the query image {str(image)!r} is missing.\n{LAYOUT}")
            query = Item(text=row["query"], image=str(image), instruction=MOMENTSEEKER_QUERY["image"])
        else:
            query = Item(text=row["query"], instruction=MOMENTSEEKER_QUERY["text"])
        clips = [str(frames / "video_frames" / _clip_folder(e["output_path"]))
                 for e in [*row["positive_frames"], *row["negative_frames"]]]
        candidates = [(c, Item(video=video(d, root, "video_frames", Path(c).name))) for c in clips]
        out.add(query, candidates, {c: 1 for c in clips[:len(row["positive_frames"])]})


def options_template(question: str, options: list[str]) -> str:
    """vision_utils.py ``qa_template``: the question, then ``Options:`` and ``(A) ...`` lines."""
    lines = [question, "Options:", *(f"({chr(ord('A') + i)}) {o}" for i, o in enumerate(options))]
    return "\n".join(lines).rstrip()


def _strip_letter(option: str) -> str:
    return option[option.find(". "):].strip(". ")  # videomme / egoschema: "A. answer" -> "answer"


def _videomme(row: dict) -> tuple:
    options = list(row["options"])
    text = row["question"] + "\n" + "\n".join(options)
    return row["videoID"], text, options, [_strip_letter(o) for o in options], options["ABCD".index(row["answer"])]


def _nextqa(row: dict) -> tuple:
    options = [row[f"a{i}"] for i in range(5)]
    return str(row["video"]), options_template(row["question"], options), options, options, options[row["answer"]]


def _egoschema(row: dict) -> tuple:
    options = list(row["option"])
    text = row["question"] + " ".join(options)
    return str(row["video_idx"]), text, options, [_strip_letter(o) for o in options], options[int(row["answer"])]


def _mvbench(row: dict) -> tuple:
    candidates = list(row["candidates"])
    options = [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(candidates)]
    answer = options[candidates.index(row["answer"])] if row["answer"] in candidates else row["answer"]
    return f"{row['subset']}/{row['video']}", options_template(row["question"], candidates), options, options, answer


def _activitynetqa(row: dict) -> tuple:
    options = ["yes", "no"]
    return f"v_{row['video_name']}", row["question"] + "? (A) yes; (B) no.", options, options, row["answer"]


# parser: a row -> (frame folder, query text, candidate names, candidate texts, positive name), as its data_prepare
QA_ROWS = {"videomme": _videomme, "nextqa": _nextqa, "egoschema": _egoschema, "mvbench": _mvbench,
           "activitynetqa": _activitynetqa}


MVBENCH_SUBSETS = (  # mvbench_dataset.py subset_meta, in its order
    "episodic_reasoning", "action_sequence", "action_prediction", "action_antonym", "fine_grained_action",
    "unexpected_action", "object_existence", "object_interaction", "object_shuffle", "moving_direction",
    "action_localization", "scene_transition", "action_count", "moving_count", "moving_attribute", "state_change",
    "fine_grained_pose", "character_order", "egocentric_navigation", "counterfactual_inference",
)


def _qa_rows(d: V2Dataset, root: Path) -> Iterable[dict]:
    if d.parser != "mvbench":
        yield from load_split(d, root)
        return
    for subset in MVBENCH_SUBSETS:  # load_hf_dataset_multiple_subset: the subsets one after the other
        for row in load_split(d, root, subset=subset):
            yield {**row, "subset": subset}


@parser("videomme", "nextqa", "egoschema", "mvbench", "activitynetqa")
def _video_qa(d: V2Dataset, root: Path, out: TaskInputs) -> None:
    for row in _qa_rows(d, root):
        folder, text, names, texts, answer = QA_ROWS[d.parser](row)
        if answer not in names:
            raise DataLayoutError(f"{d.name}: row {len(out.queries)}'s answer {answer!r} is none of its options "
                                  f"{names}.\n{LAYOUT}")
        out.add(Item(text=text, video=video(d, root, *folder.split("/"))), _texts(names, texts), {answer: 1})


@parser("vidore", "visrag")
def _pages(d: V2Dataset, root: Path, out: TaskInputs) -> None:
    queries, qrels, corpus = (load_split(d, root, subset=s) for s in ("queries", "qrels", "corpus"))
    if d.language is not None:
        queries = queries.filter(lambda row: row["language"] == d.language)
    relevant: dict[str, dict[str, int]] = {}
    for row in qrels:  # load_qrels_mapping: positive scores, the highest per pair
        if row["score"] > 0:
            pair = relevant.setdefault(str(row["query-id"]), {})
            pair[str(row["corpus-id"])] = max(pair.get(str(row["corpus-id"]), 0), int(row["score"]))
    for index, row in enumerate(corpus):
        out.candidates.setdefault(str(row["corpus-id"]), Item(image=row["image"]))
    for index, row in enumerate(queries):
        positives = relevant.get(str(row["query-id"]))
        if not positives:
            raise DataLayoutError(f"{d.name}: query {row['query-id']!r} (row {index} of {d.hf[0]}/queries) has no "
                                  f"positive qrels row.\n{LAYOUT}")
        missing = [p for p in positives if p not in out.candidates]
        if missing:
            raise DataLayoutError(f"{d.name}: query {row['query-id']!r}'s positive page(s) {missing} are not in "
                                  f"{d.hf[0]}/corpus.\n{LAYOUT}")
        out.add(Item(text=row["query"]), [], positives)


def task_inputs(name: str, data: str | os.PathLike | None = None) -> TaskInputs:
    """The queries, candidates and positives of MMEB-V2 dataset ``name`` (a key of :data:`DATASETS`) as VLM2Vec's
    parser builds them from the local root ``data`` (default ``$MM_ST_MMEB_V2_DATA``). Query ``i``'s instruction
    is ``queries[i].instruction`` or the dataset's ``query_instruction``; a candidate's is ``document_instruction``.

    >>> inputs = task_inputs("MSR-VTT", "/path/to/mmeb-v2")  # doctest: +SKIP
    >>> inputs.queries[0].text, inputs.candidates[next(iter(inputs.relevant[0]))].video  # doctest: +SKIP
    ('a man is driving a car', ('.../video7020/frame_0000.jpg', ...))
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown MMEB-V2 dataset {name!r}. Known: {', '.join(DATASETS)}.")
    dataset = DATASETS[name]
    out = TaskInputs(ranked=[] if dataset.eval_type == "local" else None)
    PARSERS[dataset.parser](dataset, root_dir(data), out)
    if not out.queries:
        raise DataLayoutError(f"{name}: {dataset.hf[0]} has no query rows.\n{LAYOUT}")
    return out


def model_inputs(name: str, inputs: TaskInputs) -> tuple[list[dict], list[dict]]:
    """(queries, candidates) of :func:`task_inputs` as mm_st's model takes them (``model.encode_query`` /
    ``encode_document``): ``{"video": [frame paths], "text": ..., "image": ..., "instruction": ...}`` with the fields
    an input has and the instruction VLM2Vec gives it (a recipe that takes no instruction ignores it in mteb, not here).
    Candidates come in the order of ``inputs.candidates``."""
    dataset = DATASETS[name]

    def form(item: Item, instruction: str | None) -> dict:
        fields = {"video": list(item.video) if item.video else None, "text": item.text or None, "image": item.image,
                  "instruction": item.instruction or instruction}
        return {k: v for k, v in fields.items() if v is not None}

    return ([form(q, dataset.query_instruction) for q in inputs.queries],
            [form(c, dataset.document_instruction) for c in inputs.candidates.values()])

