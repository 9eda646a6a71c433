"""One training stage: model -> data -> loss -> sentence-transformers trainer -> mteb evaluation -> save.

``plan_stage(config)`` resolves everything a run needs and checks it (what ``--dry-run`` prints);
``run_stage(config)`` runs it. What differs between recipes (data sources, reading, preparation such
as mining or sentence cutting) is the config's own methods (:class:`~mm_st.training.config.RecipeConfig`);
this runner names no recipe. The output directory is laid out for a later publishing step and for
further stages::

    <output_dir>/model/          the trained model (SentenceTransformer(path) loads it), training_curve.png,
                                 recipe_config.json, eval/ (mteb results before and after)
    <output_dir>/checkpoints/    trainer checkpoints (a re-run of the same command resumes from the last)
    <output_dir>/data/           the embedded default's data (bundled emoji in the paper's layout)
    <output_dir>/base-model/     the embedded default's tiny backbone (one folder per family and seed)
    <output_dir>/.mm_st_run.json what runs wrote here (:mod:`mm_st.training.outputs`): only that is ever removed

Safety: a run that fails before its first optimizer step leaves the folder as it was; a finished run
re-run with the same config does nothing; a non-finite loss, gradient or weight stops training with
an error naming the step, and non-finite weights are never saved. A stage may start from a model a
previous stage saved (``model=runs/x/model``, adapter-only or full; see :func:`mm_st.builder.continue_from`).

It runs unchanged under ``torchrun --nproc_per_node N`` or ``accelerate launch`` (DDP through the
trainer; the loss gathers candidates across processes, so the global batch is every query's set of
in-batch negatives). Gradient accumulation is never used: it would not add in-batch negatives;
GradCache (``mini_batch_size``) sets the memory instead. The processes wait for the files one of them writes
(the embedded default, the saved model at the end of a stage: :mod:`mm_st.training.distributed`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from mm_st.hub import CARD_RECORD
from mm_st.training import console
from mm_st.training.builders import build_loss, build_stage_model, training_arguments
from mm_st.training.config import RecipeConfig, card_record
from mm_st.training.data import training_dataset
from mm_st.training.distributed import barrier, is_local_main, is_main_process, main_process_first
from mm_st.training.evaluators import XTDEvaluator  # noqa: F401  (re-exported: mm_st.training.stage.XTDEvaluator)
from mm_st.training.outputs import RunFolder, resume_choice
from mm_st.training.plan import PLAN_FILE, Plan, check_output_dir, dry_run, output_dir_of, plan_stage
from mm_st.training.resume import (RUN_FIELDS_IGNORED_ON_RESUME, before_scores, check_same_run, config_differences,
                                   drop_incomplete_checkpoints, run_record)
from mm_st.training.trainer import FiniteGuard, RecipeTrainer, StepCounter, TrainingDiverged, first_non_finite

# The runner was split by responsibility (plan, builders, trainer, resume); the names that lived here stay importable.
__all__ = ["PLAN_FILE", "RUN_FIELDS_IGNORED_ON_RESUME", "FiniteGuard", "Plan", "RecipeTrainer", "StageConfig", "StageResult",
           "TrainingDiverged", "XTDEvaluator", "build_loss", "build_stage_model", "dry_run", "first_non_finite",
           "is_main_process", "output_dir_of", "plan_stage", "run_stage", "training_arguments"]



class StageConfig(RecipeConfig):
    """The config of a recipe of one stage (E5-V, VLM2Vec, mmE5): it trains with :func:`run_stage`."""

    def run(self) -> StageResult:
        """Train the stage (:func:`run_stage`)."""
        return run_stage(self)

    def plan_lines(self) -> list[str]:
        """What ``--dry-run`` prints: the checked plan (the folder is left as it was when a check fails)."""
        return dry_run(self).lines()


@dataclass
class StageResult:
    """What a finished stage leaves: the saved model directory and the evaluation before and after.

    ``model`` is the trained model, or None when the run had finished before (nothing was trained;
    load ``model_dir``).
    """

    model_dir: Path
    before: dict[str, float]
    after: dict[str, float]
    steps: int
    model: Any = None
    already_finished: bool = False


def _finished_result(config: RecipeConfig, output_dir: Path) -> StageResult | None:
    """The result of an earlier run of the same config in ``output_dir`` that finished, else None."""
    folder = RunFolder(output_dir, writer=False)
    finished = folder.finished()
    if not finished or config_differences(finished["config"], run_record(config)):
        return None
    model_dir = Path(finished["model_dir"])
    scores_file = model_dir / "eval_results.json"
    if not (model_dir / "modules.json").is_file():
        return None
    scores = json.loads(scores_file.read_text(encoding="utf-8")) if scores_file.is_file() else {}
    return StageResult(model_dir, scores.get("before", {}), scores.get("after", {}), finished["steps"], None, True)


def run_stage(config: RecipeConfig) -> StageResult:
    """Train one stage as planned by :func:`plan_stage`; resumable and safe to re-run (see the module docstring)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    config.output_dir = str(output_dir_of(config).resolve())
    output_dir = Path(config.output_dir)
    if config.resume != "never":
        finished = _finished_result(config, output_dir)
        if finished is not None:
            if is_main_process():
                print(f"{str(output_dir)!r} holds this run, finished ({finished.steps} steps): the model is "
                      f"{str(finished.model_dir)!r}; nothing to do (--resume never trains it again).", flush=True)
                if getattr(config, "push_to_hub", None):  # a push that did not complete is finished now
                    from mm_st.hub import push_trained_model

                    push_trained_model(config, finished.model_dir, RunFolder(output_dir, is_local_main()))
            return finished
    if getattr(config, "push_to_hub", None) and is_main_process():
        from mm_st.hub import check_hub_access

        check_hub_access(config.push_to_hub)  # a wrong or read-only token fails now, not after training
    check_output_dir(output_dir)
    folder = RunFolder(output_dir, is_local_main())
    if config.resume == "never":
        folder.start_over(config.inputs())
        barrier()  # the others read the folder once the writer has emptied it
    folder = RunFolder(output_dir, is_local_main())  # what exists now is what a failure must leave
    counter = StepCounter()
    try:
        return _run(config, counter)
    except BaseException:
        if not counter.stepped:
            folder.rollback()
        raise


