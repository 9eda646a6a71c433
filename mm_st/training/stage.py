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
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from sentence_transformers import SentenceTransformerTrainer
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from mm_st import templates
from mm_st.hub import CARD_RECORD
from mm_st.training import console
from mm_st.training.config import RecipeConfig, card_record, describe
from mm_st.training.data import Sources, training_dataset
from mm_st.training.distributed import (barrier, every_parameter_used, is_local_main, is_main_process,
                                        main_process_first, world_size)
from mm_st.training.evaluators import XTDEvaluator  # noqa: F401  (re-exported: mm_st.training.stage.XTDEvaluator)
from mm_st.training.outputs import RunFolder, last_complete_checkpoint

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or weight: training stopped, nothing of that step was saved."""


@dataclass
class Plan:
    """Everything a stage will do, resolved and checked before any training."""

    config: RecipeConfig
    output_dir: Path
    model: str
    family: str
    sources: Sources
    rows: dict[str, int]
    world_size: int
    per_device_batch: int
    steps: int
    loss: str
    notes: list[str] = field(default_factory=list)
    folder: RunFolder | None = None
    continues: bool = False  # the model is a saved model folder (a previous stage's model/)

    def work_dir(self, name: str) -> Path:
        """A folder of this run's own (recorded, so that only the run's outputs are ever removed)."""
        return self.folder.claim(name) if self.folder is not None else self.output_dir / name

    def load_model(self, path: str) -> Any:
        """Another model for the recipe's preparation (e.g. mmE5's mining model), in the recipe's format."""
        from mm_st import build_model

        c = self.config
        return build_model(path, recipe=c.recipe, prompt_format=c.prompt_format, max_length=c.max_length,
                           dtype=_dtype(c.dtype))

    def lines(self, full: bool = True) -> list[str]:
        """The plan: ``full`` (``--dry-run``, ``--verbose``, ``plan.txt``) with every config value and its source,
        else the console's short form (model, data, training, output)."""
        c = self.config
        adapter = (f", adapter {c.adapter} r={c.lora_r} alpha={c.lora_alpha}" if c.adapter != "none" else ", full weights")
        if self.continues:
            adapter = ", continuing a saved model (its own adapter, if it has one, is trained further)"
        adapter += "" if c.tower_mode() == "train" else f", vision tower {c.tower_mode()}"
        model = f"model: {self.model} (family {self.family}, prompt format {c.prompt_format!r}{adapter})"
        data = ("data: " + ", ".join(f"{name} {n:,} rows" for name, n in self.rows.items())
                + f" = {sum(self.rows.values()):,} rows; batches "
                + ("mixed across datasets" if c.batch_mixing == "mixed" else "one dataset each"))
        evaluation = f"evaluation: {self.sources.eval_data if c.evaluate and self.sources.eval_data else 'none'}"
        if not full:
            return [model, *c.source_lines(self.sources), data,
                    f"training: {self.steps} steps x {c.global_batch_size} queries, lr {c.learning_rate:g}, "
                    f"{self.loss.split('(')[0]}; {evaluation}",
                    f"output: {self.output_dir} (the full plan and config: {PLAN_FILE})", *self.notes]
        batch = (f"{c.global_batch_size} queries per step = {self.per_device_batch} per process x {self.world_size} "
                 f"process(es), gradient accumulation 1 (accumulation adds no in-batch negatives)")
        if c.mini_batch_size and c.mini_batch_size < self.per_device_batch:
            batch += f"; GradCache mini-batches of {c.mini_batch_size}"
        return [
            f"mm_st {c.recipe} recipe{' (embedded default: offline, CPU)' if c.embedded else ''}",
            model,
            *c.source_lines(self.sources),
            data,
            f"loss: {self.loss}",
            f"batch: {batch}",
            f"steps: {self.steps} optimizer steps" + ("" if c.max_steps > 0 else f" ({c.num_train_epochs:g} epochs)")
            + f", lr {c.learning_rate:g}, checkpoint every {c.save_steps}",
            evaluation,
            f"output: {self.output_dir}",
            *self.notes,
            "config (source of each value):",
            *describe(c),
        ]


