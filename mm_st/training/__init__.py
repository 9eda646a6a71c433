"""The training layer: recipe configs with the papers' values, and one stage runner over the ST trainer.

Each recipe is one module with its config class (``e5v``, ``vlm2vec``, ``vlm2vec_v2``, ``mme5``, ``mmembed``: three stages); ``recipes/train_*.py``
are thin drivers over :func:`mm_st.training.cli.main`. In Python::

    from mm_st.training import VLM2VecConfig, plan_stage, run_stage

    config = VLM2VecConfig(max_steps=20, output_dir="runs/smoke")   # the embedded default, 20 steps
    plan, _ = plan_stage(config)          # what --dry-run prints
    result = run_stage(config)            # result.model_dir: SentenceTransformer(result.model_dir) loads it
"""

import importlib
from collections.abc import Mapping

from mm_st.recipes.registry import RecipeSpec, View
from mm_st.training.config import RecipeConfig, describe, load_config
from mm_st.training.e5v import E5VConfig
from mm_st.training.mme5 import MME5Config
from mm_st.training.mmembed import MMEmbedConfig
from mm_st.training.stage import Plan, StageResult, TrainingDiverged, plan_stage, run_stage
from mm_st.training.vlm2vec import VLM2VecConfig
from mm_st.training.vlm2vec_v2 import VLM2VecV2Config



def config_class(spec: RecipeSpec) -> type[RecipeConfig] | None:
    """A registered recipe's training config class (``spec.config``, imported when named ``"module:Class"``)."""
    config = spec.config
    if isinstance(config, str):
        module, _, name = config.partition(":")
        config = getattr(importlib.import_module(module), name)
        if config.recipe != spec.name:
            raise ValueError(f"recipe {spec.name!r}: its config class {spec.config} says recipe {config.recipe!r}.")
    return config


# The registered recipes' config classes (mm_st.recipes: each recipe registers once), a view of the registry.
CONFIGS: Mapping[str, type[RecipeConfig]] = View(config_class, "training configs")

__all__ = ["CONFIGS", "E5VConfig", "MME5Config", "MMEmbedConfig", "Plan", "RecipeConfig", "StageResult", "TrainingDiverged",
           "VLM2VecConfig", "VLM2VecV2Config", "describe", "load_config", "plan_stage", "run_stage"]
