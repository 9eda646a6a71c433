"""What to synthesize: tasks, modality combinations, languages, the image pool, and the seeded plan.

Every planned sample (:class:`PlannedSample`) fixes a task, a modality combination (query side ->
target side), a language and the real images it needs (query / positive / hard-negative image).
Planning is deterministic: sample ``i`` is drawn from its own RNG seeded with ``(seed, i)``, so the
same config always gives the same plan and the same ids, and raising ``num_samples`` only appends.

Defaults (documented approximations, NOT tables from the paper):

- Modality combinations: mmE5 uses "seven modality combinations" (the paper's figure shows T->I,
  I->T, IT->IT, ...; the exact seven are to be confirmed against the paper / ``intfloat/mmE5-synthetic``).
  The default set here follows the MMEB-train task types mmE5 targets: ``I->T``, ``IT->T`` (classification,
  VQA), ``T->I``, ``I->I``, ``IT->I``, ``IT->IT``, ``T->IT`` (retrieval). All configurable.
- Languages: mmE5 covers 93 languages, English-heavy. :data:`DEFAULT_LANGUAGE_WEIGHTS` gives English
  0.5 and spreads the other 0.5 evenly over 92 languages (:data:`LANGUAGES`); this approximates the
  paper's English-heavy setting, it is not the paper's per-language distribution.

Example:
    >>> from mm_st.synthesis import SynthesisConfig, plan_samples
    >>> config = SynthesisConfig(num_samples=3, languages={"en": 1.0}, image_source="mm_st:emoji", seed=0)
    >>> [(s.task, s.language) for s in plan_samples(config, pool_size=100)][:1]
    [('classification', 'en')]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("classification", "vqa", "retrieval")
# Export config name per task: the configs of intfloat/mmE5-synthetic.
TASK_CONFIG_NAMES = {"classification": "Classification", "vqa": "VQA", "retrieval": "Retrieval"}
COMBINATIONS = ("I->T", "IT->T", "T->I", "I->I", "IT->I", "IT->IT", "T->IT", "T->T")
DEFAULT_TASK_COMBINATIONS: dict[str, dict[str, float]] = {
    "classification": {"I->T": 0.5, "IT->T": 0.5},
    "vqa": {"IT->T": 1.0},
    "retrieval": {"T->I": 0.2, "I->T": 0.2, "IT->I": 0.15, "IT->IT": 0.15, "T->IT": 0.15, "I->I": 0.15},
}
DEFAULT_TASK_WEIGHTS = {"classification": 1 / 3, "vqa": 1 / 3, "retrieval": 1 / 3}

# ISO 639-1 code -> English name (English + 92 others: 93 languages).
LANGUAGES: dict[str, str] = {
    "en": "English", "af": "Afrikaans", "am": "Amharic", "ar": "Arabic", "as": "Assamese", "az": "Azerbaijani",
    "be": "Belarusian", "bg": "Bulgarian", "bn": "Bengali", "br": "Breton", "bs": "Bosnian", "ca": "Catalan",
    "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German", "el": "Greek", "eo": "Esperanto",
    "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "fy": "Western Frisian", "ga": "Irish", "gd": "Scottish Gaelic", "gl": "Galician", "gu": "Gujarati",
    "ha": "Hausa", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "jv": "Javanese", "ka": "Georgian",
    "kk": "Kazakh", "km": "Khmer", "kn": "Kannada", "ko": "Korean", "ku": "Kurdish", "ky": "Kyrgyz",
    "la": "Latin", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mg": "Malagasy", "mk": "Macedonian",
    "ml": "Malayalam", "mn": "Mongolian", "mr": "Marathi", "ms": "Malay", "my": "Burmese", "ne": "Nepali",
    "nl": "Dutch", "no": "Norwegian", "om": "Oromo", "or": "Odia", "pa": "Punjabi", "pl": "Polish",
    "ps": "Pashto", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sa": "Sanskrit", "sd": "Sindhi",
    "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian", "so": "Somali", "sq": "Albanian", "sr": "Serbian",
    "su": "Sundanese", "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "th": "Thai",
    "tl": "Tagalog", "tr": "Turkish", "ug": "Uyghur", "uk": "Ukrainian", "ur": "Urdu", "uz": "Uzbek",
    "vi": "Vietnamese", "xh": "Xhosa", "yi": "Yiddish", "zh": "Chinese",
}  # fmt: skip
DEFAULT_LANGUAGE_WEIGHTS = {code: (0.5 if code == "en" else 0.5 / (len(LANGUAGES) - 1)) for code in LANGUAGES}


def parse_combination(combination: str) -> tuple[str, str]:
    """``"IT->I"`` -> ``("IT", "I")`` (also accepts the arrow ``→``)."""
    query, sep, target = combination.replace("→", "->").partition("->")
    if not sep or query not in ("T", "I", "IT") or target not in ("T", "I", "IT"):
        raise ValueError(f"Bad modality combination {combination!r}: expected X->Y with X, Y in T, I, IT.")
    return query, target


def image_roles(combination: str) -> tuple[str, ...]:
    """Roles that carry a real image: query if the query side has I; positive and negative if the target side has."""
    query, target = parse_combination(combination)
    return tuple(r for r, side in (("query", query), ("positive", target), ("negative", target)) if "I" in side)


@dataclass
class SynthesisConfig:
    """Everything that fixes the plan (plus generation settings that do not change it).

    Args:
        num_samples: samples to plan.
        tasks: task -> sampling weight (any of ``classification``, ``vqa``, ``retrieval``).
        combinations: task -> {combination -> weight}; the combination is drawn given the task.
        languages: language code -> weight, or a list of codes (uniform). Names come from
            :data:`LANGUAGES` (unknown codes are used as they are).
        image_source: a local image directory, ``mm_st:emoji`` (bundled), a ``save_to_disk`` folder, or a
            Hub dataset id with an image column.
        image_column / image_split: for dataset sources.
        image_license: licence of the image source (written to the dataset card).
        seed: planning seed.
        num_negatives: hard negatives written per sample (the single-pass prompt writes one).
        max_attempts: generator calls per sample before it is recorded as rejected.
        image_only_text: the text of a target that is an image only (VLM2Vec's instruction).
    """

    num_samples: int = 1000
    tasks: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TASK_WEIGHTS))
    combinations: dict[str, dict[str, float]] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_TASK_COMBINATIONS)))
    languages: dict[str, float] | list[str] = field(default_factory=lambda: dict(DEFAULT_LANGUAGE_WEIGHTS))
    image_source: str = "mm_st:emoji"
    image_column: str = "image"
    image_split: str = "train"
    image_license: str = "unknown"
    seed: int = 0
    num_negatives: int = 1
    max_attempts: int = 3
    image_only_text: str = "Represent the given image."

    def __post_init__(self) -> None:
        if isinstance(self.languages, (list, tuple)):
            self.languages = {code: 1.0 for code in self.languages}
        for task in self.tasks:
            if task not in TASKS:
                raise ValueError(f"Unknown task {task!r}; known: {TASKS}.")
            if not self.combinations.get(task):
                raise ValueError(f"No modality combinations configured for task {task!r}.")
            for combination in self.combinations[task]:
                parse_combination(combination)
        for name, weights in (("tasks", self.tasks), ("languages", self.languages)):
            if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"{name} weights must be non-negative with a positive sum, got {weights}.")
        if self.num_negatives != 1:
            raise ValueError("The single-pass prompt writes exactly one hard negative (num_negatives=1).")

    def planning_dict(self) -> dict[str, Any]:
        """The fields that determine the plan (a restart must use the same)."""
        keys = ("num_samples", "tasks", "combinations", "languages", "image_source", "image_column", "image_split", "seed")
        return {k: getattr(self, k) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> SynthesisConfig:
        """Load a JSON or YAML config file (keys = field names); ``overrides`` win."""
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


@dataclass(frozen=True)
class PlannedSample:
    """One sample to synthesize. ``images`` maps role -> index into the image pool."""

    id: str
    index: int
    task: str
    combination: str
    language: str
    images: dict[str, int]

    @property
    def language_name(self) -> str:
        return LANGUAGES.get(self.language, self.language)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def plan_samples(config: SynthesisConfig, pool_size: int) -> list[PlannedSample]:
    """The deterministic plan: ``config.num_samples`` samples with stable ids ``"{index:07d}-{hash8}"``.

    The hash covers the seed and everything drawn for the sample, so a changed config never reuses an id.
    """
    needs_images = any("I" in c for task in config.tasks for c in config.combinations[task])
    if needs_images and pool_size < 3:
        raise ValueError(f"The image pool needs at least 3 images, it has {pool_size}.")
    samples = []
    for index in range(config.num_samples):
        rng = random.Random(f"mm_st.synthesis:{config.seed}:{index}")
        task = _choice(rng, config.tasks)
        combination = _choice(rng, config.combinations[task])
        language = _choice(rng, config.languages)
        roles = image_roles(combination)
        picked = rng.sample(range(pool_size), len(roles)) if roles else []
        images = dict(zip(roles, picked))
        key = json.dumps([config.seed, index, task, combination, language, images], sort_keys=True)
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
        samples.append(PlannedSample(f"{index:07d}-{digest}", index, task, combination, language, images))
    return samples
