"""Recipes of several stages: the stages as data, each an ordinary stage run by :func:`~mm_st.training.stage.run_stage`
in its own folder, and what ran recorded in ``<output_dir>/stages.json``.

A multi-stage recipe is a :class:`MultiStageConfig` (the whole recipe: its fields include ``stages`` and
``from_stage``) that lists its stages as :class:`StageSpec` rows (number, title, the stage's config class, the stage
whose model it continues, fields it takes from other recipe fields) and a :class:`StagedRun` subclass for what only
it does (its inputs, the extra values a stage gets, the ``stages.json`` entry of a stage, the end of the run). The base
runs the chosen stages in order in ``<output_dir>/stage<N>/``, refuses a stage whose earlier stage's model is not
there before anything is written, and prints / plans each stage. MM-Embed (:mod:`mm_st.training.mmembed`) is one.

Example:
    >>> from mm_st.training.mmembed import STAGE_SPECS
    >>> [(s.number, s.config.__name__, s.starts_from) for s in STAGE_SPECS]
    [(1, 'RandomNegativesStage', None), (2, 'ModalityAwareStage', None), (3, 'TextStage', 2)]
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_st.training.config import DATA_HOOKS, RecipeConfig
from mm_st.training.distributed import is_local_main, is_main_process
from mm_st.training.outputs import RunFolder
from mm_st.training.plan import dry_run, output_dir_of
from mm_st.training.stage import StageResult, run_stage

MANIFEST = "stages.json"


@dataclass(frozen=True)
class StageSpec:
    """One stage of a recipe, as data. Its config class defines the stage's own data hooks (a TypeError here
    otherwise: the whole recipe's config reads no data itself)."""

    number: int
    title: str
    config: type[RecipeConfig]
    starts_from: int | None = None  # the stage whose saved model this one continues (None: the recipe's base model)
    fields_from: Mapping[str, str] = field(default_factory=dict)  # stage field -> the recipe field it takes its value from

    def __post_init__(self) -> None:
        missing = [name for name in DATA_HOOKS if getattr(self.config, name) is getattr(MultiStageConfig, name)]
        if missing:
            raise TypeError(f"stage {self.number} ({self.config.__name__}) does not define "
                            + ", ".join(f"{name}() ({DATA_HOOKS[name]})" for name in missing)
                            + "; each stage's config class reads its own data.")


@dataclass
class StageInputs:
    """What every stage of a run reads: the base model, and config field -> value for the data fields."""

    base_model: str

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "base_model"}


class MultiStageConfig(RecipeConfig):
    """The config of a recipe of several stages: it plans and runs its stages (:meth:`staged_run`); each stage is
    planned and run with its own config class (:meth:`stage_specs`). Its fields include ``stages`` (the stage
    numbers to run) and ``from_stage`` (run this one and the later ones again from scratch, 0 = resume)."""

    @classmethod
    @abstractmethod
    def stage_specs(cls) -> list[StageSpec]:
        """The recipe's stages, in order."""

    @abstractmethod
    def staged_run(self) -> StagedRun:
        """The object that plans and runs this config's stages."""

    def sources(self, output_dir: Path, write: bool = True) -> Any:
        raise TypeError(self._not_a_stage())

    def load_datasets(self, sources: Any) -> Any:
        raise TypeError(self._not_a_stage())

    def _not_a_stage(self) -> str:
        return (f"{type(self).__name__} is a recipe of stages: each stage reads its own data (run or plan the whole "
                "recipe, or one stage's config: staged_run().stage_config(n, inputs)).")

    def stage_spec(self, number: int) -> StageSpec:
        return next(spec for spec in self.stage_specs() if spec.number == number)

    def stage_numbers(self) -> list[int]:
        """The stages to run, in order: ``stages``, and with ``from_stage`` every later stage too."""
        known = [spec.number for spec in self.stage_specs()]
        try:
            numbers = sorted({int(s) for s in self.stages})
        except ValueError:
            numbers = []
        if not numbers or not set(numbers) <= set(known):
            raise ValueError(f"{self.recipe} config: stages must be some of {', '.join(map(str, known))}, got {self.stages}.")
        if self.from_stage and self.from_stage not in numbers:
            raise ValueError(f"{self.recipe} config: --from-stage {self.from_stage} is not among --stages "
                             f"{','.join(map(str, numbers))}; run again from one of the chosen stages, or choose "
                             f"--stages {','.join(str(n) for n in known if n >= self.from_stage)}.")
        if self.from_stage:
            numbers = [n for n in known if n >= self.from_stage and (n in numbers or n > self.from_stage)]
        return numbers

    def run(self) -> Any:
        """Run the chosen stages; the last stage's result."""
        return self.staged_run().run()

    def plan_lines(self) -> list[str]:
        """What ``--dry-run`` prints: each chosen stage's checked plan."""
        return self.staged_run().plan_lines()


