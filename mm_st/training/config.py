"""Recipe configs: the shared fields and checks, and how files and flags become a config.

Each recipe is one config class in its own module (:mod:`mm_st.training.e5v`, ``vlm2vec``, ``mme5``,
``mmembed``) whose defaults are the paper's (or its code's) values, each naming its source in
``field(metadata={"source": ...})``, and whose methods say what differs between recipes: where its
data comes from, how it is read and prepared (mining, sentence cutting), what the plan says. The
stage runner (:mod:`mm_st.training.stage`) only calls these methods. Values come, lowest first, from
the class defaults, the embedded default (only when neither a model nor training data is given: a
tiny backbone and the bundled emoji data, sized for a CPU), a YAML/JSON file (``--config``) and flags.
Every numeric field has a valid range, checked with the other fields when the config is built
(:meth:`RecipeConfig.validate`); what needs the machine (a token to push with, the data's files) is checked before
a run or a dry run (:meth:`RecipeConfig.check`, :meth:`RecipeConfig.check_sources`).

Example:
    >>> from mm_st.training import E5VConfig, load_config
    >>> E5VConfig().temperature, E5VConfig().global_batch_size
    (0.05, 768)
    >>> config = load_config(E5VConfig, ["--learning-rate", "1e-3"])
    >>> config.learning_rate, config.embedded
    (0.001, True)
    >>> load_config(E5VConfig, ["--lora-alpha", "-16"])
    Traceback (most recent call last):
    ...
    ValueError: e5v config: lora_alpha must be > 0, got -16.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mm_st import templates
from mm_st.data.images import ON_MISSING

if TYPE_CHECKING:  # pragma: no cover
    import datasets

    from mm_st.training.data import Sources

ADAPTERS = ("lora", "dora", "none")
BATCH_MIXING = ("mixed", "per_dataset")
RESUME = ("auto", "always", "never")
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
EMBEDDED = "embedded default (tiny backbone, bundled emoji data, CPU-sized)"
# What every embedded default changes: CPU-sized batches without GradCache, a larger learning rate, and full
# weights (a random tiny backbone has nothing for an adapter to adapt: DoRA r=8 on the tiny VLM2Vec run stayed
# at chance); --adapter dora etc. runs the paper's adapter.
# The tiny backbones' towers are random, so they train with the rest (a pretrained embedded backbone,
# mm_st.training.embedded.PRETRAINED_BACKBONES, sets its own).
EMBEDDED_COMMON = {"adapter": "none", "mini_batch_size": 0, "learning_rate": 1e-3, "warmup": 0.1, "save_steps": 50,
                   "logging_steps": 5, "threads": 1, "vision_tower": "train"}
VISION_TOWER_HELP = ("the image tower: 'train' (like the rest), 'frozen' (weights and BatchNorm statistics fixed) or "
                     "'lora' (fixed, plus LoRA on its modules; with --adapter none the tower trains with full weights "
                     "like the language model); mm_st.tower")


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric field: ``low`` / ``high`` bounds (None = unbounded), always finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts) or "finite"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_1 = Range(1)
SHARE = Range(0, 1, high_open=True)


def config_field(default: Any, source: str, help: str = "", valid: Range | None = None) -> Any:
    """A config field with its source, a help line for ``--help`` and, for numbers, its valid range."""
    metadata = {"source": source, "help": help, "valid": valid}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


_f = config_field  # the short name recipe modules use (`from mm_st.training.config import config_field as _f`)
# The hooks a recipe config must define (abstract in RecipeConfig), and what each says. A stage's config defines the
# data hooks; StageConfig (mm_st.training.stage) and MultiStageConfig (mm_st.training.multistage) define run and plan_lines.
DATA_HOOKS = {"sources": "where its data comes from", "load_datasets": "how its data is read"}
REQUIRED_HOOKS = {**DATA_HOOKS,
                  "run": "how it trains: derive from mm_st.training.stage.StageConfig (one stage) or "
                         "mm_st.training.multistage.MultiStageConfig (several)",
                  "plan_lines": "what --dry-run prints: StageConfig and MultiStageConfig define it"}


@dataclass(frozen=True)
class StageContext:
    """What a recipe's :meth:`RecipeConfig.prepare` hook may use of the running stage, and nothing else of it."""

    output_dir: Path
    work_dir: Callable[[str], Path]  # a folder or file of this run's own, recorded: only it is ever removed
    load_model: Callable[[str], Any]  # another model in the recipe's format (e.g. mmE5's mining model)


