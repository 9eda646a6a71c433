"""mmE5's recipe (arXiv 2502.08468, haon-chen/mmE5): MMEB-train with negatives mined at rank 70, plus
mmE5-synthetic; each negative scored against its own query; DoRA.

Mining on small pools: a dataset whose pool (its distinct positives) has no candidate at rank
``mine_rank`` (HatefulMemes has 2 labels, VOC2007 20, N24News 24; any dataset capped at <= 70 rows) takes
each query's lowest-ranked non-positive candidate instead (``mine_hard_negatives(fallback="nearest")``);
mmE5's released ``intfloat/mmE5-MMEB-hardneg`` has negatives for these sets, so they are kept, and the
plan and the log say how many rows used the fallback. A dataset whose pool holds a single distinct
positive has no negative at all: an error naming it, before any model is loaded.

Example:
    >>> from mm_st.training import MME5Config
    >>> MME5Config().mine_rank, MME5Config().hard_negative_scope
    (70, 'own')
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets

from mm_st.data.converters import MME5_SYNTHETIC_CONFIGS, MME5_SYNTHETIC_REPO, MMEB_TRAIN_CONFIGS, MMEB_TRAIN_REPO
from mm_st.recipes.mme5 import FACTS
from mm_st.training import console, embedded
from mm_st.training.config import EMBEDDED_COMMON, NON_NEGATIVE, VISION_TOWER_HELP, RecipeConfig, config_field as _f
from mm_st.training.data import (MMEBTrainData, Sources, cap, check_configs_present, check_not_empty, embedded_dir,
                                 pad_negatives)
from mm_st.training.vlm2vec import V1_TARGETS

logger = logging.getLogger(__name__)

MME5_SRC = "mmE5 (arXiv 2502.08468) and haon-chen/mmE5 scripts/train"
_MME5 = FACTS  # the paper values and their source: declared by the recipe (mm_st.recipes.mme5)
SYNTHETIC = "synthetic/"  # prefix of the synthetic datasets' names


@dataclass
class MME5Config(MMEBTrainData, RecipeConfig):
    """mmE5: MMEB-train with negatives mined at rank 70 plus mmE5-synthetic; own-query negatives; DoRA."""

    recipe: ClassVar[str] = "mme5"
    embedded_overrides: ClassVar[dict[str, Any]] = {
        **EMBEDDED_COMMON, "tiny_family": "mllama", "global_batch_size": 16, "max_rows_per_dataset": 400,
        "data_configs": ["ImageNet_1K", "MSCOCO_t2i"], "synthetic_configs": ["Classification", "Retrieval"],
    }
    data_fields: ClassVar[tuple[str, ...]] = ("data", "image_root", "synthetic_data", "synthetic_image_root")

    model: str | None = _f(None, MME5_SRC + ": meta-llama/Llama-3.2-11B-Vision")
    data: str | None = _f(None, MME5_SRC + ": " + MMEB_TRAIN_REPO)
    data_configs: list[str] = _f(list(MMEB_TRAIN_CONFIGS), MME5_SRC + ": the 20 MMEB-train datasets")
    synthetic: bool = _f(True, MME5_SRC + ": MMEB-train + mmE5-synthetic",
                         "train on mmE5-synthetic too (--no-synthetic: MMEB-train only)")
    synthetic_data: str | None = _f(None, MME5_SRC + ": " + MME5_SYNTHETIC_REPO, "mmE5-synthetic source (default: embedded)")
    synthetic_configs: list[str] = _f(list(MME5_SYNTHETIC_CONFIGS), MME5_SRC)
    synthetic_image_root: str | None = _f(None, MME5_SRC + ": laion_image_dir", "directory the synthetic data's image paths are relative to")
    synthetic_only: bool = _f(False, MME5_SRC + ": the zero-shot setting trains on synthetic data only")
    mine_rank: int = _f(70, "mmE5 paper / issue #3: the candidate at rank 70",
                        "rank of the mined MMEB-train negative (0 = read the data's own negatives, e.g. "
                        "intfloat/mmE5-MMEB-hardneg); smaller pools take their lowest-ranked candidate", NON_NEGATIVE)
    mining_model: str | None = _f(None, "mmE5 mined with VLM2Vec-LoRA (remote code; released as intfloat/mmE5-MMEB-hardneg); "
                                  "default: the base model", "model that mines MMEB-train negatives")
    max_rows_per_dataset: int | None = _f(50000, MME5_SRC + ": --num_sample_per_subset 50000")
    num_negatives: int = _f(3, MME5_SRC + ": negative_ratio 3, padded by repeating the last")
    hard_negative_scope: str = _f("own", MME5_SRC + ": each negative against its own query")
    temperature: float = _f(_MME5["temperature"], MME5_SRC)
    adapter: str = _f("dora", MME5_SRC + ": DoRA (src/model.py use_dora=True)")
    lora_r: int = _f(_MME5["dora_r"], MME5_SRC + ": --lora_r 8")
    lora_alpha: int = _f(64, "haon-chen/mmE5 src/arguments.py lora_alpha=64")
    lora_dropout: float = _f(0.1, "haon-chen/mmE5 src/arguments.py lora_dropout=0.1")
    lora_target_modules: str = _f(V1_TARGETS, "haon-chen/mmE5 src/arguments.py (suffixes, vision tower included)")
    lora_init: str = _f("gaussian", "haon-chen/mmE5 src/model.py init_lora_weights='gaussian'")
    vision_tower: str = _f("lora", "haon-chen/mmE5 src/arguments.py: VLM2Vec v1's LoRA suffixes also name the Mllama "
                           "vision model's q_proj/k_proj/v_proj/o_proj, so the tower is adapted, not trained",
                           VISION_TOWER_HELP)
    warmup: float = _f(0.05, MME5_SRC + ": --warmup_ratio 0.05")
    max_grad_norm: float = _f(5.0, MME5_SRC + ": --max_grad_norm 5.0")
    learning_rate: float = _f(_MME5["learning_rate"], MME5_SRC)
    num_train_epochs: float = _f(float(_MME5["epochs"]), MME5_SRC)
    global_batch_size: int = _f(128, MME5_SRC + ": 2 per GPU x 8 accumulation steps x 8 GPUs (GPU count not stated in "
                                 "train.sh: assumed 8); accumulation adds no in-batch negatives, mm_st uses GradCache")
    mini_batch_size: int = _f(2, MME5_SRC + ": 2 per GPU")
    max_length: int | None = _f(_MME5["max_length"], MME5_SRC)

    def validate(self) -> None:
        super().validate()
        if self.synthetic_only and not self.synthetic:
            raise ValueError("mme5 config: --synthetic-only and --no-synthetic leave no training data.")

    @property
    def uses_mmeb(self) -> bool:
        return not self.synthetic_only

    @property
    def mines(self) -> bool:
        return self.uses_mmeb and self.mine_rank > 0

    # -- data -------------------------------------------------------------------------------------

    def sources(self, output_dir: Path, write: bool = True) -> Sources:
        if self.embedded:
            sources = self.mmeb_sources(output_dir, write, with_mmeb=self.uses_mmeb)
            synthetic = embedded_dir(self, output_dir / "data", "mme5-synthetic")
            if write and self.synthetic:
                embedded.write_mme5_synthetic(synthetic, configs=self.synthetic_configs,
                                              limit=self.max_rows_per_dataset, seed=self.seed)
            if self.synthetic:
                sources.extra = {"synthetic_data": str(synthetic), "synthetic_image_root": str(synthetic / "images")}
            return sources
        sources = Sources(self.data if self.uses_mmeb else None, self.image_root if self.uses_mmeb else None, self.eval_data)
        if self.synthetic:
            sources.extra = {"synthetic_data": self.synthetic_data or MME5_SYNTHETIC_REPO,
                             "synthetic_image_root": self.synthetic_image_root}
        return sources

    def check_sources(self, sources: Sources) -> None:
        super().check_sources(sources)
        if self.uses_mmeb:
            self.check_mmeb_sources(sources)
        if self.synthetic:
            check_configs_present(self.recipe, sources.extra["synthetic_data"], self.synthetic_configs)

    def load_datasets(self, sources: Sources) -> dict[str, datasets.Dataset]:
        from mm_st.data import load_mme5_synthetic

        named: dict[str, datasets.Dataset] = {}
        if self.uses_mmeb:  # mmE5 mines MMEB-train's negative; with mine_rank 0 the data's own are read
            named.update(self.load_mmeb(sources, 0 if self.mines else self.num_negatives))
        if self.synthetic:
            synthetic = load_mme5_synthetic(sources.extra["synthetic_data"], self.synthetic_configs,
                                            image_root=sources.extra["synthetic_image_root"],
                                            num_negatives=self.num_negatives, on_missing=self.on_missing, seed=self.seed)
            named.update({SYNTHETIC + name: cap(ds, self.max_rows_per_dataset) for name, ds in synthetic.items()})
        check_not_empty(named, self.recipe)
        return named

    def source_lines(self, sources: Sources) -> list[str]:
        lines = []
        if self.uses_mmeb:
            lines.append(f"reads: MMEB-train {sources.data} ({', '.join(self.data_configs)}; split {self.data_split}), "
                         f"images under {sources.image_root}")
        if self.synthetic:
            lines.append(f"reads: mmE5-synthetic {sources.extra['synthetic_data']} ({', '.join(self.synthetic_configs)}), "
                         f"images under {sources.extra['synthetic_image_root']}")
        return lines

    # -- mining -----------------------------------------------------------------------------------

    def plan_notes(self, named: dict[str, datasets.Dataset]) -> list[str]:
        if not self.mines:
            return []
        lines = [f"MMEB-train negatives: mined at rank {self.mine_rank} with {self.mining_model or 'the base model'} "
                 f"before training, padded to {self.num_negatives}"]
        for name, ds in named.items():
            if name.startswith(SYNTHETIC):
                continue
            pool = distinct_positives(ds)
            if pool < 2:
                raise ValueError(f"mme5: dataset {name} has a single distinct positive, so mining finds no negative for "
                                 "any row (0 rows would remain); drop it (--data-configs) or use --mine-rank 0 with "
                                 "the data's own negatives.")
            if pool - 1 < self.mine_rank:
                lines.append(f"  {name}: pool of {pool} distinct positives has no rank {self.mine_rank}: every row takes "
                             f"its lowest-ranked non-positive candidate (rank <= {pool - 1}; fallback)")
        return lines

    def prepare(self, model: Any, named: dict[str, datasets.Dataset], plan: Any) -> dict[str, datasets.Dataset]:
        if self.mines:
            miner = model if self.mining_model is None else plan.load_model(self.mining_model)
            cache = plan.work_dir("mining-cache") / f"rank-{os.environ.get('RANK', '0')}"
            named = {name: ds if name.startswith(SYNTHETIC) else self._mine(miner, name, ds, cache / name)
                     for name, ds in named.items()}
            check_not_empty(named, self.recipe)
        return super().prepare(model, named, plan)

    def _mine(self, miner: Any, name: str, ds: datasets.Dataset, cache_dir: Path) -> datasets.Dataset:
        """The candidate at rank ``mine_rank`` among the dataset's distinct positives (nearest above on small pools)."""
        from mm_st.mining import mine_hard_negatives

        mined, report = mine_hard_negatives(
            miner, list(ds["anchor"]), None, list(ds["positive"]), strategy="window", ranks=self.mine_rank,
            num_negatives=1, fallback="nearest", cache_dir=cache_dir, return_report=True,
            show_progress_bar=console.library_bars())
        logger.info("%s: mined the rank-%d negative for %d of %d rows; %d used the fallback (a lower rank: the pool is "
                    "smaller), %d found none and were dropped", name, self.mine_rank, len(mined) - len(report.fallback_queries),
                    len(ds), len(report.fallback_queries), len(report.dropped_queries))
        return pad_negatives(mined, self.num_negatives)


def distinct_positives(ds: datasets.Dataset) -> int:
    """How many distinct positives (text + image file or bytes) a dataset has, without decoding images."""
    column = ds.select_columns(["positive"]).cast_column(
        "positive", {"text": datasets.Value("string"), "image": datasets.Image(decode=False)})["positive"]
    keys = set()
    for item in column:
        image = item.get("image") or {}
        image_key = image.get("path") or hashlib.sha256(image.get("bytes") or b"").hexdigest() if image else None
        keys.add((item.get("text"), image_key))
    return len(keys)