class StagedRun(ABC):
    """Runs the chosen stages of a :class:`MultiStageConfig`, each in ``<output_dir>/stage<N>/``, and keeps
    ``<output_dir>/stages.json``. A recipe subclasses it for what only it does (the methods marked as hooks)."""

    title = "recipe"  # the console's stage headers: === <title> stage N: <stage title> ===

    def __init__(self, config: MultiStageConfig) -> None:
        config.check()
        self.config = config
        self.root = output_dir_of(config).resolve()

    # -- hooks -----------------------------------------------------------------------------------------------

    @abstractmethod
    def inputs(self, write: bool = True) -> StageInputs:
        """Hook: the base model and data every stage reads (the embedded default's written once when ``write``)."""

    def check_own_folders(self) -> None:
        """Hook: refuse, before anything is written, a folder a later stage writes that is not the recipe's own."""

    def prepare_inputs(self) -> StageInputs:
        """Hook: checks and files before the first stage (in the plan too); the inputs the stages read."""
        return self.inputs()

    def stage_values(self, spec: StageSpec, inputs: StageInputs) -> dict[str, Any]:
        """Hook: config values of stage ``spec`` beyond the shared ones (e.g. the model that mines its negatives)."""
        return {}

    def before_stage(self, n: int, stage: RecipeConfig) -> None:
        """Hook: what every process does before a stage runs (e.g. the writer claims a folder the stage writes)."""

    def record(self, n: int, stage: RecipeConfig, result: StageResult) -> None:
        """Hook: what the main process keeps of finished stage ``n`` (``stages.json``: :meth:`write_stage`)."""
        self.write_stage(n, stage, result, {})

    def after_stage(self, n: int, stage: RecipeConfig, result: StageResult) -> None:
        """Hook: what the main process prints after stage ``n`` is recorded."""

    def finish(self, last: int, result: StageResult) -> None:
        """Hook: what the main process does after the last stage (a summary, the model card's record)."""

    def plan_header(self, inputs: StageInputs) -> list[str]:
        """Hook: the plan's first lines."""
        c = self.config
        return [f"mm_st {c.recipe} recipe{' (embedded default: offline, CPU)' if c.embedded else ''}: stages "
                f"{', '.join(map(str, c.stage_numbers()))} in {self.root}"]

    # -- the stages ------------------------------------------------------------------------------------------

    def stage_dir(self, n: int) -> Path:
        return self.root / f"stage{n}"

    def stage_model(self, n: int) -> Path:
        return self.stage_dir(n) / "model"

    def stage_config(self, n: int, inputs: StageInputs) -> RecipeConfig:
        """Stage ``n``'s config: the recipe's values, the inputs, its folder and model, the spec's field mapping,
        the recipe's :meth:`stage_values`; it starts over under ``from_stage``; the recipe pushes (not a stage)."""
        c, spec = self.config, self.config.stage_spec(n)
        values = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
        values.update(stages=[str(n)], from_stage=0, output_dir=str(self.stage_dir(n)), model=inputs.base_model,
                      **inputs.fields())
        if spec.starts_from is not None:
            values["model"] = str(self.stage_model(spec.starts_from))
        values.update({name: getattr(c, source) for name, source in spec.fields_from.items()})
        values.update(self.stage_values(spec, inputs))
        if c.from_stage and n >= c.from_stage:
            values["resume"] = "never"
        values["push_to_hub"] = None  # the recipe pushes its last stage's model (run)
        return spec.config(**values)

    def missing_model(self, n: int, stage: RecipeConfig) -> tuple[int, Path] | None:
        """(the earlier stage, its model folder) that stage ``n`` starts from or uses and that is not there yet."""
        used = set(stage.inputs().values())
        for m in range(n - 1, 0, -1):
            model = self.stage_model(m)
            if str(model) in used and not (model / "modules.json").is_file():
                return m, model
        return None

    def check_earlier_stages(self) -> None:
        """Before anything is written: a stage that needs an earlier stage's model, not chosen and not there, is an
        error naming the stages to run."""
        numbers = self.config.stage_numbers()
        inputs = self.inputs(write=False)
        for n in numbers:
            missing = self.missing_model(n, self.stage_config(n, inputs))
            if missing is not None and missing[0] not in numbers:
                m, model = missing
                raise FileNotFoundError(f"{self.config.recipe} stage {n} needs {str(model)!r} (stage {m}'s model); run "
                                        f"--stages {m},{n} (or --from-stage {m}).")

    def plan_lines(self) -> list[str]:
        """What ``--dry-run`` prints: the header, then each chosen stage's checked plan."""
        self.check_own_folders()
        inputs = self.prepare_inputs()
        lines = self.plan_header(inputs)
        for n in self.config.stage_numbers():
            stage = self.stage_config(n, inputs)
            missing = self.missing_model(n, stage)
            if missing is not None and stage.model == str(missing[1]):
                stage.model = inputs.base_model  # planned on the base model: the earlier stage's does not exist yet
            lines += ["", *dry_run(stage).lines()]
            if missing is not None:
                lines.append(f"note: stage {n} starts from / mines with {missing[1]}, written by stage {missing[0]} "
                             "(not there yet); the plan above used the base model")
        return lines

    def run(self) -> StageResult:
        """Run the chosen stages in order (a finished stage is not run again); the last stage's result."""
        self.check_earlier_stages()
        self.check_own_folders()
        if self.config.push_to_hub and is_main_process():
            from mm_st.hub import check_hub_access

            check_hub_access(self.config.push_to_hub)  # a wrong or read-only token fails now, not after training
        inputs = self.prepare_inputs()
        results = {}
        for n in self.config.stage_numbers():
            spec = self.config.stage_spec(n)
            stage = self.stage_config(n, inputs)
            self.before_stage(n, stage)
            if is_main_process():
                print(f"\n=== {self.title} stage {n}: {spec.title} ===", flush=True)
            results[n] = run_stage(stage)
            if is_main_process():
                self.record(n, stage, results[n])
                self.after_stage(n, stage, results[n])
        last = max(results)
        if is_main_process():
            self.finish(last, results[last])
            if self.config.push_to_hub:
                from mm_st.hub import push_trained_model

                push_trained_model(self.config, results[last].model_dir,
                                   RunFolder(self.stage_dir(last), is_local_main()))
        return results[last]

    # -- stages.json -----------------------------------------------------------------------------------------

    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict[str, Any]:
        """``stages.json``: ``{"recipe": ..., "stages": {"<n>": entry}}`` (and what the recipe adds), or an empty one."""
        path = self.manifest_path()
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        return {"recipe": self.config.recipe, "stages": {}}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        RunFolder(self.root).claim(MANIFEST)
        self.manifest_path().write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def stage_entry(self, n: int, stage: RecipeConfig, result: StageResult) -> dict[str, Any]:
        """What ``stages.json`` says of every finished stage: title, folders, model, steps, scores, config."""
        return {"title": self.config.stage_spec(n).title, "output_dir": stage.output_dir, "model_dir": str(result.model_dir),
                "starts_from": stage.model, "steps": result.steps, "before": result.before, "after": result.after,
                "config": {"recipe": stage.recipe, **stage.to_dict()}}

    def write_stage(self, n: int, stage: RecipeConfig, result: StageResult, extra: dict[str, Any],
                    manifest: dict[str, Any] | None = None) -> None:
        """Record stage ``n`` in ``stages.json`` (its :meth:`stage_entry` and the recipe's ``extra`` keys)."""
        manifest = self.manifest() if manifest is None else manifest
        manifest["stages"][str(n)] = {**self.stage_entry(n, stage, result), **extra}
        self.write_manifest(manifest)