def _score_change(evaluator: Any, before: dict[str, float], after: dict[str, float]) -> str:
    """``, mbeir_recall_at_1 0.0120 -> 0.0450`` (the evaluator's primary metric), or nothing."""
    key = getattr(evaluator, "primary_metric", None)
    if key not in after:
        return ""
    return f", {key} {before[key]:.4f} -> {after[key]:.4f}" if key in before else f", {key} {after[key]:.4f}"


def _run(config: RecipeConfig, counter: StepCounter) -> StageResult:
    from mm_st.training.curve import save_training_curve

    plan, named = plan_stage(config)
    if is_main_process():
        print("\n".join(plan.lines(full=console.verbose())), flush=True)
    checkpoint, skipped = resume_choice(config, plan.output_dir)
    with main_process_first():  # it writes recipe_config.json, which the others compare with theirs
        check_same_run(plan)
    drop_incomplete_checkpoints(plan, checkpoint, skipped)
    if is_main_process():
        plan.work_dir(PLAN_FILE).write_text("\n".join(plan.lines()) + "\n", encoding="utf-8")
    plan.folder.mark_unfinished()
    from transformers import set_seed

    set_seed(config.seed)  # adapter initialisation is random
    model = build_stage_model(plan)
    named = config.prepare(model, named, plan.context())
    train = training_dataset(named, config.batch_mixing, config.seed)
    model_dir = plan.work_dir("model")  # the evaluation's mteb results go to model/eval/
    evaluator = config.evaluator(plan.sources, model_dir / "eval") if config.evaluate else None
    before = before_scores(evaluator, model, plan)
    barrier()  # the main process evaluated the untrained model (a long wait: outside the trainer's collectives)
    plan.work_dir("checkpoints")
    with console.library_stderr():
        trainer = RecipeTrainer(
            model=model, args=training_arguments(plan, bool(evaluator and config.eval_steps)), train_dataset=train,
            loss=build_loss(plan, model), evaluator=evaluator if config.eval_steps else None,
            callbacks=[FiniteGuard(model), counter],
        )
    progress = console.StageProgress("training")
    if not console.verbose():  # one bar for the stage instead of the trainer's bar and its printed log lines
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(progress)
    if checkpoint and is_main_process():
        print(f"resuming from {checkpoint}", flush=True)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        progress.close()  # an error printed next starts its own line
    after: dict[str, float] = {}
    if trainer.is_world_process_zero():
        name = first_non_finite(model.named_parameters())
        if name is not None:
            raise TrainingDiverged(f"after {trainer.state.global_step} steps {name} is non-finite; the model is not saved.")
        after = evaluator(model, steps=trainer.state.global_step) if evaluator else {}
        if after:
            trainer.state.log_history.append({"step": trainer.state.global_step, **{f"eval_{k}": v for k, v in after.items()}})
        model.save(str(model_dir))
        save_training_curve(trainer.state.log_history, model_dir / "training_curve.png",
                            evaluator.curve_metric if evaluator else None)
        (model_dir / "recipe_config.json").write_text(json.dumps(run_record(config), indent=2, sort_keys=True) + "\n",
                                                      encoding="utf-8")
        (model_dir / CARD_RECORD).write_text(json.dumps(card_record(config), indent=2) + "\n", encoding="utf-8")
        (model_dir / "eval_results.json").write_text(json.dumps({"before": before, "after": after}, indent=2) + "\n",
                                                     encoding="utf-8")
        if evaluator and (config.stage_table or console.verbose()):
            print("\n".join(evaluator.table(before, after)), flush=True)
        plan.folder.mark_finished(run_record(config), trainer.state.global_step, model_dir)
        print(f"done: {progress.summary()}{_score_change(evaluator, before, after)}; model saved to {model_dir}",
              flush=True)
        if getattr(config, "push_to_hub", None):
            from mm_st.hub import push_trained_model

            push_trained_model(config, model_dir, plan.folder)
    barrier()  # the main process has saved (and evaluated) the model that a later stage reads
    return StageResult(model_dir, before, after, trainer.state.global_step, model)
