"""Recipe configs: one dataclass per paper recipe, every default the paper's (or its code's) value.

Each field names its source in ``field(metadata={"source": ...})``; :func:`describe` prints them.
Values come, lowest first, from the class defaults, the embedded default (only when neither
``model`` nor ``data`` is given: a tiny backbone and the bundled emoji data, sized for a CPU), a
YAML/JSON file (``--config``) and command-line flags.

Example:
    >>> from mm_st.training import E5VConfig, load_config
    >>> E5VConfig().temperature, E5VConfig().global_batch_size
    (0.05, 768)
    >>> config = load_config(E5VConfig, ["--learning-rate", "1e-3"])
    >>> config.learning_rate, config.embedded
    (0.001, True)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mm_st import templates
from mm_st.data.converters import MMEB_TRAIN_CONFIGS, MME5_SYNTHETIC_CONFIGS, MMEB_TRAIN_REPO, MME5_SYNTHETIC_REPO

ADAPTERS = ("lora", "dora", "none")
BATCH_MIXING = ("mixed", "per_dataset")
RESUME = ("auto", "always", "never")
DTYPES = ("auto", "float32", "bfloat16", "float16", "float64")
EMBEDDED = "embedded default (tiny backbone, bundled emoji data, CPU-sized)"
# What every embedded default changes: CPU-sized batches without GradCache, a larger learning rate, and full
# weights (a random tiny backbone has nothing for an adapter to adapt: DoRA r=8 on the tiny VLM2Vec run stayed
# at chance); --adapter dora etc. runs the paper's adapter.
EMBEDDED_COMMON = {"adapter": "none", "mini_batch_size": 0, "learning_rate": 1e-3, "warmup": 0.1, "save_steps": 50,
                   "logging_steps": 5, "threads": 1}


def _f(default: Any, source: str, help: str = "") -> Any:
    """A config field with its source (and a help line for ``--help``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"source": source, "help": help})
    return field(default=default, metadata={"source": source, "help": help})


