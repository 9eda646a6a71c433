"""MMEB-V2 inputs: VLM2Vec's own eval parsers and eval collator against mm_st's MMEB-V2 tasks, same local files.

For one video task (MSR-VTT, parser ``msrvtt``), one visual-document task (ViDoRe_arxivqa, parser ``vidore``) and
MomentSeeker (parser ``momentseeker``: a text, a text + image and a text + video query, each with its own
instruction; local clip candidates), both sides read the same tiny local layout (:func:`write_layout`) and the script compares, row by row, on the
query and the candidate side: the sampled frame paths, the instruction texts and the token ids after the processor
(and the vision grids and pixel values the processor gives).

- VLM2Vec (run as written): the task configs of ``experiments/public/eval/{video,visdoc}.yaml`` (paths joined to
  ``--data_basedir`` as ``eval.py`` does), ``AutoEvalPairDataset.instantiate`` -> the parser's ``load_*_dataset``
  / ``data_prepare`` / ``corpus_prepare`` (``src/data/eval_dataset/{msrvtt,vidore}_dataset.py``, frames from
  ``process_video_frames``), ``generate_cand_dataset``, ``MultimodalEvalDataCollator`` (``src/data/collator/
  eval_collator.py``) with ``Qwen2_VL_process_fn`` (``src/model/processor.py``).
- Redirected: the parsers' ``load_hf_dataset((repo, subset, split))`` (``src/utils/dataset_utils.py``) is called
  with the local copy ``<root>/<repo>`` (the Hub repo's files, as mm_st's MMEB-V2 layout has them) for ``repo``:
  nothing is downloaded.
- Replaced: VLM2Vec's vendored ``Qwen2VLProcessor`` by transformers' ``AutoProcessor`` of the tiny ``qwen2_vl``
  checkpoint, with VLM2Vec's image sizes (``load_processor``: ``size={"shortest_edge": resize_min_pixels,
  "longest_edge": resize_max_pixels}``) given to its image AND video processor: the vendored processor sends
  videos through its image processor (``processing_qwen2_vl.py``: ``self.image_processor(images=None,
  videos=videos)``). The vendored image processor's video grid is computed as well (loaded from its file; it
  needs nothing stubbed) and compared with transformers' (``vendored_video_grid_equal``).
- mm_st: ``mmeb_v2_tasks([...], data=root)`` (``$MM_ST_MMEB_V2_DATA``'s layout), ``load_data``, the queries and the
  corpus through mteb's ``create_dataloader`` and ``MMSTEncoder.encode`` of ``build_model(tiny_model("qwen2_vl"),
  recipe=--recipe)``; each ``model.preprocess`` call recorded (inputs, instruction, features), the rows put back in
  the task's order (``encode`` batches inputs sorted by length) and matched to the reference's: queries by row,
  candidates by VLM2Vec's candidate name.

The ``vlm2vec_v2`` recipe renders VLM2Vec-V2's eval text (``process_input_text``'s ``"{instruction} {text}"`` /
``"<|video_pad|> {instruction}"``, :data:`mm_st.recipes.vlm2vec_v2.MMEB_V2_PROMPTS`) and sets VLM2Vec's processor
sizes (:data:`mm_st.recipes.vlm2vec_v2.PROCESSOR_SETTINGS`): as shipped, every row is expected equal.

Usage::

    python benchmarks/reference/mmeb_v2.py --upstream path/to/VLM2Vec [--recipe vlm2vec_v2]
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import common

FAMILY = "qwen2_vl"
RECIPE = "vlm2vec_v2"  # VLM2Vec-V2: the model MMEB-V2 is the benchmark of
VISION_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>")  # expanded by the processor: one per merged patch
VIDEO_TASK, VISDOC_TASK, MOMENT_TASK = "MSR-VTT", "ViDoRe_arxivqa", "MomentSeeker"
TASKS = (VIDEO_TASK, VISDOC_TASK, MOMENT_TASK)
TASK_CONFIGS = {VIDEO_TASK: "experiments/public/eval/video.yaml", VISDOC_TASK: "experiments/public/eval/visdoc.yaml",
                MOMENT_TASK: "experiments/public/eval/video.yaml"}
HUB = {VIDEO_TASK: ("VLM2Vec/MSR-VTT", "test_1k", "test"),
       VISDOC_TASK: ("vidore/arxivqa_test_subsampled_beir", None, "test"),
       MOMENT_TASK: ("VLM2Vec/MomentSeeker", None, "test")}  # fmt: skip
DATA_DIR_KEYS = ("image_root", "video_root", "frame_root", "clip_root", "data_path")  # eval.py's --data_basedir join

# (video id, caption, frame count, frame size, frame file name pattern). Counts above and at num_frames (8); one
# video with unpadded frame numbers (frame_1 ... frame_12: natural order != plain name order).
VIDEOS = [
    ("video7020", "a red circle moves from left to right", 20, (128, 96), "frame_{:04d}.jpg"),
    ("video7021", "a blue square falls down", 8, (128, 96), "frame_{:04d}.jpg"),
    ("video7023", "a yellow star spins on a large screen", 13, (336, 252), "frame_{:04d}.jpg"),
    ("video7024", "two circles meet in the middle", 12, (128, 96), "frame_{}.jpg"),
]
# Fewer frames than num_frames: its frames are written, its row is not in the task's file (VLM2Vec's msrvtt parser
# refuses it: ImageVideoInstance asserts num_frames bytes == the frame paths); probed alone (short_video_probe).
SHORT_VIDEO = ("video7022", "a green triangle grows", 5, (128, 96), "frame_{:04d}.jpg")
# ViDoRe BEIR: pages (corpus-id, lines of text), queries (query-id, query) and qrels (query-id, corpus-id, score).
PAGES = [
    (101, ["Table 1: accuracy by model", "model A 71.2", "model B 68.9"]),
    (102, ["Figure 3: training loss", "falls from 2.1 to 0.4"]),
    (103, ["Section 4 Results", "recall@5 improves by 3 points"]),
    (104, ["Appendix B hyperparameters", "learning rate 2e-5, batch 1024"]),
    (105, ["Abstract", "we study multimodal embeddings"]),
]
# MomentSeeker: one query of each kind (text; text + image, input_frames "*.jpg"; text + video, "*.mp4"), each
# with its clips (folders of 6 frames under <frame_root>/video_frames/, the name momentseeker_dataset.py makes).
MOMENTS = {"query": ["a red ball rolls away", "the dog in the picture jumps", "the man of this clip sings"],
           "input_frames": ["", "img7.jpg", "src/q.mp4"],
           "positive_frames": [[{"output_path": "ms/c1.mp4"}], [{"output_path": "ms/c2.mp4"}],
                               [{"output_path": "ms/c3.mp4"}]],
           "negative_frames": [[{"output_path": "ms/c2.mp4"}], [{"output_path": "ms/c3.mp4"}, {"output_path": "ms/c1.mp4"}],
                               [{"output_path": "ms/c1.mp4"}]]}  # fmt: skip
QUERIES = [(1, "Which model has the higher accuracy?"), (2, "How far does the training loss fall?"),
           (3, "What learning rate was used?")]  # fmt: skip
QRELS = [(1, 101, 1), (2, 102, 1), (2, 103, 1), (3, 104, 1), (3, 105, 0)]  # a score-0 row: not a positive


def parse_args():
    parser = common.base_parser(__doc__)
    parser.add_argument("--recipe", default=RECIPE, help=f"mm_st recipe of the tiny model (default {RECIPE})")
    return parser.parse_args()


# ------------------------------------------------------------------------------------------------
# The tiny layout


def write_layout(root: Path) -> None:
    """Write the tiny MMEB-V2 layout under ``root`` (VLM2Vec's ``--data_basedir``, mm_st's MMEB-V2 root).

    - ``video-tasks/frames/video_ret/MSR-VTT/<video id>/frame_*.jpg``: :data:`VIDEOS` and :data:`SHORT_VIDEO`,
      frames drawn with Pillow (a disc moving with the frame number, the number written). The videos themselves
      are not written: VLM2Vec's ``save_frames`` only extracts frames when the frame folder has none.
    - ``<repo>/``: a local copy of each Hub dataset repo the two parsers load, as ``hf download --local-dir`` gives
      it (a README whose ``configs`` name the parquet files): ``VLM2Vec/MSR-VTT`` (config ``test_1k``: ``video_id``,
      ``video``, ``caption``) and ``vidore/arxivqa_test_subsampled_beir`` (configs ``queries``, ``qrels``,
      ``corpus``: the BEIR columns, the :data:`PAGES` as PNG ``image``). VLM2Vec's ``corpus_prepare`` writes the
      pages to its ``image_root`` (``visdoc-tasks/ViDoRe_arxivqa/<corpus-id>.png``) itself.
    """
    import datasets
    from PIL import Image, ImageDraw

    root = Path(root)
    frames_root = root / "video-tasks" / "frames" / "video_ret" / VIDEO_TASK
    for number, (video_id, caption, count, size, pattern) in enumerate(VIDEOS + [SHORT_VIDEO]):
        folder = frames_root / video_id
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            frame = Image.new("RGB", size, (30 * number, 255 - 10 * k, 128))
            draw = ImageDraw.Draw(frame)
            x = (size[0] - 24) * k // max(count - 1, 1)
            draw.ellipse((x, size[1] // 3, x + 24, size[1] // 3 + 24), fill=(255, 40 * number % 256, 0))
            draw.text((4, 4), f"{video_id} #{k}", fill=(0, 0, 0))
            frame.save(folder / pattern.format(k + (pattern == "frame_{}.jpg")), quality=90)
    videos = {"video_id": [v[0] for v in VIDEOS], "video": [f"{v[0]}.mp4" for v in VIDEOS],
              "caption": [v[1] for v in VIDEOS]}  # fmt: skip
    write_hub_copy(root, HUB[VIDEO_TASK], {HUB[VIDEO_TASK][1]: datasets.Dataset.from_dict(videos)})

    pages = []
    for corpus_id, lines in PAGES:
        page = Image.new("RGB", (210, 297), "white")
        draw = ImageDraw.Draw(page)
        for row, line in enumerate(lines):
            draw.text((12, 16 + 22 * row), line, fill=(0, 0, 0))
        pages.append(page)
    queries = {"query-id": [q for q, _ in QUERIES], "query": [t for _, t in QUERIES]}
    qrels = {"query-id": [q for q, _, _ in QRELS], "corpus-id": [c for _, c, _ in QRELS],
             "score": [s for _, _, s in QRELS]}  # fmt: skip
    corpus = datasets.Dataset.from_dict({"corpus-id": [c for c, _ in PAGES], "image": pages},
                                        features=datasets.Features({"corpus-id": datasets.Value("int64"),
                                                                    "image": datasets.Image()}))  # fmt: skip
    write_hub_copy(root, HUB[VISDOC_TASK], {"queries": datasets.Dataset.from_dict(queries),
                                            "qrels": datasets.Dataset.from_dict(qrels), "corpus": corpus})  # fmt: skip
    write_moments(root)


def write_moments(root: Path) -> None:
    """MomentSeeker: :data:`MOMENTS` (a README config ``default``), each clip's and the video query's frames, the
    image query's picture (``<frame_root>/query_<input_frames>``)."""
    import datasets
    from PIL import Image, ImageDraw

    frame_root = root / "video-tasks" / "frames" / "video_mret" / MOMENT_TASK
    for number, clip in enumerate(("ms/c1.mp4", "ms/c2.mp4", "ms/c3.mp4", "src/q.mp4")):
        folder = frame_root / "video_frames" / clip.replace("/", "_").split(".mp4")[0]
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(6):
            frame = Image.new("RGB", (96, 64), (60 * number, 40 * k, 90))
            ImageDraw.Draw(frame).text((4, 4), f"{clip} #{k}", fill=(255, 255, 255))
            frame.save(folder / f"frame_{k}.jpg", quality=90)
    picture = Image.new("RGB", (80, 60), (200, 120, 40))
    ImageDraw.Draw(picture).ellipse((20, 10, 60, 50), fill=(20, 20, 200))
    picture.save(frame_root / "query_img7.jpg", quality=90)
    write_hub_copy(root, HUB[MOMENT_TASK], {"default": datasets.Dataset.from_dict(MOMENTS)})