@dataclass
class RecipeConfig(ABC):
    """Fields shared by every recipe; subclasses set the paper's values as defaults and their data hooks.

    A recipe must define :meth:`sources`, :meth:`load_datasets`, :meth:`run` and :meth:`plan_lines`
    (:data:`REQUIRED_HOOKS`; the last two come from :class:`~mm_st.training.stage.StageConfig`, a recipe of one stage,
    or :class:`~mm_st.training.multistage.MultiStageConfig`); a class that lacks one cannot be instantiated (a
    TypeError naming them). The other hooks have defaults.
    """

    recipe: ClassVar[str] = ""
    embedded_overrides: ClassVar[dict[str, Any]] = {}
    # Fields that name training data: with none of them and no model, the run is the embedded default.
    data_fields: ClassVar[tuple[str, ...]] = ("data", "image_root")
    # Print the held-out table after training (a recipe of several stages prints one table at its end instead).
    stage_table: ClassVar[bool] = True

    # model
    model: str | None = _f(None, "", "Hub id, local backbone directory, or a saved model folder (e.g. runs/x/model) "
                           "to continue from (default: the embedded tiny backbone)")
    family: str | None = _f(None, "mm_st.templates", "backbone family (detected from the config when unset)")
    tiny_family: str = _f("llava_next", EMBEDDED, "family of the embedded tiny backbone, or a pretrained one: "
                          "'fast_vlm_lite0' = ImageNet EfficientNet-Lite0 tower + tiny random LM, 'fast_vlm_smollm2' = "
                          "the same tower + SmolLM2-135M-Instruct (mm_st.real_vision)")
    prompt_format: str = _f("train", "mm_st.templates.TRAIN_RECIPES", "'train' (reference training text) or 'inference'")
    dtype: str = _f("auto", "mm_st", "auto = bfloat16 on a GPU that supports it, else float32")
    # data
    data: str | None = _f(None, "", "training data: Hub id, local directory or file (default: embedded emoji data)")
    data_configs: list[str] = _f([], "", "dataset configs (subsets) to train on")
    data_split: str = _f("original", "", "split of the training data")
    image_root: str | None = _f(None, "", "directory the data's image paths are relative to")
    on_missing: str = _f("error", "mm_st", "rows whose image is missing or unreadable: 'error' or 'skip' (dropped, "
                         "counted per dataset)")
    num_negatives: int = _f(0, "", "hard-negative columns per row", NON_NEGATIVE)
    max_rows_per_dataset: int | None = _f(None, "mm_st", "cap each dataset (for smoke runs)", AT_LEAST_1)
    batch_mixing: str = _f("mixed", "", "'mixed' (one shuffled concatenation) or 'per_dataset' (each batch from one dataset)")
    # loss
    temperature: float = _f(0.02, "", "InfoNCE temperature", POSITIVE)
    hard_negative_scope: str = _f("shared", "", "'shared' (every query sees every negative) or 'own'")
    mask_duplicates: bool = _f(False, "paper code: no masking (mm_st option)", "drop duplicates of the positive from the softmax")
    gather_across_devices: bool = _f(True, "", "cross-device negatives")
    # adapter
    adapter: str = _f("lora", "", "'lora', 'dora' or 'none' (full weights)")
    lora_r: int = _f(8, "", "adapter rank", AT_LEAST_1)
    lora_alpha: int = _f(16, "", "adapter alpha", POSITIVE)
    lora_dropout: float = _f(0.05, "", "adapter dropout", SHARE)
    lora_target_modules: str = _f("all-linear", "", "peft target_modules: 'all-linear', a regex, or comma-separated names")
    lora_init: str = _f("default", "peft", "adapter initialisation: 'default' (B = 0) or 'gaussian'")
    vision_tower: str = _f("train", "transformers default (every weight trains)", VISION_TOWER_HELP)
    quantization: str = _f("none", "", "'4bit' = QLoRA (needs CUDA and bitsandbytes; plain LoRA otherwise, logged)")
    # optimisation
    learning_rate: float = _f(2e-5, "", "peak learning rate", POSITIVE)
    num_train_epochs: float = _f(1.0, "", "epochs (ignored when max_steps > 0)", POSITIVE)
    max_steps: int = _f(-1, "", "optimizer steps (-1 = from epochs)", Range(-1))
    warmup: float = _f(0.0, "", "linear warm-up: steps (>= 1) or a share of the steps (< 1)", NON_NEGATIVE)
    max_grad_norm: float = _f(1.0, "transformers TrainingArguments default", "gradient clipping norm (0 = no clipping)",
                              NON_NEGATIVE)
    lr_scheduler_type: str = _f("linear", "", "transformers scheduler name")
    weight_decay: float = _f(0.0, "", "AdamW weight decay", NON_NEGATIVE)
    global_batch_size: int = _f(64, "", "queries per optimizer step over all processes (all are in-batch negatives)",
                                AT_LEAST_1)
    mini_batch_size: int = _f(0, "mm_st", "GradCache mini-batch (0 = no GradCache); lower = less memory", NON_NEGATIVE)
    max_length: int | None = _f(None, "", "token limit per input (images are never cut)", AT_LEAST_1)
    max_text_tokens: int | None = _f(None, "", "cut each training text to this many tokens before the prompt is added",
                                     AT_LEAST_1)
    seed: int = _f(42, "transformers TrainingArguments default", "seed", NON_NEGATIVE)
    # evaluation and output
    evaluate: bool = _f(True, "mm_st", "evaluate before and after training (and every eval_steps)")
    eval_data: str | None = _f(None, EMBEDDED, "XTD-layout directory to evaluate on (embedded: held-out emoji)")
    eval_languages: list[str] = _f(["en", "es", "it", "ko", "pl", "ru", "tr", "zh"], "XTD10 languages", "XTD languages")
    eval_steps: int = _f(0, "mm_st", "evaluate every N steps (0 = before and after training only)", NON_NEGATIVE)
    output_dir: str = _f("", "mm_st", "where the run writes (default runs/<recipe>)")
    save_steps: int = _f(500, "mm_st", "checkpoint every N steps (resume after a crash)", AT_LEAST_1)
    save_total_limit: int | None = _f(2, "mm_st", "checkpoints kept", AT_LEAST_1)
    logging_steps: int = _f(10, "mm_st", "log every N steps", AT_LEAST_1)
    resume: str = _f("auto", "mm_st", "'auto' (continue from the last checkpoint if any), 'always', 'never' (start over: "
                     "removes only what an earlier run in the output folder wrote)")
    report_to: list[str] = _f(["none"], "transformers", "tensorboard, wandb, ... (passed to the trainer)")
    threads: int = _f(0, "mm_st", "torch CPU threads (0 = torch's default)", NON_NEGATIVE)
    dataloader_num_workers: int = _f(0, "transformers", "data loader workers", NON_NEGATIVE)
    # publishing (mm_st.hub): after training, push <output_dir>/model with a model card
    push_to_hub: str | None = _f(None, "mm_st", "Hub repo id (org/name) to push the trained model to (token: HF_TOKEN "
                                 "or `hf auth login`; adapter only when the base model is on the Hub, else merged)")
    private: bool = _f(False, "mm_st", "create the Hub repo private")
    merge_adapter: bool = _f(False, "mm_st", "push merged full weights instead of the adapter")
    hub_base_model: str | None = _f(None, "mm_st", "Hub id of the base model when --model is a local copy of it "
                                    "(the pushed adapter points there)")

    def __new__(cls, *args: Any, **kwargs: Any) -> "RecipeConfig":
        missing = [name for name in REQUIRED_HOOKS if name in getattr(cls, "__abstractmethods__", ())]
        if missing:
            raise TypeError(f"{cls.__name__} is not a complete recipe config: it does not define "
                            + ", ".join(f"{name}() ({REQUIRED_HOOKS[name]})" for name in missing)
                            + "; every recipe config defines " + ", ".join(f"{name}()" for name in REQUIRED_HOOKS) + ".")
        return super().__new__(cls)

    @classmethod
    def embedded_default(cls, **values: Any) -> "RecipeConfig":
        """The embedded default (tiny backbone, bundled emoji data, CPU-sized) with ``values`` on top."""
        config = cls(**{**embedded_values(cls, values), **values})
        config.check()
        return config

    @property
    def embedded(self) -> bool:
        """Whether this run uses the embedded tiny backbone and bundled data."""
        return self.model is None and all(getattr(self, name) is None for name in self.data_fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def adapter_config(self) -> dict[str, Any] | None:
        """``build_model(adapter=...)`` arguments (a LoraConfig dict), or None for full weights."""
        if self.adapter == "none":
            return None
        targets = self.lora_target_modules
        if "," in targets:
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        config = {"r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
                  "target_modules": targets, "use_dora": self.adapter == "dora"}
        if self.lora_init == "gaussian":
            config["init_lora_weights"] = "gaussian"
        return config

    # -- checks ----------------------------------------------------------------------------------

    def tower_mode(self) -> str:
        """What training does to the image tower: ``vision_tower``, except that ``lora`` with ``adapter='none'`` trains the
        tower with full weights like the language model (LoRA on the tower alone would leave a saved model that keeps
        the adapter only)."""
        return "train" if self.vision_tower == "lora" and self.adapter == "none" else self.vision_tower

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field of the first invalid or inconsistent value. Pure (reads no file, network
        or environment), so it runs when the config is built; a recipe adds its own (``super().validate()``)."""
        from transformers.trainer_utils import SchedulerType

        from mm_st import tower

        choices = {"adapter": ADAPTERS, "vision_tower": tower.MODES, "batch_mixing": BATCH_MIXING, "resume": RESUME, "dtype": DTYPES,
                   "prompt_format": templates.FORMATS, "hard_negative_scope": ("shared", "own"),
                   "quantization": ("none", "4bit"), "lora_init": ("default", "gaussian"), "on_missing": ON_MISSING,
                   "lr_scheduler_type": tuple(s.value for s in SchedulerType)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{self.recipe} config: {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}.")
        for f in dataclasses.fields(self):
            valid, value = field_range(f), getattr(self, f.name)
            if valid is not None and value is not None and value not in valid:
                raise ValueError(f"{self.recipe} config: {f.name} must be {valid}, got {value!r}.")
        if self.max_steps == 0:
            raise ValueError(f"{self.recipe} config: max_steps must be -1 (from num_train_epochs) or >= 1, got 0.")
        if self.global_batch_size < 2 and self.negatives_per_row() == 0:
            raise ValueError(f"{self.recipe} config: global_batch_size 1 with no hard negatives ({self.why_no_negatives()}) "
                             "gives each query no negative at all (loss 0, nothing learnt); use a batch of >= 2.")
        if self.warmup >= 1 and not float(self.warmup).is_integer():
            raise ValueError(f"{self.recipe} config: warmup must be a share < 1 or a whole number of steps, got {self.warmup!r}.")
        if self.push_to_hub or self.hub_base_model:
            from mm_st.hub import PushError, check_repo_id

            try:  # a repo id that is not org/name fails now, not after hours of training
                for repo_id in (self.hub_base_model, self.push_to_hub):
                    if repo_id:
                        check_repo_id(repo_id)
            except PushError as exc:
                raise ValueError(f"{self.recipe} config: push_to_hub: {exc}") from None
        given = [name for name in self.data_fields if getattr(self, name) is not None]
        if self.model is None and given:
            raise ValueError(f"{self.recipe} config: --{given[0].replace('_', '-')} is set but --model is not; give the "
                             "backbone to train (a Hub id or local directory). The embedded tiny random backbone is only "
                             "used when neither a model nor training data is given.")

    def check(self) -> None:
        """The pre-flight check of a run or a dry run: :meth:`validate` (fields may have changed since the config was
        built), then what needs this machine: a token to push with. The data's paths and layouts are checked by
        :meth:`check_sources` once the plan has resolved them."""
        self.validate()
        if self.push_to_hub:
            from mm_st.hub import PushError, hub_token

            try:  # before training: no token fails now, not after hours
                hub_token()
            except PushError as exc:
                raise ValueError(f"{self.recipe} config: push_to_hub: {exc}") from None

    def negatives_per_row(self) -> int:
        """Hard negatives each training row carries (0: the batch's other rows are the only negatives)."""
        return self.num_negatives

    def why_no_negatives(self) -> str:
        """Why :meth:`negatives_per_row` is 0, for the error that refuses a batch of 1 without negatives."""
        return "num_negatives 0"

    # -- what differs between recipes: data, preparation, plan ----------------------------------

    @abstractmethod
    def sources(self, output_dir: Path, write: bool = True) -> "Sources":
        """Where the run reads from; with the embedded default, the emoji files under ``output_dir/data``
        (written when ``write``)."""

    def check_sources(self, sources: "Sources") -> None:
        """Fail early on a missing local file or directory, naming it."""
        for what, value in sources.directories().items():
            if value is not None and not Path(value).is_dir():
                raise FileNotFoundError(f"{self.recipe} config: {what} {value!r} is not a directory.")

    @abstractmethod
    def load_datasets(self, sources: "Sources") -> dict[str, "datasets.Dataset"]:
        """One training dataset per source dataset (before :meth:`prepare`), capped by ``max_rows_per_dataset``."""

    def source_lines(self, sources: "Sources") -> list[str]:
        """What the plan says the run reads."""
        return [f"reads: {sources.data}" + (f", images under {sources.image_root}" if sources.image_root else "")]

    def plan_notes(self, named: dict[str, "datasets.Dataset"]) -> list[str]:
        """Lines the plan prints about this recipe's preparation; raises for data it cannot prepare."""
        return []

    def prepare(self, model: Any, named: dict[str, "datasets.Dataset"],
                context: StageContext) -> dict[str, "datasets.Dataset"]:
        """The training datasets from the loaded ones, with the model at hand (mining, cutting texts); ``context``
        is what the hook may use of the running stage (its own folders, another model)."""
        from mm_st.training.data import cut_texts

        if self.max_text_tokens:
            tokenizer = getattr(model[0].processor, "tokenizer", model[0].processor)
            named = cut_texts(named, tokenizer, self.max_text_tokens)
        return named

    def evaluator(self, sources: "Sources", results_dir: Path) -> Any:
        """The held-out evaluation (an ST evaluator with ``check``, ``table``, ``cache_key``, ``curve_metric``), or
        None: XTD text->image retrieval on ``eval_data`` (the embedded default's held-out emoji)."""
        if not sources.eval_data:
            return None
        from mm_st.training.evaluators import XTDEvaluator

        return XTDEvaluator(sources.eval_data, self.eval_languages, results_dir, f"mm_st-{self.recipe}")

    def earlier_before_scores(self) -> list[Path]:
        """Other runs' ``eval-before.json`` whose untrained scores this run may reuse when model and evaluation match
        (a later stage that starts from the same base model)."""
        return []

    def model_options(self) -> dict[str, Any]:
        """Extra ``build_model`` arguments of this recipe (e.g. MM-Embed's pooling and attention)."""
        return {}

    def loss_options(self) -> dict[str, Any]:
        """Extra ``MultimodalInfoNCELoss`` arguments of this recipe (e.g. MM-Embed's ``modality_weight``)."""
        return {}

    def batch_sampler(self, plan: Any) -> Any:
        """sentence-transformers' ``multi_dataset_batch_sampler`` for ``batch_mixing='per_dataset'``: proportional to
        the datasets' sizes (a recipe may give a sampler class or factory, e.g. VLM2Vec-V2's sub-batches)."""
        from sentence_transformers.base.sampler import MultiDatasetBatchSamplers

        return MultiDatasetBatchSamplers.PROPORTIONAL

    def batch_description(self) -> str:
        """How the plan says batches are formed (after ``batches ``)."""
        return "mixed across datasets" if self.batch_mixing == "mixed" else "one dataset each"

    def column_tasks(self) -> dict[str, str]:
        """sentence-transformers' ``task`` per training column (``router_mapping``), for templates that render
        queries and documents differently; {} leaves it unset, as the papers' training code does."""
        return {}

    @abstractmethod
    def run(self) -> Any:
        """Train: one stage (:class:`~mm_st.training.stage.StageConfig`) or the recipe's stages in order."""

    @abstractmethod
    def plan_lines(self) -> list[str]:
        """What ``--dry-run`` prints: the checked plan (the folder is left as it was when a check fails)."""

    def inputs(self) -> dict[str, str]:
        """The run's inputs (flag -> path), which starting over must never remove."""
        names = ("model", *self.data_fields, "eval_data", *(f for f in ("mining_model",) if hasattr(self, f)))
        return {"--" + name.replace("_", "-"): getattr(self, name) for name in names if getattr(self, name, None)}


def field_range(f: dataclasses.Field) -> Range | None:
    """A numeric field's valid range: its own, else the one :class:`RecipeConfig` gives the field of that name
    (a recipe overriding a default keeps the shared range)."""
    return f.metadata.get("valid") or _BASE_RANGES.get(f.name)


_BASE_RANGES = {f.name: f.metadata["valid"] for f in dataclasses.fields(RecipeConfig) if f.metadata.get("valid")}


# -- files and flags -------------------------------------------------------------------------------


def embedded_values(cls: type[RecipeConfig], explicit: dict[str, Any]) -> dict[str, Any]:
    """The embedded default's values: the recipe's, then what its backbone (``tiny_family``) sets."""
    from mm_st.training.embedded import backbone_overrides

    values = dict(cls.embedded_overrides)
    tiny = explicit.get("tiny_family") or values.get("tiny_family") or cls.__dataclass_fields__["tiny_family"].default
    return {**values, **backbone_overrides(tiny)}


def _hints(cls: type[RecipeConfig]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(cls: type[RecipeConfig], name: str, value: Any, where: str) -> Any:
    """A file or flag value converted to the field's type; errors name the field and where it came from."""
    hint = _hints(cls)[name]
    optional = type(None) in typing.get_args(hint)
    base = [a for a in typing.get_args(hint) if a is not type(None)][0] if optional else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise ValueError(f"{where}: {name} cannot be empty.")
    if base in (int, float) and isinstance(value, bool):  # YAML `true` is not the number 1
        raise ValueError(f"{where}: {name}={value!r} is a boolean, not a valid {base.__name__}.")
    try:
        if typing.get_origin(base) is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(v).strip() for v in items if str(v).strip()]
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes"):
                return True
            if str(value).lower() in ("false", "0", "no"):
                return False
            raise ValueError(value)
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        if base is int and isinstance(value, str):
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        if base is str and not isinstance(value, str):
            raise TypeError(value)
        return base(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where}: {name}={value!r} is not a valid {getattr(base, '__name__', base)}.") from None


def read_config_file(cls: type[RecipeConfig], path: str | os.PathLike) -> dict[str, Any]:
    """Field values from a YAML or JSON file; unknown keys, another recipe's config, an empty file and
    malformed YAML/JSON are errors naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} not found.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            values = json.loads(text) if text.strip() else None
        else:
            import yaml

            values = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} line {exc.lineno}: not valid JSON ({exc.msg}).") from None
    except Exception as exc:  # yaml.YAMLError
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{str(path)!r}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc}).") from None
    if values is None:
        raise ValueError(f"{str(path)!r} is empty; a config file holds `recipe: {cls.recipe}` and the fields to set.")
    if not isinstance(values, dict):
        raise ValueError(f"{str(path)!r}: expected a mapping of config fields, got {type(values).__name__}.")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    if values.pop("recipe", cls.recipe) != cls.recipe:
        raise ValueError(f"{str(path)!r} is a config for another recipe, not {cls.recipe!r}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{str(path)!r}: unknown config field(s) {unknown}. Known: {', '.join(sorted(names))}.")
    return {k: _coerce(cls, k, v, repr(str(path))) for k, v in values.items()}


def add_arguments(parser: argparse.ArgumentParser, cls: type[RecipeConfig]) -> None:
    """One ``--flag`` per config field (``--no-flag`` for booleans), defaulting to 'not given'."""
    parser.add_argument("--config", help="YAML/JSON file of config fields (flags override it)")
    parser.add_argument("--dry-run", action="store_true", help="resolve and print the plan, check it, train nothing")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} [default: {f.default if f.default is not dataclasses.MISSING else f.default_factory()}"
        if field_range(f) is not None:
            help_text += f"; valid: {field_range(f)}"
        help_text += f"; {f.metadata['source']}]" if f.metadata.get("source") else "]"
        help_text = help_text.replace("%", "%%")
        if _hints(cls)[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def config_from_args(cls: type[RecipeConfig], args: argparse.Namespace) -> RecipeConfig:
    """Defaults < embedded default (no model and no training data) < ``--config`` file < flags."""
    explicit = read_config_file(cls, args.config) if getattr(args, "config", None) else {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            explicit[f.name] = _coerce(cls, f.name, value, "--" + f.name.replace("_", "-"))
    embedded = all(explicit.get(name) is None for name in ("model", *cls.data_fields))
    values = {**(embedded_values(cls, explicit) if embedded else {}), **explicit}
    config = cls(**values)
    config.check()
    return config


def load_config(cls: type[RecipeConfig], argv: list[str] | None = None) -> RecipeConfig:
    """Parse ``argv`` (flags and ``--config``) into a checked config of class ``cls``."""
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv or []))


def describe(config: RecipeConfig) -> list[str]:
    """``field = value  (source)`` lines, the sources of values that differ from the class default marked."""
    lines = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        source = f.metadata.get("source", "")
        if value != default:
            source = EMBEDDED if config.embedded and f.name in config.embedded_overrides else "set for this run"
        lines.append(f"  {f.name} = {value!r}" + (f"   ({source})" if source else ""))
    return lines


def card_record(config: RecipeConfig) -> dict[str, Any]:
    """What the model card says about this run (:data:`mm_st.hub.CARD_RECORD`, saved next to the model, so the card
    is rendered without training code): the :func:`describe` lines, local paths replaced by a marker, and the
    languages of the embedded data."""
    from mm_st.hub import redact_paths
    from mm_st.training.embedded import LANGUAGES

    values = config.to_dict()
    shown = dataclasses.replace(config, **{k: v for k, v in redact_paths(values).items() if v != values[k]})
    return {"config_lines": describe(shown), "languages": list(LANGUAGES) if config.embedded else []}
