"""MMEB-V2 inputs: VLM2Vec's own eval parsers and eval collator against mm_st's MMEB-V2 tasks, same local files.

For one video task (MSR-VTT, parser ``msrvtt``) and one visual-document task (ViDoRe_arxivqa, parser ``vidore``),
both sides read the same tiny local layout (:func:`write_layout`) and the script compares, row by row, on the
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

Usage::

    python benchmarks/reference/mmeb_v2.py --upstream path/to/VLM2Vec
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import common

FAMILY = "qwen2_vl"
VIDEO_TASK, VISDOC_TASK = "MSR-VTT", "ViDoRe_arxivqa"
TASK_CONFIGS = {VIDEO_TASK: "experiments/public/eval/video.yaml", VISDOC_TASK: "experiments/public/eval/visdoc.yaml"}
HUB = {VIDEO_TASK: ("VLM2Vec/MSR-VTT", "test_1k", "test"),
       VISDOC_TASK: ("vidore/arxivqa_test_subsampled_beir", None, "test")}  # fmt: skip
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
QUERIES = [(1, "Which model has the higher accuracy?"), (2, "How far does the training loss fall?"),
           (3, "What learning rate was used?")]  # fmt: skip
QRELS = [(1, 101, 1), (2, 102, 1), (2, 103, 1), (3, 104, 1), (3, 105, 0)]  # a score-0 row: not a positive


def parse_args():
    return common.base_parser(__doc__).parse_args()


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
    import src.data.eval_dataset.msrvtt_dataset as msrvtt
    import src.data.eval_dataset.vidore_dataset as vidore
    from src.arguments import DataArguments, ModelArguments
    from src.data.collator.eval_collator import MultimodalEvalDataCollator
    from src.data.eval_dataset.base_eval_dataset import AutoEvalPairDataset, generate_cand_dataset

    common.quiet_logging()
    redirect_hub(root, [msrvtt, vidore])
    model_args = ModelArguments(model_name=checkpoint, model_backbone=FAMILY)
    data_args = DataArguments(data_basedir=str(root))
    processor = reference_processor(checkpoint, data_args)
    sides = {}
    for name in (VIDEO_TASK, VISDOC_TASK):
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
            "query_labels": [row["dataset_infos"]["label_name"] for row in queries],
        }  # fmt: skip
    sides["short_video_probe"] = short_video_probe(msrvtt, task_config(args.upstream, VIDEO_TASK, root), root)
    sides["processor"] = processor
    sides["vendored"] = vendored_image_processor(args.upstream, checkpoint, data_args)
    return sides


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


def vendored_video_grids(vendored, rows: list[dict], root: Path) -> list[list[int]]:
    """The video grid VLM2Vec's vendored image processor gives each candidate's frames."""
    from PIL import Image

    grids = []
    for row in rows:
        frames = [Image.open(root / p) for p in row["paths"]]
        grids.append([int(x) for x in vendored(images=None, videos=[frames], return_tensors="np")["video_grid_thw"][0]])
    return grids


# ------------------------------------------------------------------------------------------------


def summary(rows: list[dict]) -> list[dict]:
    """The rows without their pixel arrays, for the result file."""
    return [{k: v for k, v in row.items() if k != "pixels"} | {"tokens": len(row["ids"])} for row in rows]


def main() -> None:
    args = parse_args()
    common.setup(args)
    finder = common.import_upstream(args.upstream, "vlm2vec")
    from mm_st.testing import tiny_model

    root = Path(tempfile.mkdtemp(prefix="mm_st-reference-mmeb-v2-"))
    write_layout(root)
    checkpoint = tiny_model(FAMILY)
    reference = run_reference(args, root, checkpoint)
    tokenizer = reference["processor"].tokenizer
    tasks: dict[str, Any] = {}
    for name in (VIDEO_TASK, VISDOC_TASK):
        side = reference[name]
        entry = {"config": {k: v if k not in DATA_DIR_KEYS else relative(v, root) for k, v in side["config"].items()},
                 "candidate_names": side["candidate_names"], "query_labels": side["query_labels"],
                 "reference": {"query": summary(side["query"]), "candidate": summary(side["candidate"])}}  # fmt: skip
        entry["example_reference_text"] = common.shorten(tokenizer.decode(side["candidate"][0]["ids"]))
        if name == VIDEO_TASK:
            grids = vendored_video_grids(reference["vendored"], side["candidate"], root)
            entry["vendored_video_grids"] = grids
            entry["vendored_video_grid_equal"] = grids == [row["grid"] for row in side["candidate"]]
        tasks[name] = entry
        print(f"{name}: {len(side['query'])} queries, {len(side['candidate'])} candidates; "
              f"candidate 0: {entry['example_reference_text']!r}")
    tasks[VIDEO_TASK]["short_video_probe"] = reference["short_video_probe"]
    common.write_result(args, "mmeb_v2_inputs", {
        "reference": "TIGER-AI-Lab/VLM2Vec", "commit": common.upstream_commit(args.upstream), "family": FAMILY,
        "reference_processor": f"{type(reference['processor']).__name__}, image size "
                               f"{dict(reference['processor'].image_processor.size)}, video size "
                               f"{dict(reference['processor'].video_processor.size)}",
        "stubbed_modules_imported": sorted(finder.stubbed), "machine": common.machine(args), "tasks": tasks,
    })  # fmt: skip


if __name__ == "__main__":
    main()