def write_hub_copy(root: Path, hf_path: tuple, subsets: dict) -> None:
    """``root/<repo>``: each subset's parquet file and a README whose ``configs`` name them (the Hub's layout)."""
    repo, _, split = hf_path
    folder = Path(root, repo)
    configs = []
    for subset, table in subsets.items():
        (folder / subset).mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(folder / subset / f"{split}-00000-of-00001.parquet"))
        configs.append(f"- config_name: {subset}\n  data_files:\n  - split: {split}\n    path: {subset}/{split}-*\n")
    (folder / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n", encoding="utf-8")


def redirect_hub(root: Path, modules: list) -> None:
    """Each module's ``load_hf_dataset((repo, subset, split))`` -> VLM2Vec's own ``load_hf_dataset`` of the local
    copy ``root/<repo>`` (:func:`write_hub_copy`): ``datasets.load_dataset(root/<repo>, subset, split=split)``."""
    from src.utils.dataset_utils import load_hf_dataset

    def load_local(hf_path):
        repo, subset, split = hf_path
        return load_hf_dataset((str(Path(root, repo)), subset, split))

    for module in modules:
        module.load_hf_dataset = load_local


# ------------------------------------------------------------------------------------------------
# VLM2Vec's side


def task_config(upstream: Path, name: str, root: Path) -> dict:
    """The task's entry of the pinned eval yaml, its data paths joined to ``root`` as ``eval.py`` does."""
    import yaml

    config = dict(yaml.safe_load((Path(upstream) / TASK_CONFIGS[name]).read_text(encoding="utf-8"))[name])
    for key in DATA_DIR_KEYS:
        if config.get(key):
            config[key] = os.path.join(str(root), config[key])
    return config


def reference_processor(checkpoint: str, data_args):
    """transformers' processor with VLM2Vec's ``load_processor`` sizes on its image and its video processor."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoVideoProcessor

    size = {"shortest_edge": data_args.resize_min_pixels, "longest_edge": data_args.resize_max_pixels}
    return AutoProcessor.from_pretrained(
        checkpoint, image_processor=AutoImageProcessor.from_pretrained(checkpoint, size=size),
        video_processor=AutoVideoProcessor.from_pretrained(checkpoint, size=size),
    )  # fmt: skip


def vendored_image_processor(upstream: Path, checkpoint: str, data_args):
    """VLM2Vec's vendored ``Qwen2VLImageProcessor`` (its video path), loaded from its file under another name."""
    import importlib.util

    path = Path(upstream) / "src/model/vlm_backbone/qwen2_vl/image_processing_qwen2_vl.py"
    spec = importlib.util.spec_from_file_location("vlm2vec_vendored_image_processing_qwen2_vl", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    size = {"shortest_edge": data_args.resize_min_pixels, "longest_edge": data_args.resize_max_pixels}
    return module.Qwen2VLImageProcessor.from_pretrained(checkpoint, size=size)


def reference_side(collator, rows: list[dict], root: Path) -> list[dict]:
    """Each row as the eval collator gives it: text, visual file paths, token ids, grid and pixel values."""
    inputs, _ = collator(rows)
    out = []
    for row, text in enumerate(inputs["texts"]):
        visuals = inputs["images"][row] or []
        entry = {"text": text, "paths": [relative(v.filename, root) for v in visuals if v is not None],
                 "ids": common.reference_row_ids(inputs["input_ids"][row : row + 1],
                                                 inputs["attention_mask"][row : row + 1])[0]}  # fmt: skip
        for pixels, grid in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
            if inputs[pixels][row] is not None:
                entry["grid"] = [int(x) for x in inputs[grid][row].reshape(-1)]
                entry["pixels"] = inputs[pixels][row]
        out.append(entry)
    return out


def relative(path: str, root: Path) -> str:
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


def run_reference(args, root: Path, checkpoint: str) -> dict[str, dict[str, list[dict]]]:
    """Per task and side (``query`` / ``candidate``): the rows the reference's parser and eval collator give."""
    import src.data.eval_dataset.momentseeker_dataset as momentseeker
    import src.data.eval_dataset.msrvtt_dataset as msrvtt
    import src.data.eval_dataset.vidore_dataset as vidore
    from src.arguments import DataArguments, ModelArguments
    from src.data.collator.eval_collator import MultimodalEvalDataCollator
    from src.data.eval_dataset.base_eval_dataset import AutoEvalPairDataset, generate_cand_dataset

    common.quiet_logging()
    redirect_hub(root, [msrvtt, vidore, momentseeker])
    model_args = ModelArguments(model_name=checkpoint, model_backbone=FAMILY)
    data_args = DataArguments(data_basedir=str(root))
    processor = reference_processor(checkpoint, data_args)
    sides = {}
    for name, parser in ((VIDEO_TASK, msrvtt), (VISDOC_TASK, vidore), (MOMENT_TASK, momentseeker)):
        config = task_config(args.upstream, name, root)
        queries, corpus = AutoEvalPairDataset.instantiate(model_args=model_args, data_args=data_args, **config)
        candidates = generate_cand_dataset(queries, corpus)
        sides[name] = {
            "config": config,
            "query": reference_side(MultimodalEvalDataCollator(processor, model_args, data_args, "qry"),
                                    list(queries), root),
            "candidate": reference_side(MultimodalEvalDataCollator(processor, model_args, data_args, "cand"),
                                        list(candidates), root),
            "candidate_names": [str(row["dataset_infos"]["cand_name"]) for row in candidates],
            "relevant": [relevant_of(row["dataset_infos"]) for row in queries],
            # MomentSeeker: TASK_INST_QRY_TEXT is the task's; each query's own goes into its text (compared by ids)
            "instructions": {"query": getattr(parser, "TASK_INST_QRY", getattr(parser, "TASK_INST_QRY_TEXT", None)),
                             "candidate": parser.TASK_INST_TGT},
        }  # fmt: skip
    sides["short_video_probe"] = short_video_probe(msrvtt, task_config(args.upstream, VIDEO_TASK, root), root)
    sides["processor"] = processor
    sides["vendored"] = vendored_image_processor(args.upstream, checkpoint, data_args)
    return sides


def relevant_of(infos: dict) -> dict[str, int]:
    """A query's positives as ``{candidate name: relevance}`` (``label_name`` and, for pages, ``rel_scores``)."""
    labels = infos["label_name"] if isinstance(infos["label_name"], list) else [infos["label_name"]]
    scores = infos.get("rel_scores") or [1] * len(labels)
    return {str(label): int(score) for label, score in zip(labels, scores)}


def short_video_probe(msrvtt, config: dict, root: Path) -> dict:
    """:data:`SHORT_VIDEO` (fewer frames than ``num_frames``) through the parser's ``data_prepare`` alone."""
    from src.utils.vision_utils.vision_utils import process_video_frames

    video_id, caption = SHORT_VIDEO[:2]
    frames = process_video_frames(os.path.join(config["frame_root"], video_id), num_frames=config["num_frames"])
    probe = {"video_id": video_id, "frames": len(frames), "process_video_frames": [relative(f, root) for f in frames]}
    batch = {"video_id": [video_id], "video": [f"{video_id}.mp4"], "caption": [caption]}
    try:
        msrvtt.data_prepare(batch, **config, model_backbone=FAMILY, image_resolution=None)
    except AssertionError as error:
        return probe | {"parser_refuses": True, "error": f"AssertionError {error}".strip()}
    return probe | {"parser_refuses": False}


def video_grids(processor, rows: list[dict], root: Path, **kwargs) -> list[list[int]]:
    """The video grid ``processor`` gives each candidate's frames (VLM2Vec's vendored image processor's video path
    takes ``images=None``; transformers' video processor takes the frames alone)."""
    from PIL import Image

    grids = []
    for row in rows:
        frames = [Image.open(root / p) for p in row["paths"]]
        grids.append([int(x) for x in processor(videos=[frames], return_tensors="np", **kwargs)["video_grid_thw"][0]])
    return grids


# ------------------------------------------------------------------------------------------------
# mm_st's side


def run_mm_st(root: Path, checkpoint: str, recipe: str) -> dict[str, dict[str, Any]]:
    """Per task: mm_st's MMEB-V2 task on ``root``, encoded through ``MMSTEncoder`` as mteb encodes it (mteb's own
    dataloader), each batch's ``model.preprocess`` recorded: the inputs, the instruction and the features."""
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType

    from mm_st import build_model
    from mm_st.evaluation import MMSTEncoder
    from mm_st.evaluation.benchmarks.mmeb_v2 import mmeb_v2_tasks
    from mm_st.evaluation.model import mteb_rows
    from mm_st.inputs import normalize_inputs

    model = build_model(checkpoint, recipe=recipe).eval()
    encoder = MMSTEncoder(model, name="local/tiny-qwen2_vl")
    calls = record_preprocess(model)
    out = {}
    for task in mmeb_v2_tasks(list(TASKS), data=root):
        task.load_data()
        split = task.dataset["default"]["test"]
        entry: dict[str, Any] = {"task": task.metadata.name, "candidate_names": list(task.candidate_names),
                                 "relevant": split["relevant_docs"], "top_ranked": split.get("top_ranked")}  # fmt: skip
        for side, key, prompt_type in (("query", "queries", PromptType.query),
                                       ("candidate", "corpus", PromptType.document)):  # fmt: skip
            calls.clear()
            loader = create_dataloader(split[key], task_metadata=task.metadata, prompt_type=prompt_type, batch_size=8)
            encoder.encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default",
                           prompt_type=prompt_type, batch_size=8)  # fmt: skip
            recorded = {input_key(item): row for call in calls
                        for item, row in zip(call[0], mm_st_rows(*call, model=model, root=root))}  # fmt: skip
            # encode batches inputs sorted by length: back to the task's row order, input by input
            rows = (mteb_rows(batch, encoder.instruction(task.metadata, prompt_type),
                              encoder.row_prompt(task.metadata, prompt_type)) for batch in loader)  # fmt: skip
            given = [item for batch in rows for item in normalize_inputs(batch, load=False)]
            entry[side] = [recorded[input_key(item)] for item in given]
            entry[f"{side}_ids"] = list(split[key]["id"])  # q0.. / c0.. (candidate_names in this order)
            entry[f"{side}_instruction"] = task.metadata.prompt.get(prompt_type.value)  # the task's own
            entry[f"{side}_prompt"] = encoder.instruction(task.metadata, prompt_type)  # what the recipe makes of it
        out[task.entry.name] = entry
    out["num_frames"] = model.num_frames
    out["processor"] = (f"image size {dict(model[0].processor.image_processor.size)}, video size "
                        f"{dict(model[0].processor.video_processor.size)}")
    return out


def input_key(item: Any) -> Any:
    """A hashable key of one mm_st input: its text, the pixels of its images, the resolved paths of its frames."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return tuple((k, media_key(v) if k in ("image", "video") else input_key(v)) for k, v in sorted(item.items()))
    if isinstance(item, (list, tuple)):
        return tuple(input_key(v) for v in item)
    return media_key(item)


def media_key(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(media_key(v) for v in value)
    if isinstance(value, (str, os.PathLike)):
        return str(Path(value).resolve())
    return hashlib.sha1(value.convert("RGB").tobytes()).hexdigest()  # a PIL image


def record_preprocess(model) -> list[tuple]:
    """Wrap ``model.preprocess`` (what sentence-transformers' ``encode`` calls per batch) to record each call."""
    calls: list[tuple] = []
    original = model.preprocess

    def recording(inputs, prompt=None, **kwargs):
        features = original(inputs, prompt=prompt, **kwargs)
        calls.append((list(inputs), prompt, features))
        return features

    model.preprocess = recording
    return calls


def mm_st_rows(inputs: list, prompt: str | None, features: dict, *, model, root: Path) -> list[dict]:
    """Each input of one ``preprocess`` call: its frame paths (mm_st's own sampling of the input), token ids, grid
    and pixel values, the instruction it was given."""
    from mm_st.inputs import video_frames

    rows = feature_rows(features)
    num_frames = model.num_frames
    for index, (item, row) in enumerate(zip(inputs, rows)):
        row["prompt"] = prompt
        video = video_of(item)
        if video is not None:
            row["paths"] = [relative(str(f), root) for f in video_frames(video, index, num_frames, load=False)]
    return rows


def video_of(item: Any) -> Any:
    """The video of one input: a dict's ``"video"``, or a chat message's video part (rows with their own
    instruction reach ``preprocess`` as messages)."""
    if isinstance(item, dict):
        return item.get("video")
    parts = [part for message in item for part in message["content"]
             if isinstance(part, dict) and part.get("type") == "video"] if isinstance(item, list) else []
    return parts[0]["video"] if parts else None


def feature_rows(features: dict) -> list[dict]:
    """Per caller row of mm_st features (modality-grouped or not): unpadded ids, vision grid and pixel values."""
    from mm_st.model import GROUP_ROWS_KEY, GROUPS_KEY

    if GROUPS_KEY not in features:
        return _group_rows(features)
    rows: dict[int, dict] = {}
    for group, caller_rows in zip(features[GROUPS_KEY], features[GROUP_ROWS_KEY]):
        rows.update(zip(caller_rows.tolist(), _group_rows(group)))
    return [rows[i] for i in range(len(rows))]


def _group_rows(features: dict) -> list[dict]:
    ids = common.reference_row_ids(features["input_ids"], features["attention_mask"])
    rows = [{"ids": row_ids} for row_ids in ids]
    for pixels_key, grid_key in (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")):
        if grid_key not in features:
            continue
        grids = features[grid_key].reshape(-1, 3)
        if len(grids) != len(rows):  # a modality group: every row has one image / one video
            raise RuntimeError(f"{len(grids)} {grid_key} rows for {len(rows)} inputs: not one vision input per row")
        starts = [0, *grids.prod(dim=1).cumsum(0).tolist()]
        for k, row in enumerate(rows):
            row["grid"] = [int(x) for x in grids[k]]
            row["pixels"] = features[pixels_key][starts[k] : starts[k + 1]].detach().float().numpy()
    return rows


# ------------------------------------------------------------------------------------------------


def summary(rows: list[dict]) -> list[dict]:
    """The rows without their pixel arrays, for the result file."""
    return [{k: v for k, v in row.items() if k != "pixels"} | {"tokens": len(row["ids"])} for row in rows]


def compare_side(theirs: list[dict], mine: list[dict], tokenizer) -> dict[str, Any]:
    """Row by row: token ids (:func:`common.compare_ids`), frame paths, vision grids, pixel values; and for each row
    whose ids differ, why: ``text`` (the ids without the vision placeholder tokens differ: the text around the
    image / video) and / or ``grid`` (the processor resized the image / frames to another grid: another number of
    placeholder tokens). A differing row with neither is ``unexplained``."""
    out = common.compare_ids([r["ids"] for r in mine], [r["ids"] for r in theirs], tokenizer)
    if "first_mismatch" in out:
        out["first_mismatch"] = {k: common.shorten(v) if isinstance(v, str) else v
                                 for k, v in out["first_mismatch"].items()}  # fmt: skip
    placeholders = {tokenizer.convert_tokens_to_ids(t) for t in VISION_PLACEHOLDERS}
    causes = {"text": 0, "grid": 0, "unexplained": 0}
    for a, b in zip(theirs, mine):
        if a["ids"] == b["ids"]:
            continue
        text = [t for t in a["ids"] if t not in placeholders] != [t for t in b["ids"] if t not in placeholders]
        grid = a.get("grid") != b.get("grid")
        causes["text"] += text
        causes["grid"] += grid
        causes["unexplained"] += not (text or grid)
    out["differing_rows_by_cause"] = causes
    videos = [(a["paths"], b.get("paths")) for a, b in zip(theirs, mine) if len(a["paths"]) > 1]
    if videos:
        out["frames_equal"] = sum(a == b for a, b in videos)
        out["videos"] = len(videos)
    out["grids_equal"] = sum(a.get("grid") == b.get("grid") for a, b in zip(theirs, mine))
    diffs = [float(np.abs(a["pixels"] - b["pixels"]).max()) for a, b in zip(theirs, mine)
             if "pixels" in a and "pixels" in b and a["pixels"].shape == b["pixels"].shape]  # fmt: skip
    out["pixel_rows_compared"] = len(diffs)
    out["pixels_max_abs_diff"] = max(diffs) if diffs else None
    return out


def compare_task(theirs: dict, mine: dict, tokenizer) -> dict[str, Any]:
    """Both sides of one task: queries in row order, candidates matched by VLM2Vec's candidate name."""
    names = dict(zip(mine["candidate_ids"], mine["candidate_names"]))
    by_name = dict(zip(mine["candidate_names"], mine["candidate"]))
    relevant = [{names[c]: int(s) for c, s in mine["relevant"][q].items()} for q in mine["query_ids"]]
    return {
        "query": compare_side(theirs["query"], mine["query"], tokenizer),
        "candidate": compare_side(theirs["candidate"], [by_name.get(n, {"ids": []}) for n in theirs["candidate_names"]],
                                  tokenizer),
        "candidate_names_equal": theirs["candidate_names"] == mine["candidate_names"],
        "relevant_equal": theirs["relevant"] == relevant,
        "instructions": {side: {"reference": theirs["instructions"][side], "mm_st": mine[f"{side}_instruction"]}
                         for side in ("query", "candidate")},
        "mm_st_prompts": {side: mine[f"{side}_prompt"] for side in ("query", "candidate")},
        "example_mm_st_text": {side: common.shorten(tokenizer.decode(mine[side][0]["ids"]))
                               for side in ("query", "candidate")},
    }  # fmt: skip


def mm_st_folder_frames(root: Path, video_id: str, num_frames: int) -> list[str]:
    """The frames mm_st's model samples from a video's frame folder given as the input (``{"video": folder}``)."""
    from mm_st.inputs import video_frames

    folder = root / "video-tasks" / "frames" / "video_ret" / VIDEO_TASK / video_id
    return [relative(str(f), root) for f in video_frames(str(folder), 0, num_frames, load=False)]


def main() -> None:
    args = parse_args()
    common.setup(args)
    finder = common.import_upstream(args.upstream, "vlm2vec")
    from mm_st.testing import tiny_model

    root = Path(tempfile.mkdtemp(prefix="mm_st-reference-mmeb-v2-"))
    write_layout(root)
    checkpoint = tiny_model(FAMILY)
    reference = run_reference(args, root, checkpoint)
    mine = run_mm_st(root, checkpoint, args.recipe)
    tokenizer = reference["processor"].tokenizer
    tasks: dict[str, Any] = {}
    for name in TASKS:
        theirs = reference[name]
        entry = {"config": {k: relative(v, root) if k in DATA_DIR_KEYS and v else v for k, v in theirs["config"].items()},
                 "mm_st_task": mine[name]["task"], **compare_task(theirs, mine[name], tokenizer),
                 "example_reference_text": {side: common.shorten(tokenizer.decode(theirs[side][0]["ids"]))
                                            for side in ("query", "candidate")},
                 "reference": {side: summary(theirs[side]) for side in ("query", "candidate")},
                 "mm_st": {side: summary(mine[name][side]) for side in ("query", "candidate")}}  # fmt: skip
        if name == VIDEO_TASK:
            grids = video_grids(reference["vendored"], theirs["candidate"], root, images=None)
            entry["vendored_video_grids"] = grids
            entry["vendored_video_grid_equal"] = grids == [row["grid"] for row in theirs["candidate"]]
            # what a checkpoint without video sizes of its own gets: the class defaults (not a check)
            default = type(reference["processor"].video_processor)()
            entry["transformers_default_video_size"] = dict(default.size)
            entry["transformers_default_video_grids"] = video_grids(default, theirs["candidate"], root)
            entry["short_video"] = reference["short_video_probe"] | {
                "mm_st_frames": mm_st_folder_frames(root, SHORT_VIDEO[0], mine["num_frames"])}
            # the model's own sampling of each frame folder (the task hands it frames it sampled itself)
            folders = [mm_st_folder_frames(root, video[0], mine["num_frames"]) for video in VIDEOS]
            by_name = dict(zip(theirs["candidate_names"], theirs["candidate"]))
            entry["model_folder_sampling_equal"] = folders == [by_name[video[0]]["paths"] for video in VIDEOS]
        tasks[name] = entry
        print(f"{name}: " + "; ".join(
            f"{side} ids {entry[side]['ids_equal']}/{entry[side]['rows']}"
            + (f", frames {entry[side]['frames_equal']}/{entry[side]['videos']}" if "videos" in entry[side] else "")
            + f", max |pixel diff| {entry[side]['pixels_max_abs_diff']}" for side in ("query", "candidate")))
    common.write_result(args, "mmeb_v2_inputs", {
        "reference": "TIGER-AI-Lab/VLM2Vec", "commit": common.upstream_commit(args.upstream), "family": FAMILY,
        "recipe": args.recipe, "num_frames_mm_st": mine["num_frames"],
        "mm_st_processor": mine["processor"],
        "reference_processor": f"{type(reference['processor']).__name__}, image size "
                               f"{dict(reference['processor'].image_processor.size)}, video size "
                               f"{dict(reference['processor'].video_processor.size)}",
        "stubbed_modules_imported": sorted(finder.stubbed), "machine": common.machine(args), "tasks": tasks,
    })  # fmt: skip


if __name__ == "__main__":
    main()
