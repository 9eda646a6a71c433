"""What a re-run of a stage reuses or refuses: the recorded config (a run with another config is refused), the
incomplete checkpoints a resume skips, and the untrained model's scores (computed once per run). Which checkpoint
it resumes from: :func:`mm_st.training.outputs.resume_choice`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mm_st.training.config import RecipeConfig
from mm_st.training.distributed import is_main_process
from mm_st.training.plan import Plan

RUN_FIELDS_IGNORED_ON_RESUME = {"resume", "threads", "report_to", "dataloader_num_workers", "logging_steps", "eval_steps",
                                "save_total_limit", "push_to_hub", "private", "merge_adapter", "hub_base_model"}


def drop_incomplete_checkpoints(plan: Plan, checkpoint: str | None, skipped: dict[str, list[str]]) -> None:
    """Say which incomplete checkpoints (a kill while the trainer wrote them) the resume skips, and remove them:
    the run wrote them, and the trainer writes those steps again."""
    for name, gaps in skipped.items():
        if is_main_process():
            print(f"{name} is incomplete (lacks {', '.join(gaps)}: the run was stopped while it was written); skipped "
                  f"and removed, {'resuming from ' + Path(checkpoint).name if checkpoint else 'starting from step 0'}",
                  flush=True)
        if plan.folder is not None and plan.folder.writer:
            shutil.rmtree(plan.output_dir / "checkpoints" / name, ignore_errors=True)


def run_record(config: RecipeConfig) -> dict[str, Any]:
    return {"recipe": config.recipe, **config.to_dict()}


def config_differences(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (previous.get(k), v) for k, v in current.items()
            if k not in RUN_FIELDS_IGNORED_ON_RESUME and previous.get(k) != v}


def check_same_run(plan: Plan) -> None:
    """Refuse to resume a run whose recorded config differs (other than logging/runtime fields)."""
    record = plan.output_dir / "recipe_config.json"
    if record.is_file() and (plan.output_dir / "checkpoints").is_dir():
        changed = config_differences(json.loads(record.read_text(encoding="utf-8")), run_record(plan.config))
        if changed:
            details = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise ValueError(f"{str(plan.output_dir)!r} holds a run with another config ({details}). Use another "
                             "--output-dir, or --resume never to start over there (it removes only that run's outputs).")
    if is_main_process():
        plan.work_dir("recipe_config.json").write_text(json.dumps(run_record(plan.config), indent=2, sort_keys=True) + "\n",
                                                        encoding="utf-8")


def before_scores(evaluator: Any, model: Any, plan: Plan) -> dict[str, float]:
    """The untrained model's scores, computed once per run (a resumed run reuses them if model and evaluation match)."""
    if evaluator is None or not is_main_process():
        return {}
    config = plan.config
    path = plan.output_dir / "eval-before.json"
    key = {"model": config.model, "seed": config.seed, **evaluator.cache_key()}
    for source in (path, *config.earlier_before_scores()):
        if source.is_file():
            saved = json.loads(source.read_text(encoding="utf-8"))
            if saved.get("key") == key:
                if source != path:
                    plan.work_dir("eval-before.json").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
                return saved["scores"]
    scores = evaluator(model, steps=0)
    plan.work_dir("eval-before.json").write_text(json.dumps({"key": key, "scores": scores}, indent=2) + "\n",
                                                 encoding="utf-8")
    return scores
