"""E5-V's recipe (arXiv 2407.12580, kongds/E5-V): text-only NLI triplets, one-word prompts, QLoRA.

Example:
    >>> from mm_st.training import E5VConfig
    >>> E5VConfig().max_text_tokens, E5VConfig(train_template="upstream").prompt_format
    (32, 'train')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets

from mm_st.recipes.e5v import FACTS
from mm_st.training import embedded
from mm_st.training.config import AT_LEAST_1, EMBEDDED_COMMON, VISION_TOWER_HELP, RecipeConfig, config_field as _f
from mm_st.training.data import Sources, cap, embedded_dir, embedded_eval_data, hub_file

E5V = FACTS  # the paper values and their source: declared by the recipe (mm_st.recipes.e5v)
E5V_SRC = "kongds/E5-V run.sh / ft_llm.py"
# The language model's projections: any module path without a vision part (vision_tower, vision_model, visual),
# so text-only LMs (layers.N.self_attn.q_proj) and every MLLM family match.
E5V_LM_ONLY = r"^(?!.*vision|.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass
class E5VConfig(RecipeConfig):
    """E5-V (arXiv 2407.12580): text-only NLI triplets on a LLaVA-NeXT-Llama-3 backbone, QLoRA."""

    recipe: ClassVar[str] = "e5v"
    embedded_overrides: ClassVar[dict[str, Any]] = {
        **EMBEDDED_COMMON, "global_batch_size": 32, "num_train_epochs": 3.0, "quantization": "none",
        "max_rows_per_dataset": 1500,
    }
    data_fields: ClassVar[tuple[str, ...]] = ("data",)

    model: str | None = _f(None, "E5-V base: lmms-lab/llama3-llava-next-8b (HF layout: llava-hf/llama3-llava-next-8b-hf)")
    train_template: str = _f("inference", "paper-facts: ft_llm.py trains on a de-tokenised template; inference uses the real one",
                             "'inference' (the real chat template) or 'upstream' (ft_llm.py's de-tokenised text)")
    prompt_format: str = _f("inference", "mm_st default; 'train' = ft_llm.py's de-tokenised template (--train-template upstream)",
                            "'inference' or 'train' (= --train-template upstream)")
    data: str | None = _f(None, "E5-V run.sh: data/nli_for_simcse.csv (princeton-nlp/datasets-for-simcse, 275K triplets)")
    num_negatives: int = _f(1, "E5-V: the contradiction is the hard negative", valid=AT_LEAST_1)
    temperature: float = _f(E5V["temperature"], E5V_SRC + " (cosine / 0.05)")
    lora_r: int = _f(E5V["lora_r"], E5V_SRC)
    lora_alpha: int = _f(E5V["lora_alpha"], E5V_SRC)
    lora_dropout: float = _f(E5V["lora_dropout"], E5V_SRC)
    lora_target_modules: str = _f(E5V_LM_ONLY, E5V_SRC + ": q,k,v,o,gate,up,down of the language model")
    vision_tower: str = _f("frozen", "kongds/E5-V: trains on text only (the tower sees no image) and its LoRA targets "
                           "the language model only (E5V_LM_ONLY)", VISION_TOWER_HELP)
    quantization: str = _f("4bit", E5V_SRC + ": 4-bit NF4 QLoRA (plain LoRA when CUDA/bitsandbytes are missing, logged)")
    warmup: float = _f(100, "kongds/E5-V ft_llm.py: warmup_steps=100")
    learning_rate: float = _f(E5V["learning_rate"], E5V_SRC)
    num_train_epochs: float = _f(float(E5V["epochs"]), "kongds/E5-V run.sh EPOCH=2 (the paper says 1: --num-train-epochs 1)")
    global_batch_size: int = _f(E5V["batch_size"], E5V_SRC + ": BATCH_SIZE=768 = MICRO_BATCH_SIZE 24 x 32 GPUs, "
                                "no accumulation; all gathered")
    mini_batch_size: int = _f(24, E5V_SRC + ": MICRO_BATCH_SIZE=24 (here a GradCache mini-batch)")
    max_text_tokens: int | None = _f(E5V["max_text_tokens"], E5V_SRC + ": cutoff_len 32 cuts the sentence, "
                                     "before the template")

    def __post_init__(self) -> None:
        if self.train_template == "upstream":
            self.prompt_format = "train"
        super().__post_init__()

    def validate(self) -> None:
        if self.train_template not in ("inference", "upstream"):
            raise ValueError(f"e5v config: train_template={self.train_template!r} is not one of inference, upstream.")
        super().validate()

    def sources(self, output_dir: Path, write: bool = True) -> Sources:
        if self.embedded:
            root = output_dir / "data"
            folder = embedded_dir(self, root, "nli")
            if write:  # cheap, and the sibling negatives depend on the seed
                embedded.write_nli(folder, limit=self.max_rows_per_dataset, seed=self.seed)
            return Sources(str(folder / "nli_for_simcse.csv"), None, embedded_eval_data(self, root, write))
        if self.data is None:
            raise ValueError("e5v config: --model is set but --data is not; give the NLI triplets file too.")
        return Sources(self.data, None, self.eval_data)

    def load_datasets(self, sources: Sources) -> dict[str, datasets.Dataset]:
        from mm_st.data import load_nli

        return {"nli": cap(load_nli(hub_file(sources.data)), self.max_rows_per_dataset)}

    def source_lines(self, sources: Sources) -> list[str]:
        return [f"reads: NLI triplets {sources.data}"]
