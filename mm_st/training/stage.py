"""One training stage: model -> data -> loss -> sentence-transformers trainer -> mteb evaluation -> save.

``plan_stage(config)`` resolves everything a run needs and checks it (what ``--dry-run`` prints);
``run_stage(config)`` runs it. The output directory is laid out for a later publishing step and
for further stages::

    <output_dir>/model/          the trained model (SentenceTransformer(path) loads it), training_curve.png,
                                 recipe_config.json, eval/ (mteb results before and after)
    <output_dir>/checkpoints/    trainer checkpoints (a re-run of the same command resumes from the last)
    <output_dir>/data/           the embedded default's data (bundled emoji in the paper's layout)
    <output_dir>/base-model/     the embedded default's tiny backbone (one folder per family and seed)

It runs unchanged under ``torchrun --nproc_per_node N`` or ``accelerate launch`` (DDP through the
trainer; the loss gathers candidates across processes, so the global batch is every query's set of
in-batch negatives). Gradient accumulation is never used: it would not add in-batch negatives;
GradCache (``mini_batch_size``) sets the memory instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

from mm_st import templates
from mm_st.training.config import RecipeConfig, describe
from mm_st.training.data import Sources, check_sources, load_datasets, resolve_sources

logger = logging.getLogger(__name__)


def world_size() -> int:
    """Processes in this run (torchrun / accelerate set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _is_local_main() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


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

    def lines(self) -> list[str]:
        c = self.config
        batch = (f"{c.global_batch_size} queries per step = {self.per_device_batch} per process x {self.world_size} "
                 f"process(es), gradient accumulation 1 (accumulation adds no in-batch negatives)")
        if c.mini_batch_size and c.mini_batch_size < self.per_device_batch:
            batch += f"; GradCache mini-batches of {c.mini_batch_size}"
        out = [
            f"mm_st {c.recipe} recipe{' (embedded default: offline, CPU)' if c.embedded else ''}",
            f"model: {self.model} (family {self.family}, prompt format {c.prompt_format!r}"
            + (f", adapter {c.adapter} r={c.lora_r} alpha={c.lora_alpha}" if c.adapter != "none" else ", full weights") + ")",
            "data: " + ", ".join(f"{name} {n:,} rows" for name, n in self.rows.items())
            + f" = {sum(self.rows.values()):,} rows; batches {'mixed across datasets' if c.batch_mixing == 'mixed' else 'one dataset each'}",
            f"loss: {self.loss}",
            f"batch: {batch}",
            f"steps: {self.steps} optimizer steps" + ("" if c.max_steps > 0 else f" ({c.num_train_epochs:g} epochs)")
            + f", lr {c.learning_rate:g}, checkpoint every {c.save_steps}",
            f"evaluation: {self.sources.eval_data or 'none (set --eval-data to an XTD-layout directory)'}",
            f"output: {self.output_dir}",
            *self.notes,
            "config (source of each value):",
            *describe(c),
        ]
        return out


def _output_dir(config: RecipeConfig) -> Path:
    return Path(config.output_dir or f"runs/{config.recipe}")


def _resolve_model(config: RecipeConfig, output_dir: Path, write: bool) -> tuple[str, str]:
    """(backbone path or id, family); the embedded tiny backbone is written under ``output_dir/base-model``."""
    from transformers import AutoConfig

    if config.model is None:
        from mm_st.testing import tiny_model

        family = config.family or config.tiny_family
        path = output_dir / "base-model" / f"{family}-seed{config.seed}"  # a new seed or family gets its own
        if write and not (path / "config.json").is_file():
            tiny_model(family, path, seed=config.seed)
        return str(path), family
    try:
        backbone = AutoConfig.from_pretrained(config.model)
    except OSError as exc:
        raise OSError(f"Could not resolve model {config.model!r} (a Hub id needs network access or the HF cache; "
                      f"a local directory needs config.json): {exc}") from exc
    family = config.family or templates.family_for_model_type(backbone.model_type).name
    return config.model, family


def _loss_name(config: RecipeConfig, per_device: int) -> str:
    cached = 0 < config.mini_batch_size < per_device
    name = "CachedMultimodalInfoNCELoss" if cached else "MultimodalInfoNCELoss"
    return (f"{name}(temperature={config.temperature}, hard_negative_scope={config.hard_negative_scope!r}, "
            f"mask_duplicates={config.mask_duplicates}, gather_across_devices={config.gather_across_devices}"
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


def plan_stage(config: RecipeConfig) -> tuple[Plan, dict[str, Any]]:
    """Resolve and check a stage: (plan, the loaded datasets by name); writes the embedded default's files."""
    config.check()
    output_dir = _output_dir(config)
    # One process per node writes the embedded default's files; the others wait until it has, for this config and
    # this launch (ranks started by one torchrun / accelerate launch share their parent process).
    writer = _is_local_main()
    marker = output_dir / ".prepared"
    launch = os.getppid() if world_size() > 1 else None
    key = json.dumps({"recipe": config.recipe, "launch": launch, **config.to_dict()}, sort_keys=True)
    if writer:
        marker.unlink(missing_ok=True)
    elif config.embedded:
        _wait_for(marker, key)
    model, family = _resolve_model(config, output_dir, writer)  # first: offline, a Hub run stops at this download
    sources = resolve_sources(config, output_dir, write=writer)
    if writer and config.embedded:
        marker.write_text(key, encoding="utf-8")
    check_sources(config, sources)
    templates.get_family(family)
    named = load_datasets(config, sources)
    rows = {name: len(ds) for name, ds in named.items()}
    world = world_size()
    per_device = _check_batch(config, rows, world)
    notes = []
    if getattr(config, "mine_rank", None) and not getattr(config, "synthetic_only", False):
        notes.append(f"MMEB-train negatives: mined at rank {config.mine_rank} with "
                     f"{config.mining_model or 'the base model'} before training, padded to {config.num_negatives}")
    if config.quantization == "4bit" and not _qlora_available():
        notes.append("4-bit QLoRA needs CUDA and bitsandbytes: training plain LoRA instead")
    plan = Plan(config, output_dir, model, family, sources, rows, world, per_device,
                _steps(config, rows, per_device), _loss_name(config, per_device), notes)
    return plan, named


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
    """The model with the recipe's training text and adapter (QLoRA on CUDA with bitsandbytes)."""
    from mm_st import build_model

    c = plan.config
    model_kwargs = {}
    if c.quantization == "4bit" and _qlora_available():
        from transformers import BitsAndBytesConfig

        model_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    elif c.quantization == "4bit":
        logger.warning("4-bit QLoRA needs CUDA and bitsandbytes; training plain LoRA in %s instead.", _dtype(c.dtype) or "float32")
    return build_model(plan.model, recipe=c.recipe, prompt_format=c.prompt_format, family=plan.family,
                       max_length=c.max_length, dtype=_dtype(c.dtype), adapter=c.adapter_config(),
                       model_kwargs=model_kwargs)


def build_loss(plan: Plan, model: Any) -> Any:
    from mm_st.losses import CachedMultimodalInfoNCELoss, MultimodalInfoNCELoss

    c = plan.config
    kwargs = dict(temperature=c.temperature, hard_negative_scope=c.hard_negative_scope,
                  mask_duplicates=c.mask_duplicates, gather_across_devices=c.gather_across_devices and plan.world_size > 1)
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
        ddp_find_unused_parameters=True,  # text-only batches leave the vision tower's adapters unused
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
    )


# -- evaluation ----------------------------------------------------------------------------------


class XTDEvaluator(BaseEvaluator):
    """Held-out text->image retrieval through mm_st's mteb task (``XTDT2IRetrieval``), as a trainer evaluator.

    Returns ``xtd_recall_at_1`` / ``xtd_recall_at_10`` averaged over ``languages``; mteb's result files
    go to ``results_dir`` (one revision per evaluation: ``step-N``). Only the main process evaluates.
    """

    def __init__(self, data: str, languages: list[str], results_dir: Path, name: str) -> None:
        super().__init__()
        self.primary_metric = "xtd_recall_at_10"
        self.data, self.languages, self.results_dir, self.name = data, list(languages), Path(results_dir), name
        self.last_scores: dict[str, Any] = {}

    def __call__(self, model: Any, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        if not is_main_process():
            return {}
        import mteb

        from mm_st.evaluation import MMSTEncoder, XTDT2IRetrieval

        task = XTDT2IRetrieval(data=self.data)
        unknown = [lang for lang in self.languages if lang not in task.hf_subsets]
        if unknown:
            raise ValueError(f"eval_languages {unknown} are not XTD languages ({', '.join(task.hf_subsets)}).")
        task.hf_subsets = self.languages
        encoder = MMSTEncoder(model, name=f"local/{self.name}", revision=f"step-{max(steps, 0)}")
        result = mteb.evaluate(encoder, task, cache=mteb.ResultCache(self.results_dir), overwrite_strategy="always",
                               show_progress_bar=False)
        scores = result.task_results[0].scores["test"]
        self.last_scores = {s["hf_subset"]: {k: s[k] for k in ("recall_at_1", "recall_at_10")} for s in scores}
        self.num_images = len(Path(self.data, "test_image_names.txt").read_text(encoding="utf-8").split())
        return {f"xtd_{k}": sum(s[k] for s in self.last_scores.values()) / len(self.last_scores)
                for k in ("recall_at_1", "recall_at_10")}

    def get_config_dict(self) -> dict[str, Any]:
        return {"data": self.data, "languages": self.languages}


# -- running -------------------------------------------------------------------------------------

RUN_FIELDS_IGNORED_ON_RESUME = {"resume", "threads", "report_to", "dataloader_num_workers", "logging_steps", "eval_steps",
                                "save_total_limit", "push_to_hub", "private", "merge_adapter", "hub_base_model"}


@dataclass
class StageResult:
    """What a finished stage leaves: the saved model directory and the evaluation before and after."""

    model_dir: Path
    before: dict[str, float]
    after: dict[str, float]
    steps: int
    model: Any = None


def _resume_checkpoint(plan: Plan) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    c = plan.config
    folder = plan.output_dir / "checkpoints"
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if c.resume == "always" and last is None:
        raise FileNotFoundError(f"--resume always: no checkpoint in {str(folder)!r}.")
    return None if c.resume == "never" else last


def _check_same_run(plan: Plan) -> None:
    """Refuse to resume a run whose recorded config differs (other than logging/runtime fields)."""
    record = plan.output_dir / "recipe_config.json"
    current = {"recipe": plan.config.recipe, **plan.config.to_dict()}
    if record.is_file() and plan.config.resume != "never" and (plan.output_dir / "checkpoints").is_dir():
        previous = json.loads(record.read_text(encoding="utf-8"))
        changed = {k: (previous.get(k), v) for k, v in current.items()
                   if k not in RUN_FIELDS_IGNORED_ON_RESUME and previous.get(k) != v}
        if changed:
            details = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise ValueError(f"{str(plan.output_dir)!r} holds a run with another config ({details}). Use another "
                             "--output-dir, or --resume never to start over there.")
    if is_main_process():
        plan.output_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# What a run writes into its output directory; ``--resume never`` removes these (and only these) first.
RUN_OUTPUTS = ("checkpoints", "model", "data", "base-model", "mining-cache", "eval-before.json", "recipe_config.json",
               ".prepared")


def _start_over(output_dir: Path) -> None:
    import shutil

    if not _is_local_main():
        return
    for name in RUN_OUTPUTS:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()


def _before_scores(evaluator: XTDEvaluator | None, model: Any, path: Path, config: RecipeConfig) -> dict[str, float]:
    """The untrained model's scores, computed once per run (a resumed run reuses them if model and evaluation match)."""
    if evaluator is None or not is_main_process():
        return {}
    key = {"model": config.model, "seed": config.seed, "data": evaluator.data, "languages": evaluator.languages}
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return saved["scores"]
    scores = evaluator(model, steps=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "scores": scores}, indent=2) + "\n", encoding="utf-8")
    return scores


