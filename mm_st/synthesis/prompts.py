"""The single-pass prompt (editable templates in ``mm_st/synthesis/prompts/``) and its answer check.

Files (all loaded at run time; pass ``prompt_dir=`` to use an edited copy):

- ``system.jinja``, ``user.jinja``: the request; ``retry.jinja``: appended after a rejected answer.
- ``schema.json``: the JSON schema of the answer; ``criteria.json``: self-evaluation criteria;
  ``tasks.json``: one description per task.

Example:
    >>> from mm_st.synthesis.prompts import PromptBuilder
    >>> from mm_st.synthesis.config import PlannedSample
    >>> sample = PlannedSample("0000000-abc", 0, "vqa", "IT->T", "de", {"query": 3})
    >>> messages = PromptBuilder().messages(sample, {"query": None})
    >>> [part["type"] for part in messages[1]["content"]]
    ['text', 'image', 'text']
    >>> "German" in messages[1]["content"][-1]["text"]
    True
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2

from mm_st.synthesis.config import PlannedSample, image_roles, parse_combination

PROMPT_DIR = Path(__file__).parent / "prompts"
MODALITY_WORDS = {"T": "text", "I": "image", "IT": "image + text"}
SAMPLE_KEYS = ("task_instruction", "query", "positive", "hard_negative")
SCORE_KEYS = ("cross_modal_alignment", "image_fidelity", "relevance", "hard_negative_difficulty")


class SampleError(ValueError):
    """A generator answer that cannot be used; ``kind`` is ``invalid_json``, ``schema`` or ``content``."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


class PromptBuilder:
    """Renders requests from the templates and checks answers against the schema."""

    def __init__(self, prompt_dir: str | Path | None = None, image_only_text: str = "Represent the given image."):
        self.dir = Path(prompt_dir) if prompt_dir else PROMPT_DIR
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.dir)), undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        env.filters["modality_words"] = lambda side: MODALITY_WORDS[side]
        self.system = env.get_template("system.jinja")
        self.user = env.get_template("user.jinja")
        self.retry = env.get_template("retry.jinja")
        self.schema = json.loads((self.dir / "schema.json").read_text(encoding="utf-8"))
        self.criteria = json.loads((self.dir / "criteria.json").read_text(encoding="utf-8"))
        self.tasks = json.loads((self.dir / "tasks.json").read_text(encoding="utf-8"))
        self.image_only_text = image_only_text

    def messages(self, sample: PlannedSample, images: dict[str, Any], retry_reason: str | None = None) -> list[dict]:
        """Chat messages: system text, then a user turn with each labelled image and the request text.

        Images are content parts ``{"type": "image", "image": PIL}`` (backends convert them)."""
        query_side, target_side = parse_combination(sample.combination)
        roles = list(image_roles(sample.combination))
        content: list[dict] = []
        for role in roles:
            label = "hard-negative" if role == "negative" else role
            content.append({"type": "text", "text": f"The {label} image:"})
            content.append({"type": "image", "image": images[role]})
        text = self.user.render(
            task=sample.task, task_description=self.tasks[sample.task], combination=sample.combination,
            query_side=query_side, target_side=target_side, language=sample.language,
            language_name=sample.language_name, image_roles=roles, image_only_text=self.image_only_text,
            criteria=self.criteria,
        )  # fmt: skip
        if retry_reason:
            text += "\n\n" + self.retry.render(reason=retry_reason)
        content.append({"type": "text", "text": text})
        return [{"role": "system", "content": [{"type": "text", "text": self.system.render()}]}, {"role": "user", "content": content}]

    def parse(self, sample: PlannedSample, answer: str) -> tuple[dict[str, str], dict[str, Any]]:
        """``(revised sample, evaluation)`` from an answer, or :class:`SampleError`."""
        data = extract_json(answer)
        problems = validate(data, self.schema, self.schema)
        if problems:
            raise SampleError("schema", "; ".join(problems[:3]))
        revised = {k: data["revised"][k].strip() for k in SAMPLE_KEYS}
        query_side, target_side = parse_combination(sample.combination)
        needed = ["task_instruction"] + (["query"] if "T" in query_side else []) + (["positive", "hard_negative"] if "T" in target_side else [])
        empty = [k for k in needed if not revised[k]]
        if empty:
            raise SampleError("content", f"empty {', '.join(empty)} for {sample.combination}")
        if "T" in target_side and revised["positive"] == revised["hard_negative"]:
            raise SampleError("content", "the hard negative equals the positive")
        return revised, data["evaluation"]


def extract_json(answer: str) -> Any:
    """The JSON object in an answer (tolerates markdown fences and text around one object)."""
    text = answer.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise SampleError("invalid_json", "no JSON object in the answer")
    try:
        return json.loads(text[start : end + 1])
    except json.JSONDecodeError as error:
        raise SampleError("invalid_json", str(error)) from None


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def validate(value: Any, schema: dict, root: dict, path: str = "$") -> list[str]:
    """Problems of ``value`` against a JSON-Schema subset (type, properties, required,
    additionalProperties, minimum, maximum, minLength, items, $ref to ``#/definitions``)."""
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    kind = schema.get("type")
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and value.is_integer()
    elif kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = kind is None or isinstance(value, _TYPES[kind])
    if not ok:
        return [f"{path}: expected {kind}, got {type(value).__name__}"]
    problems = []
    if isinstance(value, dict):
        problems += [f"{path}: missing {key!r}" for key in schema.get("required", ()) if key not in value]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                problems += validate(item, properties[key], root, f"{path}.{key}")
            elif isinstance(extra, dict):
                problems += validate(item, extra, root, f"{path}.{key}")
            elif extra is False:
                problems.append(f"{path}: unexpected {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problems += validate(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, str) and len(value.strip()) < schema.get("minLength", 0):
        problems.append(f"{path}: shorter than {schema['minLength']} characters")
    return problems
