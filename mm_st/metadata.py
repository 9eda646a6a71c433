"""The recipe a model was built with, saved where sentence-transformers keeps model metadata.

:func:`mm_st.build_model` records ``{"recipe", "family", "wrapper", "prompt_format"}`` on the model;
saving writes it under the ``"mm_st"`` key of ``config_sentence_transformers.json`` (next to ST's own
``prompts`` and ``similarity_fn_name``), and ``mm_st.load_model`` reads it back. A plain
``SentenceTransformer(path)`` ignores the key and needs no mm_st; a plain ``save`` rewrites that file
from its known keys and so drops it. Models saved that way, or by mm_st before the key existed, are
still understood from the header comment of the saved chat template
(``{#- mm_st recipe=NAME family=NAME format=NAME wrapper=NAME -#}``; older ones lack the last fields),
and an mm_st save writes the key again.

Example:
    >>> import json, tempfile
    >>> from sentence_transformers import SentenceTransformer
    >>> from mm_st import build_model, load_model, metadata
    >>> from mm_st.testing import tiny_model
    >>> path = tempfile.mkdtemp()
    >>> build_model(tiny_model("llava_next"), recipe="e5v").save(path)
    >>> json.load(open(f"{path}/config_sentence_transformers.json"))["mm_st"]
    {'family': 'llava_next', 'prompt_format': 'inference', 'recipe': 'e5v', 'wrapper': 'llama3'}
    >>> metadata.of_model(load_model(path))["recipe"], type(SentenceTransformer(path)).__name__
    ('e5v', 'SentenceTransformer')
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

KEY = "mm_st"
FIELDS = ("recipe", "family", "wrapper", "prompt_format")
CONFIG_FILE = "config_sentence_transformers.json"
_HEADER = re.compile(r"mm_st recipe=(\S+) family=(\S+)(?: format=(\S+))?(?: wrapper=(\S+))?")


def recipe_metadata(recipe: str, family: str, wrapper: str | None, prompt_format: str | None) -> dict[str, str | None]:
    """The metadata dict saved under :data:`KEY`."""
    return {"recipe": recipe, "family": family, "wrapper": wrapper, "prompt_format": prompt_format}


def header(meta: dict[str, str | None]) -> str:
    """The chat template's first line (a Jinja comment that renders nothing) for this metadata.

    >>> header(recipe_metadata("mme5", "mllama", "raw", "train"))
    '{#- mm_st recipe=mme5 family=mllama format=train wrapper=raw -#}'
    """
    fields = f"recipe={meta['recipe']} family={meta['family']} format={meta['prompt_format']} wrapper={meta['wrapper']}"
    return f"{{#- mm_st {fields} -#}}"


def from_template(template: str | None) -> dict[str, str | None] | None:
    """Metadata from an mm_st chat template's header comment (fields it lacks are None), else None.

    >>> from_template("{#- mm_st recipe=vlm2vec family=llava -#}\\n...")
    {'recipe': 'vlm2vec', 'family': 'llava', 'wrapper': None, 'prompt_format': None}
    """
    match = _HEADER.search(template[:200]) if isinstance(template, str) else None
    return recipe_metadata(match[1], match[2], match[4], match[3]) if match else None


def from_config(config: dict[str, Any], where: str = CONFIG_FILE) -> dict[str, str | None] | None:
    """Metadata from a parsed ``config_sentence_transformers.json`` (None without the key)."""
    meta = config.get(KEY)
    if meta is None:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("recipe"), str) or not isinstance(meta.get("family"), str):
        raise ValueError(f"{where}: {KEY!r} must be an object with string 'recipe' and 'family', got {meta!r}.")
    return recipe_metadata(*(meta.get(name) for name in FIELDS))


def _template_of_dir(path: Path) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("processor_config.json", "tokenizer_config.json"):
        if (path / name).is_file():
            template = json.loads((path / name).read_text(encoding="utf-8")).get("chat_template")
            if isinstance(template, str):
                return template
    return None


def read_dir(path: str | Path) -> dict[str, str | None] | None:
    """Metadata of a saved model directory: the config key, else the chat template header, else None."""
    path = Path(path)
    config = path / CONFIG_FILE
    found = from_config(json.loads(config.read_text(encoding="utf-8")), str(config)) if config.is_file() else None
    return found or from_template(_template_of_dir(path))


def model_template(model: Any) -> str | None:
    """The chat template of a loaded SentenceTransformer's first module (processor, else tokenizer)."""
    first = model[0] if hasattr(model, "__getitem__") and len(model) else None
    for owner in (getattr(first, "processor", None), getattr(first, "tokenizer", None)):
        template = getattr(owner, "chat_template", None)
        if isinstance(template, str):
            return template
    return None


def of_model(model: Any) -> dict[str, str | None] | None:
    """Metadata of a loaded model: what mm_st recorded, else its chat template header, else None."""
    return getattr(model, "mm_st_metadata", None) or from_template(model_template(model))


class RecipeMetadataMixin:
    """Saves :func:`of_model` under :data:`KEY` of ``config_sentence_transformers.json`` and loads it back."""

    mm_st_metadata: dict[str, str | None] | None = None

    def _get_model_config(self) -> dict[str, Any]:
        config = super()._get_model_config()
        meta = of_model(self)
        if meta is not None:
            config[KEY] = meta
        return config

    def _parse_model_config(self, model_config: dict[str, Any]) -> None:
        super()._parse_model_config(model_config)
        self.mm_st_metadata = from_config(model_config)