PLAN_FILE = "plan.txt"  # in the output folder: the full plan of the run, every config value with its source


def output_dir_of(config: RecipeConfig) -> Path:
    return Path(config.output_dir or f"runs/{config.recipe}")


def _check_output_dir(output_dir: Path) -> None:
    """The output folder must be a directory we can write (or creatable)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {str(output_dir)!r} is a file, not a directory.")
    existing = next((p for p in (output_dir, *output_dir.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--output-dir {str(output_dir)!r}: {str(existing)!r} is not writable.")


def _resolve_model(config: RecipeConfig, folder: RunFolder, write: bool) -> tuple[str, str, bool]:
    """(backbone path or id, family, whether it is a saved model folder to continue); the embedded tiny
    backbone is written under ``output_dir/base-model``."""
    from transformers import AutoConfig

    from mm_st import metadata
    from mm_st.builder import check_backbone_folder, saved_model_folder

    if config.model is None:
        from mm_st.training.embedded import base_family, write_base_model

        name = config.family or config.tiny_family
        path = folder.root / "base-model" / f"{name}-seed{config.seed}"  # a new seed or backbone gets its own
        if write:
            folder.claim("base-model")
            if not (path / "config.json").is_file():
                write_base_model(name, path, config.seed)
        return str(path), base_family(name), False
    if saved_model_folder(config.model):
        from mm_st.builder import check_saved_model

        check_saved_model(config.model)
        meta = metadata.read_dir(config.model) or {}
        family = config.family or meta.get("family")
        if family is None:
            raise ValueError(f"--model {config.model!r} is a saved model without mm_st metadata; pass --family.")
        return config.model, family, True
    check_backbone_folder(config.model)
    try:
        backbone = AutoConfig.from_pretrained(config.model)
    except OSError as exc:
        raise OSError(f"Could not resolve model {config.model!r} (a Hub id needs network access or the HF cache; "
                      f"a local directory needs config.json): {exc}") from exc
    family = config.family or templates.family_for_model_type(backbone.model_type).name
    return config.model, family, False


def _loss_name(config: RecipeConfig, per_device: int) -> str:
    cached = 0 < config.mini_batch_size < per_device
    name = "CachedMultimodalInfoNCELoss" if cached else "MultimodalInfoNCELoss"
    extra = "".join(f", {k}={v!r}" for k, v in config.loss_options().items())
    return (f"{name}(temperature={config.temperature}, hard_negative_scope={config.hard_negative_scope!r}, "
            f"mask_duplicates={config.mask_duplicates}, gather_across_devices={config.gather_across_devices}{extra}"
            + (f", mini_batch_size={config.mini_batch_size})" if cached else ")"))


def _steps(config: RecipeConfig, rows: dict[str, int], per_device: int) -> int:
    if config.max_steps > 0:
        return config.max_steps
    world = world_size()
    if config.batch_mixing == "mixed" or len(rows) == 1:
        per_epoch = sum(rows.values()) // config.global_batch_size
    else:
        per_epoch = sum(n // per_device for n in rows.values()) // world
    return max(1, math.ceil(per_epoch * config.num_train_epochs))


def _check_batch(config: RecipeConfig, rows: dict[str, int], world: int) -> int:
    if config.global_batch_size % world:
        raise ValueError(f"global_batch_size {config.global_batch_size} is not divisible by the {world} processes.")
    per_device = config.global_batch_size // world
    if config.batch_mixing == "per_dataset":
        small = {name: n for name, n in rows.items() if n < per_device}
        if small:
            raise ValueError(f"dataset(s) {small} have fewer rows than one batch of {per_device} per process "
                             "(drop them, lower --global-batch-size or use --batch-mixing mixed).")
    elif sum(rows.values()) < config.global_batch_size:
        raise ValueError(f"{sum(rows.values())} training rows are fewer than one global batch of {config.global_batch_size}.")
    return per_device


def _check_modalities(named: dict[str, datasets.Dataset], model: str, family: str) -> None:
    """A text-only backbone cannot take image inputs: name the dataset, row and column of the first one."""
    if templates.get_family(family).image_placeholder is not None:
        return
    for name, ds in named.items():
        for column, feature in ds.features.items():
            if isinstance(feature, dict) and "image" in feature:
                images = ds.data.column(column).combine_chunks().field("image")
                valid = images.is_valid().to_pylist()
                if True in valid:
                    raise ValueError(f"{name} row {valid.index(True)} column {column!r} has an image, but {model!r} "
                                     f"(family {family}) is a text-only model; use a multimodal backbone or "
                                     "text-only data.")


def _resume_checkpoint(config: RecipeConfig, output_dir: Path) -> str | None:
    """The checkpoint to resume from (``--resume auto|always``): the newest COMPLETE one, None to start fresh."""
    return _resume_choice(config, output_dir)[0]


def _resume_choice(config: RecipeConfig, output_dir: Path) -> tuple[str | None, dict[str, list[str]]]:
    """(the checkpoint to resume from or None, the newer incomplete checkpoints skipped: name -> what each lacks)."""
    folder = output_dir / "checkpoints"
    last, skipped = last_complete_checkpoint(folder)
    if config.resume == "always" and last is None:
        lacking = "".join(f"; {name} is incomplete (lacks {', '.join(gaps)})" for name, gaps in skipped.items())
        raise FileNotFoundError(f"--resume always: no complete checkpoint in {str(folder)!r} to resume from{lacking} "
                                "(use --resume auto to start a new run there).")
    if config.resume == "never":
        return None, {}
    return (str(last) if last is not None else None), skipped


def _drop_incomplete_checkpoints(plan: Plan, checkpoint: str | None, skipped: dict[str, list[str]]) -> None:
    """Say which incomplete checkpoints (a kill while the trainer wrote them) the resume skips, and remove them:
    the run wrote them, and the trainer writes those steps again."""
    for name, gaps in skipped.items():
        if is_main_process():
            print(f"{name} is incomplete (lacks {', '.join(gaps)}: the run was stopped while it was written); skipped "
                  f"and removed, {'resuming from ' + Path(checkpoint).name if checkpoint else 'starting from step 0'}",
                  flush=True)
        if plan.folder is not None and plan.folder.writer:
            shutil.rmtree(plan.output_dir / "checkpoints" / name, ignore_errors=True)


def plan_stage(config: RecipeConfig) -> tuple[Plan, dict[str, Any]]:
    """Resolve and check a stage: (plan, the loaded datasets by name); writes the embedded default's files."""
    config.check()
    output_dir = output_dir_of(config)
    _check_output_dir(output_dir)
    # One process per node writes the embedded default's files; the others wait until it has, for this config and
    # this launch (ranks started by one torchrun / accelerate launch share their parent process).
    writer = is_local_main()
    folder = RunFolder(output_dir, writer)
    if config.resume != "never":
        _resume_checkpoint(config, output_dir)  # --resume always without a checkpoint: an error before anything is written
    marker = output_dir / ".prepared"
    launch = os.getppid() if world_size() > 1 else None
    key = json.dumps({"recipe": config.recipe, "launch": launch, **config.to_dict()}, sort_keys=True)
    distributed = world_size() > 1
    if writer and distributed:
        folder.claim(".prepared").unlink(missing_ok=True)
    elif distributed and config.embedded:
        _wait_for(marker, key)
    model, family, continues = _resolve_model(config, folder, writer)  # first: offline, a Hub run stops at this download
    if writer and config.embedded:
        folder.claim("data")
    sources = config.sources(output_dir, write=writer)
    if writer and distributed and config.embedded:
        marker.write_text(key, encoding="utf-8")
    config.check_sources(sources)
    templates.get_family(family)
    evaluator = config.evaluator(sources, output_dir / "model" / "eval") if config.evaluate else None
    if evaluator is not None:
        evaluator.check()
    named = config.load_datasets(sources)
    _check_modalities(named, model, family)
    rows = {name: len(ds) for name, ds in named.items()}
    world = world_size()
    per_device = _check_batch(config, rows, world)
    notes = config.plan_notes(named)
    if config.quantization == "4bit" and not _qlora_available():
        notes.append("4-bit QLoRA needs CUDA and bitsandbytes: training plain LoRA instead")
    plan = Plan(config, output_dir, model, family, sources, rows, world, per_device,
                _steps(config, rows, per_device), _loss_name(config, per_device), notes, folder, continues)
    return plan, named