def score_drops(before: dict[str, float], after: dict[str, float], earlier: dict[str, dict[str, Any]], n: int,
                threshold: float) -> list[str]:
    """Warnings for each held-out task whose top-1 score (``hit_rate_at_1``: the top-1 candidate is relevant;
    Recall@1 where it is missing) after stage ``n`` is more than ``threshold`` below the model the stage started
    from or below an earlier stage's model (``earlier``: ``stages.json``'s stages)."""
    from mm_st.training.evaluators import TOP1_METRIC

    references = [("its start", before)] + [(f"stage {m}", earlier[str(m)].get("after") or {})
                                            for m in range(1, n) if str(m) in earlier]
    tasks = sorted({key.split("/")[1] for key in after if key.startswith("mbeir/")})
    out = []
    for task in tasks:
        metric = TOP1_METRIC if f"mbeir/{task}/{TOP1_METRIC}" in after else "recall_at_1"
        key = f"mbeir/{task}/{metric}"
        if key not in after:
            continue
        drops: dict[float, list[str]] = {}  # one warning per score: its start is often an earlier stage's model
        for label, scores in references:
            previous = scores.get(key)
            if previous is not None and previous - after[key] > threshold:
                drops.setdefault(previous, []).append(label)
        for previous, labels in drops.items():
            out.append(f"warning: stage {n} lowered {task} {metric} against {' = '.join(labels)}: {previous:.3f} -> "
                       f"{after[key]:.3f} (more than max_score_drop {threshold:g})")
    return out