def run_stage(config: RecipeConfig) -> StageResult:
    """Train one stage as planned by :func:`plan_stage`; resumable (see the module docstring)."""
    from sentence_transformers import SentenceTransformerTrainer

    from mm_st.training.curve import save_training_curve
    from mm_st.training.data import cut_texts, mine_mme5_negatives, training_dataset

    if config.threads:
        torch.set_num_threads(config.threads)
    config.output_dir = str(_output_dir(config).resolve())
    if config.resume == "never":
        _start_over(Path(config.output_dir))
    plan, named = plan_stage(config)
    if is_main_process():
        print("\n".join(plan.lines()), flush=True)
    _check_same_run(plan)
    from transformers import set_seed

    set_seed(config.seed)  # adapter initialisation is random
    model = build_stage_model(plan)
    if getattr(config, "mine_rank", None) and not getattr(config, "synthetic_only", False):
        miner = model if config.mining_model is None else _mining_model(plan)
        rank_dir = f"rank-{os.environ.get('RANK', '0')}"
        named = mine_mme5_negatives(miner, named, config, plan.output_dir / "mining-cache" / rank_dir)
    if config.max_text_tokens:
        tokenizer = getattr(model[0].processor, "tokenizer", model[0].processor)
        named = cut_texts(named, tokenizer, config.max_text_tokens)
    train = training_dataset(named, config.batch_mixing, config.seed)
    evaluator = XTDEvaluator(plan.sources.eval_data, config.eval_languages, plan.output_dir / "model" / "eval",
                             f"mm_st-{config.recipe}") if plan.sources.eval_data and config.evaluate else None
    before = _before_scores(evaluator, model, plan.output_dir / "eval-before.json", config)
    trainer = SentenceTransformerTrainer(
        model=model, args=training_arguments(plan, bool(evaluator and config.eval_steps)), train_dataset=train,
        loss=build_loss(plan, model), evaluator=evaluator if config.eval_steps else None,
    )
    checkpoint = _resume_checkpoint(plan)
    if checkpoint and is_main_process():
        print(f"resuming from {checkpoint}", flush=True)
    trainer.train(resume_from_checkpoint=checkpoint)
    after: dict[str, float] = {}
    model_dir = plan.output_dir / "model"
    if trainer.is_world_process_zero():
        after = evaluator(model, steps=trainer.state.global_step) if evaluator else {}
        if after:
            trainer.state.log_history.append({"step": trainer.state.global_step, **{f"eval_{k}": v for k, v in after.items()}})
        model.save(str(model_dir))
        save_training_curve(trainer.state.log_history, model_dir / "training_curve.png",
                            "eval_xtd_recall_at_1" if evaluator else None)
        (model_dir / "recipe_config.json").write_text(
            json.dumps({"recipe": config.recipe, **config.to_dict()}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (model_dir / "eval_results.json").write_text(json.dumps({"before": before, "after": after}, indent=2) + "\n",
                                                     encoding="utf-8")
        if evaluator:
            print("\n".join(score_table(before, after, evaluator)), flush=True)
        print(f"model saved to {model_dir}", flush=True)
        if getattr(config, "push_to_hub", None):
            from mm_st.hub import push_trained_model

            push_trained_model(config, model_dir)
    return StageResult(model_dir, before, after, trainer.state.global_step, model)


def _mining_model(plan: Plan) -> Any:
    from mm_st import build_model

    c = plan.config
    return build_model(c.mining_model, recipe=c.recipe, prompt_format=c.prompt_format, max_length=c.max_length,
                       dtype=_dtype(c.dtype))


def score_table(before: dict[str, float], after: dict[str, float], evaluator: XTDEvaluator) -> list[str]:
    """Before / after / chance lines for the held-out evaluation."""
    n = getattr(evaluator, "num_images", 0)
    lines = [f"\nHeld-out text->image retrieval ({n} images, XTD layout, mean over {', '.join(evaluator.languages)})",
             f"{'metric':<12}{'before':>10}{'after':>10}{'chance':>10}"]
    for key, k in (("xtd_recall_at_1", 1), ("xtd_recall_at_10", 10)):
        chance = k / n if n else float("nan")
        lines.append(f"{'R@' + str(k):<12}{before.get(key, float('nan')):>10.4f}{after.get(key, float('nan')):>10.4f}{chance:>10.4f}")
    return lines