def dry_run(config: RecipeConfig) -> Plan:
    """:func:`plan_stage` for ``--dry-run``: the checked plan; when a check fails, the folder is left as it was."""
    output_dir = output_dir_of(config)
    _check_output_dir(output_dir)
    folder = RunFolder(output_dir, is_local_main())
    try:
        return plan_stage(config)[0]
    except BaseException:
        folder.rollback()
        raise


def _wait_for(marker: Path, key: str, timeout: float = 1800.0) -> None:
    """Block a non-main process until the main one has written the embedded default for this config."""
    import time

    deadline = time.monotonic() + timeout
    while not (marker.is_file() and marker.read_text(encoding="utf-8") == key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {os.environ.get('RANK')}: the main process did not prepare {str(marker.parent)!r} "
                               f"within {timeout:.0f} s (it writes the embedded data and backbone first).")
        time.sleep(0.5)


def _qlora_available() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


def _dtype(name: str) -> torch.dtype | None:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    return getattr(torch, name)


def build_stage_model(plan: Plan) -> Any:
    """The model with the recipe's training text and adapter (QLoRA on CUDA with bitsandbytes); a saved model
    folder (a previous stage's ``model/``) continues with its own adapter."""
    from mm_st import build_model

    c = plan.config
    model_kwargs = {}
    if c.quantization == "4bit" and _qlora_available() and not plan.continues:
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    elif c.quantization == "4bit" and not plan.continues:
        logger.warning("4-bit QLoRA needs CUDA and bitsandbytes; training plain LoRA in %s instead.", _dtype(c.dtype) or "float32")
    return build_model(plan.model, recipe=c.recipe, prompt_format=c.prompt_format, family=plan.family,
                       max_length=c.max_length, dtype=_dtype(c.dtype), adapter=c.adapter_config(),
                       model_kwargs=model_kwargs, vision_tower=c.tower_mode(),
                       **({} if plan.continues else c.model_options()))


