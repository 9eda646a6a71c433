"""VLM2Vec-V2's recipe (arXiv 2507.04590, TIGER-AI-Lab/VLM2Vec): image, video and visual-document data in one run,
each sub-batch of ``interleave_batch_size`` rows drawn from one dataset (chosen with probability proportional to its
weight), in-batch negatives, GradCache, DoRA on Qwen2-VL.

Data: V2's own dataset-config YAML (``--data experiments/public/train/train_alltasks.yaml --data-basedir <root>``,
read by :mod:`mm_st.data.vlm2vec_v2_train`). The embedded default writes the same layout from generated media:
the bundled emoji as MMEB-train rows (image), short Pillow videos of moving shapes as LLaVA-Hound caption / retrieval
/ QA rows (video) and rendered document pages as colpali_train_set / VisRAG rows (visdoc), and holds out a quarter
of the items (never trained on), scored before and after training (Hit@1 per dataset, mean per modality group).

Example:
    >>> from mm_st.training.vlm2vec_v2 import VLM2VecV2Config
    >>> c = VLM2VecV2Config()
    >>> c.interleave_batch_size, c.global_batch_size, c.mini_batch_size, c.learning_rate
    (64, 1024, 8, 5e-05)
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.base.sampler import MultiDatasetDefaultBatchSampler

from mm_st.recipes.vlm2vec_v2 import ARGUMENTS, FACTS, PINNED, SCRIPT
from mm_st.training.config import AT_LEAST_1, EMBEDDED_COMMON, VISION_TOWER_HELP, config_field as _f
from mm_st.training.data import Sources, cap, check_not_empty, embedded_dir
from mm_st.training.distributed import is_main_process
from mm_st.training.stage import StageConfig

ALLTASKS = f"{PINNED} experiments/public/train/train_alltasks.yaml"
MIXED = f"{PINNED} src/data/loader/mixed_dataset.py"
HF_DATASETS = f"{PINNED} src/data/dataset/hf_datasets.py"
V2_TARGETS = "qkv_proj,o_proj,gate_up_proj,down_proj,k_proj,q_proj,out_proj,v_proj,gate_proj,up_proj"
GROUPS = ("image", "video", "visdoc")


# -- one dataset per sub-batch ---------------------------------------------------------------------------------------


class SubBatchSampler(MultiDatasetDefaultBatchSampler):
    """sentence-transformers' multi-dataset batch sampler drawing VLM2Vec-V2's interleaved sub-batches.

    The rows of all processes form one stream of blocks; each block holds ``sub_batch_size`` rows per process from
    one dataset, chosen with probability ``weight / sum(weights)`` (``hf_datasets.py:337-345``,
    ``mixed_dataset.py:9-11, 24-27``); process ``r`` takes every ``world_size``-th row of a block (``split_dataset_by_node``
    by examples), and its batches are consecutive runs of its rows, so a batch of 2 x ``sub_batch_size`` holds two
    sub-batches. A dataset that runs out starts again, reshuffled (V2: ``interleave_stopping_strategy`` all_exhausted,
    ``arguments.py:62``; V2 reads each dataset in file order, mm_st shuffles each pass as sentence-transformers'
    samplers do). Batches are yielded in the order accelerate deals them to processes (batch ``i`` to process
    ``i % world_size``); one pass is the rows of all datasets over the global batch.
    """

    def __init__(self, dataset, batch_samplers, generator=None, seed: int = 0, weights: tuple[float, ...] = (),
                 sub_batch_size: int = 64, world_size: int = 1) -> None:
        super().__init__(dataset, batch_samplers, generator, seed)
        if len(weights) != len(dataset.datasets):
            raise ValueError(f"SubBatchSampler: {len(weights)} weights for {len(dataset.datasets)} datasets.")
        self.probabilities = np.asarray(weights, dtype=float) / float(sum(weights))
        self.sub_batch_size, self.world_size = sub_batch_size, world_size

    def __len__(self) -> int:
        rows = sum(len(d) for d in self.dataset.datasets)
        return rows // (self.batch_size * self.world_size) * self.world_size

    def _rows(self, rng: np.random.Generator, index: int, offset: int) -> itertools.chain:
        """Dataset ``index``'s rows (as ConcatDataset indices), reshuffled on each pass, without end."""
        size = len(self.dataset.datasets[index])
        return itertools.chain.from_iterable((offset + i for i in rng.permutation(size)) for _ in itertools.count())

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        sizes = [len(d) for d in self.dataset.datasets]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        streams = [self._rows(rng, i, offsets[i]) for i in range(len(sizes))]
        per_process: list[list[int]] = [[] for _ in range(self.world_size)]
        for _ in range(len(self) // self.world_size):
            while len(per_process[0]) < self.batch_size:
                source = int(rng.choice(len(sizes), p=self.probabilities))
                block = [int(i) for i in itertools.islice(streams[source], self.sub_batch_size * self.world_size)]
                for rank in range(self.world_size):
                    per_process[rank] += block[rank::self.world_size]
            for rank in range(self.world_size):  # batch i goes to process i % world_size (accelerate's sharding)
                yield per_process[rank][: self.batch_size]
                del per_process[rank][: self.batch_size]


# -- held-out evaluation ----------------------------------------------------------------------------------------------


class HeldOutHitEvaluator(BaseEvaluator):
    """Hit@1 on held-out rows of each dataset (query -> its target among the dataset's held-out targets), mean per
    modality group (MMEB-V2's image / video / visdoc parts) and over the groups, as a trainer evaluator."""

    curve_metric = "eval_hit1_mean"

    def __init__(self, config_path: str, basedir: str | None, groups: list[str], on_missing: str, seed: int,
                 name: str) -> None:
        super().__init__()
        self.primary_metric = "hit1_mean"
        self.config_path, self.basedir, self.groups = config_path, basedir, list(groups)
        self.on_missing, self.seed, self.name = on_missing, seed, name
        self._datasets: dict[str, tuple[str, datasets.Dataset]] | None = None
        self.last_scores: dict[str, float] = {}

    def datasets(self) -> dict[str, tuple[str, datasets.Dataset]]:
        """The held-out datasets by name, with their group (read once)."""
        if self._datasets is None:
            from mm_st.data.vlm2vec_v2_train import load_v2_dataset, read_dataset_config

            entries = [e for e in read_dataset_config(self.config_path, self.basedir) if e.group in self.groups]
            self._datasets = {e.name: (e.group, load_v2_dataset(e, self.on_missing, self.seed)) for e in entries}
        return self._datasets

    def check(self) -> None:
        """Read the held-out data as the evaluation will, train nothing."""
        self.datasets()

    @staticmethod
    def hit_at_1(model: Any, ds: datasets.Dataset) -> float:
        """The share of queries whose own target scores highest (a tie with an identical target counts)."""
        queries = model.encode(list(ds["anchor"]), convert_to_tensor=True, normalize_embeddings=True)
        targets = model.encode(list(ds["positive"]), convert_to_tensor=True, normalize_embeddings=True)
        scores = queries @ targets.T
        return float((scores.diagonal() >= scores.max(dim=1).values).float().mean())

    def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        if not is_main_process():
            return {}
        self.last_scores = {name: self.hit_at_1(model, ds) for name, (_, ds) in self.datasets().items()}
        out = {}
        for group in self.groups:
            values = [self.last_scores[n] for n, (g, _) in self.datasets().items() if g == group]
            if values:
                out[f"hit1_{group}"] = sum(values) / len(values)
        out["hit1_mean"] = sum(out.values()) / len(out)
        return out

    def get_config_dict(self) -> dict[str, Any]:
        return {"data": self.config_path, "groups": self.groups}

    def cache_key(self) -> dict[str, Any]:
        return {"data": self.config_path, "basedir": self.basedir, "groups": self.groups}

    def table(self, before: dict[str, float], after: dict[str, float]) -> list[str]:
        """Before / after / chance per modality group (Hit@1; chance = 1 / held-out targets, averaged)."""
        lines = [f"\nHeld-out Hit@1 (each query against its dataset's held-out targets; {self.config_path})",
                 f"{'group':<12}{'datasets':>9}{'before':>10}{'after':>10}{'chance':>10}"]
        for group in [*self.groups, "mean"]:
            key = f"hit1_{group}"
            if key not in after and key not in before:
                continue
            members = [ds for g, ds in self.datasets().values() if g == group or group == "mean"]
            chance = sum(1 / len(ds) for ds in members) / len(members)
            lines.append(f"{group:<12}{len(members):>9}{before.get(key, float('nan')):>10.4f}"
                         f"{after.get(key, float('nan')):>10.4f}{chance:>10.4f}")
        return lines


# -- the embedded default's data -------------------------------------------------------------------------------------

HELD_OUT_EVERY = 4  # every 4th page (and the emoji test split; a quarter of the videos) is held out
EMOJI_ROWS = 144  # emoji per MMEB-style dataset in the embedded default (the generated sets have 36 training items)
EMBEDDED_MMEB = ("ImageNet_1K", "MSCOCO_t2i", "MSCOCO_i2t")


def _entries(mmeb: str, videos: str, pages: str, part: str, num_frames: int) -> dict[str, dict[str, Any]]:
    """V2's dataset config for the generated layout: train_alltasks.yaml's parsers, modes and weights."""
    entries: dict[str, dict[str, Any]] = {
        name: {"dataset_parser": "mmeb", "dataset_name": mmeb, "subset_name": name, "dataset_split": part,
               "image_dir": f"{mmeb}/images", "weight": 1} for name in EMBEDDED_MMEB}
    entries["colpali_train_set"] = {"dataset_parser": "vidore", "dataset_path": f"{pages}/{part}-colpali.parquet",
                                    "weight": 10}
    entries["visrag-indomain"] = {"dataset_parser": "visrag", "dataset_path": f"{pages}/{part}-visrag.parquet",
                                  "weight": 12}
    video = {"dataset_path": f"{videos}/{part}-caption.jsonl", "video_frame_basedir": f"{videos}/frames",
             "weight": 5, "num_frames": num_frames}
    entries["video_caption_300k"] = {"dataset_parser": "llavahound_caption", **video, "data_mode": "caption_retrieval"}
    entries["video_caption_300k-video"] = {"dataset_parser": "llavahound_caption", **video,
                                           "data_mode": "video_retrieval"}
    entries["video_qa_240k"] = {"dataset_parser": "llavahound_qa", **video,
                                "dataset_path": f"{videos}/{part}-qa.jsonl"}
    return entries


def write_embedded(root: Path, num_frames: int, limit: int | None, seed: int) -> tuple[Path, Path]:
    """The generated layout under ``root`` (written once): ``train.yaml`` and ``held-out.yaml`` in V2's format."""
    import yaml

    from mm_st.data import generated_media as media
    from mm_st.training import embedded

    train_yaml, held_yaml = root / "train.yaml", root / "held-out.yaml"
    if train_yaml.is_file() and held_yaml.is_file():
        return train_yaml, held_yaml
    videos, pages = media.video_items(), media.page_items()
    media.write_videos(root / "videos" / "frames", videos, num_frames=num_frames)
    for part, held in (("train", False), ("heldout", True)):
        chosen = [v for v in videos if media.held_out_video(v) == held][:limit]
        media.write_llava_hound(root / "videos" / f"{part}-caption.jsonl", chosen, "caption")
        media.write_llava_hound(root / "videos" / f"{part}-qa.jsonl", chosen, "qa")
        media.write_pages(root / "pages", [p for i, p in enumerate(pages) if (i % HELD_OUT_EVERY == 0) == held][:limit],
                          part)
    embedded.write_mmeb_train(root / "mmeb", configs=EMBEDDED_MMEB, limit=limit or EMOJI_ROWS, split="train", seed=seed)
    held_count = len(pages) // HELD_OUT_EVERY
    embedded.write_mmeb_train(root / "mmeb", configs=EMBEDDED_MMEB, limit=min(limit or held_count, held_count), split="heldout",
                              seed=seed, emoji_split="test")
    held_yaml.write_text(yaml.safe_dump(_entries("mmeb", "videos", "pages", "heldout", num_frames), sort_keys=False))
    train_yaml.write_text(yaml.safe_dump(_entries("mmeb", "videos", "pages", "train", num_frames), sort_keys=False))
    return train_yaml, held_yaml


# -- the config --------------------------------------------------------------------------------------------------------


@dataclass
class VLM2VecV2Config(StageConfig):
    """VLM2Vec-V2: image + video + visual-document datasets, one dataset per sub-batch, tau 0.02, DoRA, GradCache."""

    recipe: ClassVar[str] = "vlm2vec_v2"
    data_fields: ClassVar[tuple[str, ...]] = ("data",)
    embedded_overrides: ClassVar[dict[str, Any]] = {
        **EMBEDDED_COMMON, "tiny_family": "qwen2_vl", "global_batch_size": 16, "interleave_batch_size": 8,
        "max_steps": 150, "num_frames": 4,
    }

    model: str | None = _f(None, SCRIPT + ":28 --model_name Qwen/Qwen2-VL-2B-Instruct")
    data: str | None = _f(None, ALLTASKS + " (--dataset_config, " + SCRIPT + ":28)",
                          "VLM2Vec-V2 dataset-config YAML (its train_alltasks.yaml layout; default: embedded)")
    data_basedir: str | None = _f(None, f"{PINNED} train.py:89-93 (--data_basedir)",
                                  "folder the YAML's relative paths are under (default: the YAML's folder)")
    dataset_groups: list[str] = _f(list(GROUPS), ALLTASKS + ": image (mmeb), visdoc (vidore, visrag), video "
                                   "(llavahound)", "modality groups of the YAML to train on: image, video, visdoc")
    interleave_batch_size: int = _f(FACTS["interleave_batch_size"], SCRIPT + ":28 --interleave_batch_size 64; "
                                    + MIXED + ":20-27, " + HF_DATASETS + ":206-214",
                                    "rows per process drawn from one dataset in a row (a sub-batch)", AT_LEAST_1)
    num_frames: int = _f(FACTS["num_frames"], ALLTASKS + ":179,188,197 num_frames: 8",
                         "frames per video the saved model samples (each YAML entry's num_frames samples its rows)",
                         AT_LEAST_1)
    batch_mixing: str = _f("per_dataset", HF_DATASETS + ":206-214: each sub-batch from one dataset (SubBatchSampler)")
    num_negatives: int = _f(0, f"{PINNED} src/data/collator/train_collator.py:196-213: query and positive only")
    temperature: float = _f(FACTS["temperature"], SCRIPT + ":28 --temperature 0.02 --normalize True")
    adapter: str = _f("dora", f"{PINNED} src/model/model.py:188-196 LoraConfig(use_dora=True)")
    lora_r: int = _f(FACTS["lora_r"], SCRIPT + ":28 --lora_r 16")
    lora_alpha: int = _f(FACTS["lora_alpha"], ARGUMENTS + ":18 lora_alpha=64")
    lora_dropout: float = _f(FACTS["lora_dropout"], ARGUMENTS + ":19 lora_dropout=0.1")
    lora_target_modules: str = _f(V2_TARGETS, ARGUMENTS + ":20 (suffixes)")
    lora_init: str = _f("gaussian", f"{PINNED} src/model/model.py:193 init_lora_weights='gaussian'")
    vision_tower: str = _f("frozen", ARGUMENTS + ":20: its LoRA suffixes name none of Qwen2-VL's vision modules (qkv, "
                           "proj, fc1, fc2), so the tower stays as loaded", VISION_TOWER_HELP)
    learning_rate: float = _f(FACTS["learning_rate"], SCRIPT + ":28 --learning_rate 5e-5 --lr_scheduler_type linear")
    max_steps: int = _f(FACTS["steps"], SCRIPT + ":28 --max_steps 5000")
    warmup: float = _f(FACTS["warmup"], SCRIPT + ":28 --warmup_steps 100")
    global_batch_size: int = _f(FACTS["batch_size"], SCRIPT + ":17,28: --per_device_train_batch_size 128 x 8 GPUs")
    mini_batch_size: int = _f(FACTS["gc_chunk_size"], SCRIPT + ":28 --grad_cache True --gc_q_chunk_size 8 "
                              "--gc_p_chunk_size 8")
    max_length: int | None = _f(None, ARGUMENTS + ":41 max_len=None (the script sets none)")

    def validate(self) -> None:
        super().validate()
        unknown = [g for g in self.dataset_groups if g not in GROUPS]
        if unknown or not self.dataset_groups:
            raise ValueError(f"{self.recipe} config: dataset_groups {self.dataset_groups!r} must be some of "
                             f"{', '.join(GROUPS)}.")

    def sources(self, output_dir: Path, write: bool = True) -> Sources:
        if not self.embedded:
            return Sources(self.data, None, self.eval_data)
        root = embedded_dir(self, output_dir / "data", f"vlm2vec-v2-frames{self.num_frames}")
        train, held = (write_embedded(root, self.num_frames, self.max_rows_per_dataset, self.seed) if write
                       else (root / "train.yaml", root / "held-out.yaml"))
        return Sources(str(train), None, self.eval_data or str(held))

    def check_sources(self, sources: Sources) -> None:
        for what, value in (("data", sources.data), ("eval_data", sources.eval_data)):
            if value is not None and not Path(value).is_file():
                raise FileNotFoundError(f"{self.recipe} config: {what} {value!r} is not a file (a VLM2Vec-V2 "
                                        "dataset-config YAML).")
        if sources.data is None:
            raise ValueError(f"{self.recipe} config: --model is set but --data is not; give the dataset-config YAML too.")

    def entries(self, path: str) -> list[Any]:
        """The YAML's datasets of the chosen groups."""
        from mm_st.data.vlm2vec_v2_train import read_dataset_config

        entries = [e for e in read_dataset_config(path, self.data_basedir) if e.group in self.dataset_groups]
        if not entries:
            raise ValueError(f"{self.recipe} config: {path!r} has no dataset of the groups {self.dataset_groups}.")
        return entries

    def load_datasets(self, sources: Sources) -> dict[str, datasets.Dataset]:
        from mm_st.data.vlm2vec_v2_train import load_v2_dataset

        named = {e.name: cap(load_v2_dataset(e, self.on_missing, self.seed), self.max_rows_per_dataset)
                 for e in self.entries(sources.data)}
        check_not_empty(named, self.recipe)
        return named

    def source_lines(self, sources: Sources) -> list[str]:
        entries = self.entries(sources.data)
        total = sum(e.weight for e in entries)
        shares = ", ".join(f"{e.name} ({e.group}) {e.weight / total:.1%}" for e in entries)
        return [f"reads: {sources.data} (VLM2Vec-V2 dataset config; groups {', '.join(self.dataset_groups)})",
                f"sub-batches of {self.interleave_batch_size} rows per process, each from one dataset drawn by "
                f"weight: {shares}"]

    def batch_description(self) -> str:
        return f"of sub-batches of {self.interleave_batch_size} rows per process, each from one dataset"

    def batch_sampler(self, plan: Any) -> Any:
        """:class:`SubBatchSampler` over the loaded datasets (in the YAML's order), drawn by the YAML's weights."""
        weights = tuple(e.weight for e in self.entries(plan.sources.data))
        return functools.partial(SubBatchSampler, weights=weights, sub_batch_size=self.interleave_batch_size,
                                 world_size=plan.world_size)

    def model_options(self) -> dict[str, Any]:
        """The saved model samples videos to ``num_frames`` frames (the YAML's entries sample their rows themselves)."""
        return {"num_frames": self.num_frames}

    def evaluator(self, sources: Sources, results_dir: Path) -> Any:
        if not sources.eval_data:
            return None
        return HeldOutHitEvaluator(sources.eval_data, self.data_basedir, self.dataset_groups, self.on_missing, self.seed, f"mm_st-{self.recipe}")
