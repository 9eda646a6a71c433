"""VLM2Vec v1's recipe (arXiv 2410.05160, TIGER-AI-Lab/VLM2Vec): MMEB-train, shared in-batch negatives, GradCache.

Example:
    >>> from mm_st.training import VLM2VecConfig
    >>> VLM2VecConfig().temperature, VLM2VecConfig().global_batch_size
    (0.02, 1024)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets

from mm_st.data.converters import MMEB_TRAIN_CONFIGS, MMEB_TRAIN_REPO
from mm_st.recipes.vlm2vec import FACTS
from mm_st.training.config import EMBEDDED_COMMON, VISION_TOWER_HELP, RecipeConfig, config_field as _f
from mm_st.training.data import MMEBTrainData, Sources, check_not_empty

VLM2VEC_SRC = "VLM2Vec (arXiv 2410.05160) v1 and TIGER-AI-Lab/VLM2Vec"
VLM2VEC_LLAVA = "TIGER-AI-Lab/VLM2Vec scripts/aws/llava16-mistral-lora8-bs1024-step2k.sh @fa630fd"
V1_TARGETS = "qkv_proj,o_proj,gate_up_proj,down_proj,k_proj,q_proj,out_proj,v_proj"
_VLM = FACTS  # the paper values and their source: declared by the recipe (mm_st.recipes.vlm2vec)


@dataclass
class VLM2VecConfig(MMEBTrainData, RecipeConfig):
    """VLM2Vec v1 on MMEB-train: shared in-batch negatives, tau 0.02, LoRA, GradCache for the large batch."""

    recipe: ClassVar[str] = "vlm2vec"
    embedded_overrides: ClassVar[dict[str, Any]] = {
        **EMBEDDED_COMMON, "global_batch_size": 32, "max_steps": 150, "max_length": None, "max_rows_per_dataset": None,
        "data_configs": ["ImageNet_1K", "MSCOCO_t2i", "MSCOCO_i2t"],
    }

    model: str | None = _f(None, VLM2VEC_SRC + ": TIGER-Lab/VLM2Vec-LLaVa-Next's base, llava-hf/llava-v1.6-mistral-7b-hf")
    data: str | None = _f(None, VLM2VEC_SRC + ": " + MMEB_TRAIN_REPO)
    data_configs: list[str] = _f(list(MMEB_TRAIN_CONFIGS), VLM2VEC_SRC + ": the 20 MMEB-train datasets")
    max_rows_per_dataset: int | None = _f(50000, VLM2VEC_LLAVA + ": mmeb20_sub50k (50K rows per dataset)")
    num_negatives: int = _f(0, "VLM2Vec v1 README: in-batch negatives only (HEAD's collator drops hard negatives)")
    temperature: float = _f(_VLM["temperature"], VLM2VEC_LLAVA)
    adapter: str = _f("dora", "TIGER-AI-Lab/VLM2Vec src/model.py: LoraConfig(use_dora=True, init_lora_weights='gaussian')")
    lora_r: int = _f(_VLM["lora_r"], VLM2VEC_LLAVA + " (--lora_r 8; the README's example uses 16)")
    lora_alpha: int = _f(_VLM["lora_alpha"], "TIGER-AI-Lab/VLM2Vec src/arguments.py lora_alpha=64")
    lora_dropout: float = _f(0.1, "TIGER-AI-Lab/VLM2Vec src/arguments.py lora_dropout=0.1")
    lora_target_modules: str = _f(V1_TARGETS, "VLM2Vec v1 src/arguments.py (suffixes, vision tower included)")
    lora_init: str = _f("gaussian", "TIGER-AI-Lab/VLM2Vec src/model.py init_lora_weights='gaussian'")
    vision_tower: str = _f("lora", "TIGER-AI-Lab/VLM2Vec src/arguments.py: its LoRA suffixes (q_proj, k_proj, v_proj, "
                           "out_proj) also name the CLIP tower's attention, so the tower is adapted, not trained",
                           VISION_TOWER_HELP)
    learning_rate: float = _f(_VLM["learning_rate"], VLM2VEC_LLAVA)
    max_steps: int = _f(_VLM["steps"], VLM2VEC_LLAVA)
    warmup: float = _f(100, VLM2VEC_LLAVA + " (the README's example: 200)")
    global_batch_size: int = _f(_VLM["batch_size"], VLM2VEC_LLAVA + ": 128 per GPU x 8 GPUs, no accumulation")
    mini_batch_size: int = _f(2, VLM2VEC_LLAVA + ": GradCache q/p chunks of 2")
    max_length: int | None = _f(256, VLM2VEC_LLAVA + ": --max_len 256")

    def sources(self, output_dir: Path, write: bool = True) -> Sources:
        return self.mmeb_sources(output_dir, write)

    def check_sources(self, sources: Sources) -> None:
        super().check_sources(sources)
        self.check_mmeb_sources(sources)

    def load_datasets(self, sources: Sources) -> dict[str, datasets.Dataset]:
        named = self.load_mmeb(sources, self.num_negatives)
        check_not_empty(named, self.recipe)
        return named

    def source_lines(self, sources: Sources) -> list[str]:
        return [f"reads: MMEB-train {sources.data} ({', '.join(self.data_configs)}; split {self.data_split}), "
                f"images under {sources.image_root}"]