def build_loss(plan: Plan, model: Any) -> Any:
    from mm_st.losses import CachedMultimodalInfoNCELoss, MultimodalInfoNCELoss

    c = plan.config
    kwargs = dict(temperature=c.temperature, hard_negative_scope=c.hard_negative_scope,
                  mask_duplicates=c.mask_duplicates, gather_across_devices=c.gather_across_devices and plan.world_size > 1,
                  **c.loss_options())
    if 0 < c.mini_batch_size < plan.per_device_batch:
        return CachedMultimodalInfoNCELoss(model, mini_batch_size=c.mini_batch_size, **kwargs)
    return MultimodalInfoNCELoss(model, **kwargs)


def training_arguments(plan: Plan, evaluate_during: bool) -> Any:
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import MultiDatasetBatchSamplers

    c = plan.config
    cuda = torch.cuda.is_available()
    return SentenceTransformerTrainingArguments(
        output_dir=str(plan.output_dir / "checkpoints"),
        per_device_train_batch_size=plan.per_device_batch,
        gradient_accumulation_steps=1,
        learning_rate=c.learning_rate,
        num_train_epochs=c.num_train_epochs,
        max_steps=c.max_steps,
        warmup_steps=c.warmup if c.warmup < 1 else int(c.warmup),  # < 1: a share of the steps (transformers 5)
        max_grad_norm=c.max_grad_norm,
        lr_scheduler_type=c.lr_scheduler_type,
        weight_decay=c.weight_decay,
        logging_steps=c.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a non-finite loss stops the run (FiniteGuard), it is never averaged away
        save_strategy="steps",
        save_steps=c.save_steps,
        save_total_limit=c.save_total_limit,
        eval_strategy="steps" if evaluate_during else "no",
        eval_steps=c.eval_steps or None,
        seed=c.seed,
        report_to=c.report_to,
        dataloader_drop_last=True,
        dataloader_num_workers=c.dataloader_num_workers,
        use_cpu=not cuda,
        ddp_backend="gloo" if plan.world_size > 1 and not cuda else None,
        ddp_find_unused_parameters=False,  # every parameter takes part in every step (RecipeTrainer.train)
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        router_mapping=c.column_tasks(),
    )


