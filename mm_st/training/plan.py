"""A stage's plan: everything it will do, resolved and checked before any training (what ``--dry-run`` prints).

:func:`plan_stage` resolves the model (the embedded default's tiny backbone is written here), the data sources, the
datasets, the batch and the steps, and checks them; :class:`Plan` holds the result and what a recipe's
:meth:`~mm_st.training.config.RecipeConfig.prepare` hook may use (:meth:`Plan.context`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch

from mm_st import templates
from mm_st.training.config import RecipeConfig, StageContext, describe
from mm_st.training.data import Sources
from mm_st.training.distributed import is_local_main, world_size
from mm_st.training.outputs import RunFolder, resume_checkpoint


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
                           dtype=torch_dtype(c.dtype))

    def context(self) -> StageContext:
        """What the recipe's ``prepare`` hook may use of this stage."""
        return StageContext(self.output_dir, self.work_dir, self.load_model)

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
                + c.batch_description())
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


def check_output_dir(output_dir: Path) -> None:
    """The output folder must be a directory we can write (or creatable)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output-dir {str(output_dir)!r} is a file, not a directory.")
    existing = next((p for p in (output_dir, *output_dir.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--output-dir {str(output_dir)!r}: {str(existing)!r} is not writable.")


def _resolve_model(config: RecipeConfig, folder: RunFolder) -> tuple[str, str, bool]:
    """(backbone path or id, family, whether it is a saved model folder to continue); the embedded tiny
    backbone is written under ``output_dir/base-model`` (by the folder's writer)."""
    from transformers import AutoConfig

    from mm_st import metadata
    from mm_st.builder import check_backbone_folder, saved_model_folder

    if config.model is None:
        from mm_st.training.embedded import base_family, embedded_backbone

        name = config.family or config.tiny_family
        return str(embedded_backbone(folder, name, config.seed)), base_family(name), False
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


def plan_stage(config: RecipeConfig) -> tuple[Plan, dict[str, Any]]:
    """Resolve and check a stage: (plan, the loaded datasets by name); writes the embedded default's files."""
    config.check()
    output_dir = output_dir_of(config)
    check_output_dir(output_dir)
    # One process per node writes the embedded default's files; the others wait until it has, for this config and
    # this launch (ranks started by one torchrun / accelerate launch share their parent process).
    writer = is_local_main()
    folder = RunFolder(output_dir, writer)
    if config.resume != "never":
        resume_checkpoint(config, output_dir)  # --resume always without a checkpoint: an error before anything is written
    marker = output_dir / ".prepared"
    launch = os.getppid() if world_size() > 1 else None
    key = json.dumps({"recipe": config.recipe, "launch": launch, **config.to_dict()}, sort_keys=True)
    distributed = world_size() > 1
    if writer and distributed:
        folder.claim(".prepared").unlink(missing_ok=True)
    elif distributed and config.embedded:
        _wait_for(marker, key)
    model, family, continues = _resolve_model(config, folder)  # first: offline, a Hub run stops at this download
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
    if config.quantization == "4bit" and not qlora_available():
        notes.append("4-bit QLoRA needs CUDA and bitsandbytes: training plain LoRA instead")
    plan = Plan(config, output_dir, model, family, sources, rows, world, per_device,
                _steps(config, rows, per_device), _loss_name(config, per_device), notes, folder, continues)
    return plan, named


def dry_run(config: RecipeConfig) -> Plan:
    """:func:`plan_stage` for ``--dry-run``: the checked plan; when a check fails, the folder is left as it was."""
    output_dir = output_dir_of(config)
    check_output_dir(output_dir)
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


def qlora_available() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


def torch_dtype(name: str) -> torch.dtype | None:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    return getattr(torch, name)


