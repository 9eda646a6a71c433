"""The training layer: recipe configs with the papers' values, and one stage runner over the ST trainer.

``recipes/train_e5v.py``, ``train_vlm2vec.py`` and ``train_mme5.py`` are thin drivers over
:func:`mm_st.training.cli.main`. In Python::

    from mm_st.training import VLM2VecConfig, plan_stage, run_stage

    config = VLM2VecConfig(max_steps=20, output_dir="runs/smoke")   # the embedded default, 20 steps
    plan, _ = plan_stage(config)          # what --dry-run prints
    result = run_stage(config)            # result.model_dir: SentenceTransformer(result.model_dir) loads it
"""

from mm_st.training.config import CONFIGS, E5VConfig, MME5Config, RecipeConfig, VLM2VecConfig, describe, load_config
from mm_st.training.stage import Plan, StageResult, plan_stage, run_stage

__all__ = ["CONFIGS", "E5VConfig", "MME5Config", "Plan", "RecipeConfig", "StageResult", "VLM2VecConfig", "describe",
           "load_config", "plan_stage", "run_stage"]