# -- non-finite values ----------------------------------------------------------------------------


def first_non_finite(named_tensors: Any) -> str | None:
    """The name of the first tensor holding a NaN or infinity, else None."""
    for name, tensor in named_tensors:
        if tensor is not None and not torch.isfinite(tensor).all():
            return name
    return None


class FiniteGuard(TrainerCallback):
    """Stops training at the first non-finite gradient (before the optimizer step) or weight (after it,
    before any checkpoint of that step is saved), naming the step and the tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        name = first_non_finite((n, p.grad) for n, p in self.trainable)
        if name is not None:
            raise TrainingDiverged(f"step {state.global_step + 1}: non-finite gradient of {name}; training stopped "
                                   "before the optimizer step, nothing of this step was saved (lower --learning-rate, "
                                   "--max-grad-norm or check the data).")

    def on_optimizer_step(self, args, state, control, **kwargs):
        name = first_non_finite(self.trainable)
        if name is not None:
            raise TrainingDiverged(f"step {state.global_step + 1}: the optimizer step made {name} non-finite; training "
                                   "stopped, nothing of this step was saved (lower --learning-rate).")


class RecipeTrainer(SentenceTransformerTrainer):
    """sentence-transformers' trainer that stops at the first non-finite loss (naming the step) instead of
    averaging it away, and counts this run's optimizer steps; its checkpoints carry no load-time state of this
    machine, like ``model/``. Under DDP every trainable parameter takes part in every step
    (:func:`~mm_st.training.distributed.every_parameter_used`), whatever the modalities of its columns."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        from mm_st.portable import scrub_saved_model

        super()._save(output_dir, state_dict)  # also saves the processor again, with its load-time flags
        scrub_saved_model(output_dir if output_dir is not None else self.args.output_dir)

    def train(self, *args, **kwargs):
        if self.args.world_size == 1 or self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super().train(*args, **kwargs)
        with every_parameter_used(self.model):
            return super().train(*args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise TrainingDiverged(f"step {self.state.global_step + 1}: the loss is {loss.item()} (non-finite); training "
                                   "stopped, nothing of this step was saved (lower --learning-rate or check the data).")
        return loss


# -- running -------------------------------------------------------------------------------------

RUN_FIELDS_IGNORED_ON_RESUME = {"resume", "threads", "report_to", "dataloader_num_workers", "logging_steps", "eval_steps",
                                "save_total_limit", "push_to_hub", "private", "merge_adapter", "hub_base_model"}


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


def _run_record(config: RecipeConfig) -> dict[str, Any]:
    return {"recipe": config.recipe, **config.to_dict()}


def _differences(previous: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (previous.get(k), v) for k, v in current.items()
            if k not in RUN_FIELDS_IGNORED_ON_RESUME and previous.get(k) != v}


def _check_same_run(plan: Plan) -> None:
    """Refuse to resume a run whose recorded config differs (other than logging/runtime fields)."""
    record = plan.output_dir / "recipe_config.json"
    if record.is_file() and (plan.output_dir / "checkpoints").is_dir():
        changed = _differences(json.loads(record.read_text(encoding="utf-8")), _run_record(plan.config))
        if changed:
            details = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise ValueError(f"{str(plan.output_dir)!r} holds a run with another config ({details}). Use another "
                             "--output-dir, or --resume never to start over there (it removes only that run's outputs).")
    if is_main_process():
        plan.work_dir("recipe_config.json").write_text(json.dumps(_run_record(plan.config), indent=2, sort_keys=True) + "\n",
                                                        encoding="utf-8")


def _finished_result(config: RecipeConfig, output_dir: Path) -> StageResult | None:
    """The result of an earlier run of the same config in ``output_dir`` that finished, else None."""
    folder = RunFolder(output_dir, writer=False)
    finished = folder.finished()
    if not finished or _differences(finished["config"], _run_record(config)):
        return None
    model_dir = Path(finished["model_dir"])
    scores_file = model_dir / "eval_results.json"
    if not (model_dir / "modules.json").is_file():
        return None
    scores = json.loads(scores_file.read_text(encoding="utf-8")) if scores_file.is_file() else {}
    return StageResult(model_dir, scores.get("before", {}), scores.get("after", {}), finished["steps"], None, True)


def _before_scores(evaluator: XTDEvaluator | None, model: Any, plan: Plan) -> dict[str, float]:
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


class _StepCounter(TrainerCallback):
    """Whether this run completed an optimizer step (a failure before the first one rolls the folder back)."""

    stepped = False

    def on_step_end(self, args, state, control, **kwargs):
        self.stepped = True


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
    _check_output_dir(output_dir)
    folder = RunFolder(output_dir, is_local_main())
    if config.resume == "never":
        folder.start_over(config.inputs())
        barrier()  # the others read the folder once the writer has emptied it
    folder = RunFolder(output_dir, is_local_main())  # what exists now is what a failure must leave
    counter = _StepCounter()
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


def _run(config: RecipeConfig, counter: _StepCounter) -> StageResult:
    from mm_st.training.curve import save_training_curve

    plan, named = plan_stage(config)
    if is_main_process():
        print("\n".join(plan.lines(full=console.verbose())), flush=True)
    checkpoint, skipped = _resume_choice(config, plan.output_dir)
    with main_process_first():  # it writes recipe_config.json, which the others compare with theirs
        _check_same_run(plan)
    _drop_incomplete_checkpoints(plan, checkpoint, skipped)
    if is_main_process():
        plan.work_dir(PLAN_FILE).write_text("\n".join(plan.lines()) + "\n", encoding="utf-8")
    plan.folder.mark_unfinished()
    from transformers import set_seed

    set_seed(config.seed)  # adapter initialisation is random
    model = build_stage_model(plan)
    named = config.prepare(model, named, plan)
    train = training_dataset(named, config.batch_mixing, config.seed)
    model_dir = plan.work_dir("model")  # the evaluation's mteb results go to model/eval/
    evaluator = config.evaluator(plan.sources, model_dir / "eval") if config.evaluate else None
    before = _before_scores(evaluator, model, plan)
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
        (model_dir / "recipe_config.json").write_text(json.dumps(_run_record(config), indent=2, sort_keys=True) + "\n",
                                                      encoding="utf-8")
        (model_dir / CARD_RECORD).write_text(json.dumps(card_record(config), indent=2) + "\n", encoding="utf-8")
        (model_dir / "eval_results.json").write_text(json.dumps({"before": before, "after": after}, indent=2) + "\n",
                                                     encoding="utf-8")
        if evaluator and (config.stage_table or console.verbose()):
            print("\n".join(evaluator.table(before, after)), flush=True)
        plan.folder.mark_finished(_run_record(config), trainer.state.global_step, model_dir)
        print(f"done: {progress.summary()}{_score_change(evaluator, before, after)}; model saved to {model_dir}",
              flush=True)
        if getattr(config, "push_to_hub", None):
            from mm_st.hub import push_trained_model

            push_trained_model(config, model_dir, plan.folder)
    barrier()  # the main process has saved (and evaluated) the model that a later stage reads
    return StageResult(model_dir, before, after, trainer.state.global_step, model)