@dataclass
class RecipeConfig:
    """Fields shared by every recipe; subclasses set the paper's values as defaults."""

    recipe: ClassVar[str] = ""
    embedded_overrides: ClassVar[dict[str, Any]] = {}

    # model
    model: str | None = _f(None, "", "Hub id or local directory of the backbone (default: the embedded tiny one)")
    family: str | None = _f(None, "mm_st.templates", "backbone family (detected from the config when unset)")
    tiny_family: str = _f("llava_next", EMBEDDED, "family of the embedded tiny backbone")
    prompt_format: str = _f("train", "mm_st.templates.TRAIN_RECIPES", "'train' (reference training text) or 'inference'")
    dtype: str = _f("auto", "mm_st", "auto = bfloat16 on a GPU that supports it, else float32")
    # data
    data: str | None = _f(None, "", "training data: Hub id, local directory or file (default: embedded emoji data)")
    data_configs: list[str] = _f([], "", "dataset configs (subsets) to train on")
    data_split: str = _f("original", "", "split of the training data")
    image_root: str | None = _f(None, "", "directory the data's image paths are relative to")
    num_negatives: int = _f(0, "", "hard-negative columns per row")
    max_rows_per_dataset: int | None = _f(None, "mm_st", "cap each dataset (for smoke runs)")
    batch_mixing: str = _f("mixed", "", "'mixed' (one shuffled concatenation) or 'per_dataset' (each batch from one dataset)")
    # loss
    temperature: float = _f(0.02, "", "InfoNCE temperature")
    hard_negative_scope: str = _f("shared", "", "'shared' (every query sees every negative) or 'own'")
    mask_duplicates: bool = _f(False, "paper code: no masking (mm_st option)", "drop duplicates of the positive from the softmax")
    gather_across_devices: bool = _f(True, "", "cross-device negatives")
    # adapter
    adapter: str = _f("lora", "", "'lora', 'dora' or 'none' (full weights)")
    lora_r: int = _f(8, "", "adapter rank")
    lora_alpha: int = _f(16, "", "adapter alpha")
    lora_dropout: float = _f(0.05, "", "adapter dropout")
    lora_target_modules: str = _f("all-linear", "", "peft target_modules: 'all-linear', a regex, or comma-separated names")
    lora_init: str = _f("default", "peft", "adapter initialisation: 'default' (B = 0) or 'gaussian'")
    quantization: str = _f("none", "", "'4bit' = QLoRA (needs CUDA and bitsandbytes; plain LoRA otherwise, logged)")
    # optimisation
    learning_rate: float = _f(2e-5, "", "peak learning rate")
    num_train_epochs: float = _f(1.0, "", "epochs (ignored when max_steps > 0)")
    max_steps: int = _f(-1, "", "optimizer steps (-1 = from epochs)")
    warmup: float = _f(0.0, "", "linear warm-up: steps (>= 1) or a share of the steps (< 1)")
    max_grad_norm: float = _f(1.0, "transformers TrainingArguments default", "gradient clipping norm")
    lr_scheduler_type: str = _f("linear", "", "transformers scheduler name")
    weight_decay: float = _f(0.0, "", "AdamW weight decay")
    global_batch_size: int = _f(64, "", "queries per optimizer step over all processes (all are in-batch negatives)")
    mini_batch_size: int = _f(0, "mm_st", "GradCache mini-batch (0 = no GradCache); lower = less memory")
    max_length: int | None = _f(None, "", "token limit per input (images are never cut)")
    max_text_tokens: int | None = _f(None, "", "cut each training text to this many tokens before the prompt is added")
    seed: int = _f(42, "transformers TrainingArguments default", "seed")
    # evaluation and output
    evaluate: bool = _f(True, "mm_st", "evaluate before and after training (and every eval_steps)")
    eval_data: str | None = _f(None, EMBEDDED, "XTD-layout directory to evaluate on (embedded: held-out emoji)")
    eval_languages: list[str] = _f(["en", "es", "it", "ko", "pl", "ru", "tr", "zh"], "XTD10 languages", "XTD languages")
    eval_steps: int = _f(0, "mm_st", "evaluate every N steps (0 = before and after training only)")
    output_dir: str = _f("", "mm_st", "where the run writes (default runs/<recipe>)")
    save_steps: int = _f(500, "mm_st", "checkpoint every N steps (resume after a crash)")
    save_total_limit: int | None = _f(2, "mm_st", "checkpoints kept")
    logging_steps: int = _f(10, "mm_st", "log every N steps")
    resume: str = _f("auto", "mm_st", "'auto' (continue from the last checkpoint if any), 'always', 'never'")
    report_to: list[str] = _f(["none"], "transformers", "tensorboard, wandb, ... (passed to the trainer)")
    threads: int = _f(0, "mm_st", "torch CPU threads (0 = torch's default)")
    dataloader_num_workers: int = _f(0, "transformers", "data loader workers")
    # publishing (mm_st.hub): after training, push <output_dir>/model with a model card
    push_to_hub: str | None = _f(None, "mm_st", "Hub repo id (org/name) to push the trained model to (token: HF_TOKEN "
                                 "or `hf auth login`; adapter only when the base model is on the Hub, else merged)")
    private: bool = _f(False, "mm_st", "create the Hub repo private")
    merge_adapter: bool = _f(False, "mm_st", "push merged full weights instead of the adapter")
    hub_base_model: str | None = _f(None, "mm_st", "Hub id of the base model when --model is a local copy of it "
                                    "(the pushed adapter points there)")

    @classmethod
    def embedded_default(cls, **values: Any) -> "RecipeConfig":
        """The embedded default (tiny backbone, bundled emoji data, CPU-sized) with ``values`` on top."""
        config = cls(**{**cls.embedded_overrides, **values})
        config.check()
        return config

    @property
    def embedded(self) -> bool:
        """Whether this run uses the embedded tiny backbone and bundled data."""
        return self.model is None and self.data is None

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

    def check(self) -> None:
        """Raise ValueError naming the field of the first inconsistent value."""
        choices = {"adapter": ADAPTERS, "batch_mixing": BATCH_MIXING, "resume": RESUME, "dtype": DTYPES,
                   "prompt_format": templates.FORMATS, "hard_negative_scope": ("shared", "own"),
                   "quantization": ("none", "4bit"), "lora_init": ("default", "gaussian")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{self.recipe} config: {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}.")
        positive = ("temperature", "learning_rate", "global_batch_size", "save_steps", "logging_steps", "lora_r")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{self.recipe} config: {name} must be > 0, got {getattr(self, name)!r}.")
        for name in ("num_negatives", "mini_batch_size", "eval_steps", "threads", "warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"{self.recipe} config: {name} must be >= 0, got {getattr(self, name)!r}.")
        if self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise ValueError(f"{self.recipe} config: set max_steps > 0 or num_train_epochs > 0.")
        if self.push_to_hub or self.hub_base_model:
            from mm_st.hub import PushError, check_push_target, check_repo_id

            try:  # before training: a repo id that is not org/name, or no token, fails now, not after hours
                if self.hub_base_model:
                    check_repo_id(self.hub_base_model)
                if self.push_to_hub:
                    check_push_target(self.push_to_hub)
            except PushError as exc:
                raise ValueError(f"{self.recipe} config: push_to_hub: {exc}") from None


# -- the three recipes ---------------------------------------------------------------------------

E5V = templates.RECIPE_FACTS["e5v"]
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

    model: str | None = _f(None, "E5-V base: lmms-lab/llama3-llava-next-8b (HF layout: llava-hf/llama3-llava-next-8b-hf)")
    train_template: str = _f("inference", "paper-facts: ft_llm.py trains on a de-tokenised template; inference uses the real one",
                             "'inference' (the real chat template) or 'upstream' (ft_llm.py's de-tokenised text)")
    prompt_format: str = _f("inference", "mm_st default; 'train' = ft_llm.py's de-tokenised template (--train-template upstream)",
                            "'inference' or 'train' (= --train-template upstream)")
    data: str | None = _f(None, "E5-V run.sh: data/nli_for_simcse.csv (princeton-nlp/datasets-for-simcse, 275K triplets)")
    num_negatives: int = _f(1, "E5-V: the contradiction is the hard negative")
    temperature: float = _f(E5V["temperature"], E5V_SRC + " (cosine / 0.05)")
    lora_r: int = _f(E5V["lora_r"], E5V_SRC)
    lora_alpha: int = _f(E5V["lora_alpha"], E5V_SRC)
    lora_dropout: float = _f(E5V["lora_dropout"], E5V_SRC)
    lora_target_modules: str = _f(E5V_LM_ONLY, E5V_SRC + ": q,k,v,o,gate,up,down of the language model")
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
        if self.train_template not in ("inference", "upstream"):
            raise ValueError(f"e5v config: train_template={self.train_template!r} is not one of inference, upstream.")
        if self.train_template == "upstream":
            self.prompt_format = "train"


VLM2VEC_SRC = "VLM2Vec (arXiv 2410.05160) v1 and TIGER-AI-Lab/VLM2Vec"
VLM2VEC_LLAVA = "TIGER-AI-Lab/VLM2Vec scripts/aws/llava16-mistral-lora8-bs1024-step2k.sh @fa630fd"
V1_TARGETS = "qkv_proj,o_proj,gate_up_proj,down_proj,k_proj,q_proj,out_proj,v_proj"
_VLM = templates.RECIPE_FACTS["vlm2vec"]


@dataclass
class VLM2VecConfig(RecipeConfig):
    """VLM2Vec v1 on MMEB-train: shared in-batch negatives, tau 0.02, LoRA, GradCache for the large batch."""

    recipe: ClassVar[str] = "vlm2vec"
    embedded_overrides: ClassVar[dict[str, Any]] = {
        **EMBEDDED_COMMON, "global_batch_size": 32, "max_steps": 150, "max_length": None, "max_rows_per_dataset": None,
        "data_configs": ["ImageNet_1K", "MSCOCO_t2i", "MSCOCO_i2t"],
    }

    model: str | None = _f(None, VLM2VEC_SRC + ": TIGER-Lab/VLM2Vec-LLaVa-Next's base, llava-hf/llava-v1.6-mistral-7b-hf")
    data: str | None = _f(None, VLM2VEC_SRC + ": " + MMEB_TRAIN_REPO)
    data_configs: list[str] = _f(list(MMEB_TRAIN_CONFIGS), VLM2VEC_SRC + ": the 20 MMEB-train datasets")
    max_rows_per_dataset: int | None = _f(50000, VLM2VEC_LLAVA + ": mmeb20_sub50k (50K rows per dataset)")
    num_negatives: int = _f(0, "VLM2Vec v1 README: in-batch negatives only (HEAD's collator drops hard negatives)")
    temperature: float = _f(_VLM["temperature"], VLM2VEC_LLAVA)
    adapter: str = _f("dora", "TIGER-AI-Lab/VLM2Vec src/model.py: LoraConfig(use_dora=True, init_lora_weights='gaussian')")
    lora_r: int = _f(_VLM["lora_r"], VLM2VEC_LLAVA + " (--lora_r 8; the README's example uses 16)")
    lora_alpha: int = _f(_VLM["lora_alpha"], "TIGER-AI-Lab/VLM2Vec src/arguments.py lora_alpha=64")
    lora_dropout: float = _f(0.1, "TIGER-AI-Lab/VLM2Vec src/arguments.py lora_dropout=0.1")
    lora_target_modules: str = _f(V1_TARGETS, "VLM2Vec v1 src/arguments.py (suffixes, vision tower included)")
    lora_init: str = _f("gaussian", "TIGER-AI-Lab/VLM2Vec src/model.py init_lora_weights='gaussian'")
    learning_rate: float = _f(_VLM["learning_rate"], VLM2VEC_LLAVA)
    max_steps: int = _f(_VLM["steps"], VLM2VEC_LLAVA)
    warmup: float = _f(100, VLM2VEC_LLAVA + " (the README's example: 200)")
    global_batch_size: int = _f(_VLM["batch_size"], VLM2VEC_LLAVA + ": 128 per GPU x 8 GPUs, no accumulation")
    mini_batch_size: int = _f(2, VLM2VEC_LLAVA + ": GradCache q/p chunks of 2")
    max_length: int | None = _f(256, VLM2VEC_LLAVA + ": --max_len 256")


MME5_SRC = "mmE5 (arXiv 2502.08468) and haon-chen/mmE5 scripts/train"
_MME5 = templates.RECIPE_FACTS["mme5"]


@dataclass
class MME5Config(RecipeConfig):
    """mmE5: MMEB-train with negatives mined at rank 70 plus mmE5-synthetic; own-query negatives; DoRA."""

    recipe: ClassVar[str] = "mme5"
    embedded_overrides: ClassVar[dict[str, Any]] = {
        **EMBEDDED_COMMON, "tiny_family": "mllama", "global_batch_size": 16, "max_rows_per_dataset": 400,
        "data_configs": ["ImageNet_1K", "MSCOCO_t2i"], "synthetic_configs": ["Classification", "Retrieval"],
    }

    model: str | None = _f(None, MME5_SRC + ": meta-llama/Llama-3.2-11B-Vision")
    data: str | None = _f(None, MME5_SRC + ": " + MMEB_TRAIN_REPO)
    data_configs: list[str] = _f(list(MMEB_TRAIN_CONFIGS), MME5_SRC + ": the 20 MMEB-train datasets")
    synthetic_data: str | None = _f(None, MME5_SRC + ": " + MME5_SYNTHETIC_REPO, "mmE5-synthetic source (default: embedded)")
    synthetic_configs: list[str] = _f(list(MME5_SYNTHETIC_CONFIGS), MME5_SRC)
    synthetic_image_root: str | None = _f(None, MME5_SRC + ": laion_image_dir", "directory the synthetic data's image paths are relative to")
    synthetic_only: bool = _f(False, MME5_SRC + ": the zero-shot setting trains on synthetic data only")
    mine_rank: int = _f(70, "mmE5 paper / issue #3: the candidate at rank 70",
                        "rank of the mined MMEB-train negative (0 = read the data's own negatives, e.g. "
                        "intfloat/mmE5-MMEB-hardneg)")
    mining_model: str | None = _f(None, "mmE5 mined with VLM2Vec-LoRA (remote code; released as intfloat/mmE5-MMEB-hardneg); "
                                  "default: the base model", "model that mines MMEB-train negatives")
    max_rows_per_dataset: int | None = _f(50000, MME5_SRC + ": --num_sample_per_subset 50000")
    num_negatives: int = _f(3, MME5_SRC + ": negative_ratio 3, padded by repeating the last")
    hard_negative_scope: str = _f("own", MME5_SRC + ": each negative against its own query")
    temperature: float = _f(_MME5["temperature"], MME5_SRC)
    adapter: str = _f("dora", MME5_SRC + ": DoRA (src/model.py use_dora=True)")
    lora_r: int = _f(_MME5["dora_r"], MME5_SRC + ": --lora_r 8")
    lora_alpha: int = _f(64, "haon-chen/mmE5 src/arguments.py lora_alpha=64")
    lora_dropout: float = _f(0.1, "haon-chen/mmE5 src/arguments.py lora_dropout=0.1")
    lora_target_modules: str = _f(V1_TARGETS, "haon-chen/mmE5 src/arguments.py (suffixes, vision tower included)")
    lora_init: str = _f("gaussian", "haon-chen/mmE5 src/model.py init_lora_weights='gaussian'")
    warmup: float = _f(0.05, MME5_SRC + ": --warmup_ratio 0.05")
    max_grad_norm: float = _f(5.0, MME5_SRC + ": --max_grad_norm 5.0")
    learning_rate: float = _f(_MME5["learning_rate"], MME5_SRC)
    num_train_epochs: float = _f(float(_MME5["epochs"]), MME5_SRC)
    global_batch_size: int = _f(128, MME5_SRC + ": 2 per GPU x 8 accumulation steps x 8 GPUs (GPU count not stated in "
                                 "train.sh: assumed 8); accumulation adds no in-batch negatives, mm_st uses GradCache")
    mini_batch_size: int = _f(2, MME5_SRC + ": 2 per GPU")
    max_length: int | None = _f(_MME5["max_length"], MME5_SRC)


CONFIGS: dict[str, type[RecipeConfig]] = {c.recipe: c for c in (E5VConfig, VLM2VecConfig, MME5Config)}


# -- files and flags -------------------------------------------------------------------------------


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
        return base(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name}={value!r} is not a valid {getattr(base, '__name__', base)}.") from None


def read_config_file(cls: type[RecipeConfig], path: str | os.PathLike) -> dict[str, Any]:
    """Field values from a YAML or JSON file; unknown keys are an error naming the key and file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} not found.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        values = json.loads(text)
    else:
        import yaml

        values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{str(path)!r}: expected a mapping of config fields, got {type(values).__name__}.")
    values = {k.replace("-", "_"): v for k, v in values.items()}
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
        help_text += f"; {f.metadata['source']}]" if f.metadata.get("source") else "]"
        help_text = help_text.replace("%", "%%")
        if _hints(cls)[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def config_from_args(cls: type[RecipeConfig], args: argparse.Namespace) -> RecipeConfig:
    """Defaults < embedded default (no model and no data) < ``--config`` file < flags."""
    explicit = read_config_file(cls, args.config) if getattr(args, "config", None) else {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            explicit[f.name] = _coerce(cls, f.name, value, "--" + f.name.replace("_", "-"))
    embedded = explicit.get("model") is None and explicit.get("data") is None
    values = {**(cls.embedded_overrides if embedded else {}), **explicit}
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
