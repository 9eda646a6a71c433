"""Generator backends: one small interface, three implementations.

A backend has ``name`` (written to the journal and the card), ``batch_size`` (requests per
``generate`` call) and ``concurrency`` (``generate`` calls the runner keeps in flight), and
``generate(requests) -> list[str | TransportError]``: one answer text per request, or the
transport failure that survived the backend's own retries.

- :class:`OpenAIChatBackend`: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI,
  ``transformers serve``, hosted APIs) through the official ``openai`` client (one shared
  connection pool, its typed errors and timeouts); thread-pooled by the runner, retries with
  exponential backoff on 429 / 5xx / timeouts / connection errors, images as base64 data URLs, API
  key read from the environment at request time and sent only in the ``Authorization`` header.
- :class:`TransformersBackend`: a local ``AutoModelForImageTextToText`` checkpoint, batched generation.
- :class:`ScriptedBackend`: a Python callable.
- :class:`DryRunBackend`: no model; fills a template from each planned sample (offline dry runs of
  the whole pipeline, never training data).

Example:
    >>> from mm_st.synthesis.backends import ScriptedBackend, Request
    >>> backend = ScriptedBackend(lambda request: '{"answer": 1}')
    >>> backend.generate([Request("id-1", [])])
    ['{"answer": 1}']
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from mm_st.synthesis.config import parse_combination

logger = logging.getLogger(__name__)
REDACTED = "[REDACTED]"
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)[^\s\"',;)}\]>]+")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with each secret and any ``Bearer <token>`` replaced by ``[REDACTED]``.

    Example:
        >>> redact('401: {"headers": {"Authorization": "Bearer sk-abc"}} key=sk-abc', "sk-abc")
        '401: {"headers": {"Authorization": "Bearer [REDACTED]"}} key=[REDACTED]'
    """
    text = _BEARER.sub(lambda match: f"{match.group(1)}{match.group(2)}{REDACTED}", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
            text = text.replace(json.dumps(secret)[1:-1], REDACTED)  # as a JSON string would escape it
    return text


class TransportError(RuntimeError):
    """The generator could not be reached or kept failing (not a bad answer: the sample stays pending)."""


@dataclass
class Request:
    """One generation request: neutral chat messages (image parts hold PIL images) and its sample."""

    id: str
    messages: list[dict]
    sample: Any = None
    attempt: int = 1


class Backend:
    """Interface; subclasses implement :meth:`generate`."""

    name = "backend"
    batch_size = 1
    concurrency = 1

    def generate(self, requests: list[Request]) -> list[str | TransportError]:
        raise NotImplementedError

    def redact(self, text: str) -> str:
        """``text`` safe to log or write: any ``Bearer`` token (and the backend's own key) removed."""
        return redact(text)


class ScriptedBackend(Backend):
    """Answers with ``respond(request) -> str`` (may raise :class:`TransportError`); optional delay per call."""

    def __init__(self, respond: Callable[[Request], str], name: str = "scripted", concurrency: int = 1, delay: float = 0.0):
        self.respond, self.name, self.concurrency, self.delay = respond, name, concurrency, delay

    def generate(self, requests: list[Request]) -> list[str | TransportError]:
        out: list[str | TransportError] = []
        for request in requests:
            if self.delay:
                time.sleep(self.delay)
            try:
                out.append(self.respond(request))
            except TransportError as error:
                out.append(error)
        return out


class DryRunBackend(Backend):
    """No model: a deterministic template filler for dry runs of the pipeline (plan, images, journal, export, card).

    Each answer is schema-valid and follows the prompt's rules for the planned sample's modality
    combination (empty texts where a side is an image only); the texts only name the sample, e.g.
    ``"[dry run] vqa IT->T de: query of 0000000-abc"``, and every self-evaluation score is
    ``score``. The output is for checking a run end to end, never for training.

    Example:
        >>> from mm_st.synthesis.config import PlannedSample
        >>> sample = PlannedSample("0000000-abc", 0, "retrieval", "T->I", "de", {"positive": 3, "negative": 5})
        >>> answer = json.loads(DryRunBackend().generate([Request(sample.id, [], sample)])[0])
        >>> answer["revised"]["query"], answer["revised"]["positive"], sorted(answer["visual_interpretation"])
        ('[dry run] retrieval T->I de: query of 0000000-abc', '', ['negative', 'positive'])
    """

    name = "dry-run (template filler, no model)"

    def __init__(self, score: int = 3):
        if not 1 <= score <= 5:
            raise ValueError(f"score must be within 1..5 (the answer schema's range), got {score}.")
        self.score = score

    def generate(self, requests: list[Request]) -> list[str | TransportError]:
        return [self.answer(request) for request in requests]

    def answer(self, request: Request) -> str:
        """The answer for one request (its ``sample`` must be the planned sample)."""
        sample = request.sample
        if sample is None or not hasattr(sample, "combination"):
            raise ValueError(f"DryRunBackend needs the planned sample of request {request.id!r}; got {sample!r}.")
        query_side, target_side = parse_combination(sample.combination)
        tag = f"[dry run] {sample.task} {sample.combination} {sample.language}"

        def text(role: str, side: str) -> str:
            return f"{tag}: {role} of {sample.id}" if "T" in side else ""

        revised = {"task_instruction": f"{tag}: task instruction", "query": text("query", query_side),
                   "positive": text("positive", target_side), "hard_negative": text("hard negative", target_side)}
        keys = ("cross_modal_alignment", "image_fidelity", "relevance", "hard_negative_difficulty")
        return json.dumps({
            "visual_interpretation": {role: f"{tag}: {role} image {index}" for role, index in sorted(sample.images.items())},
            "draft": revised,
            "evaluation": {**dict.fromkeys(keys, self.score), "comments": "dry run: template text, not evaluated"},
            "revised": revised,
        }, ensure_ascii=False)  # fmt: skip


def image_data_url(image: Any, image_format: str = "PNG") -> str:
    """A PIL image as a ``data:image/...;base64,`` URL."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return f"data:image/{image_format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_messages(messages: list[dict], image_format: str = "PNG") -> list[dict]:
    """Neutral messages -> OpenAI chat content parts (``image_url`` with a data URL)."""
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_data_url(part["image"], image_format)}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        if message["role"] == "system" and all(p["type"] == "text" for p in parts):
            out.append({"role": "system", "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": message["role"], "content": parts})
    return out


class OpenAIChatBackend(Backend):
    """An OpenAI-compatible chat-completions endpoint, through the official ``openai`` client (``openai.OpenAI``).

    The client's own retries are off; this class retries (counted in ``retries``, logged redacted) and
    turns what survives into :class:`TransportError`. Every message it logs or raises goes through
    :meth:`redact`.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
        model: model name sent in the request (and recorded as the generator).
        api_key_env: environment variable holding the API key (default ``OPENAI_API_KEY``); read at each
            request, sent only as ``Authorization: Bearer ...``, never stored, logged or written.
        concurrency: requests in flight (the runner's thread count).
        timeout: seconds per HTTP request; a timeout counts as a retryable failure.
        max_retries: retries per request on 429, 5xx, timeouts and connection errors (then
            :class:`TransportError`); other 4xx fail at once (the message holds the redacted error body).
        backoff / max_backoff: exponential backoff base and cap in seconds (``Retry-After`` is honoured, capped).
        temperature / max_tokens: generation settings.
        json_mode: ``False``; ``True`` or ``"object"`` sends ``response_format={"type": "json_object"}``
            (any JSON); ``"schema"`` sends ``{"type": "json_schema", "json_schema": {"name": ..., "schema":
            ...}}`` with the answer schema, so a server with structured output (vLLM, OpenAI) can only
            return schema-valid answers. Servers that ignore ``response_format`` answer as without it.
        schema: the answer schema for ``json_mode="schema"`` (default: ``prompts/schema.json``);
            ``$ref`` s are inlined and ``$comment`` dropped before sending.

    Example::

        backend = OpenAIChatBackend("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-VL-7B-Instruct", concurrency=16)
    """

    def __init__(
        self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
        timeout: float = 120.0, max_retries: int = 5, backoff: float = 1.0, max_backoff: float = 30.0,
        temperature: float = 0.7, max_tokens: int = 2048, json_mode: bool | str = False, image_format: str = "PNG",
        extra_body: dict | None = None, schema: dict | None = None,
    ):  # fmt: skip
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.name, self.api_key_env = model, model, api_key_env
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.temperature, self.max_tokens = temperature, max_tokens
        self.json_mode = "object" if json_mode is True else json_mode or None
        if self.json_mode not in (None, "object", "schema"):
            raise ValueError(f"json_mode must be False, True/'object' or 'schema', got {json_mode!r}.")
        self.response_schema = response_schema(schema) if self.json_mode == "schema" else None
        self.image_format, self.extra_body = image_format, dict(extra_body or {})
        self.retries = 0  # transport retries performed (for summaries / tests)
        self._lock = threading.Lock()
        try:
            import openai
        except ImportError:
            raise ImportError(f"OpenAIChatBackend needs the `openai` package: pip install '{OPENAI_REQUIREMENT}'") from None
        # The client's own retries are off (its backoff is fixed at 0.5-8 s and it reports no retry count): this
        # class retries with ``backoff`` / ``max_backoff``. The client holds no key (an empty provider): the
        # ``Authorization`` header is set per request from the environment (``_auth``).
        self._openai = openai
        self._client = openai.OpenAI(base_url=base_url.rstrip("/"), api_key=lambda: "", timeout=timeout, max_retries=0)

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def redact(self, text: str) -> str:
        return redact(text, os.environ.get(self.api_key_env))

    def _auth(self) -> dict[str, Any]:
        """The ``Authorization`` header for one request: the key read now, or explicitly none."""
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}" if key else self._openai.Omit()}

    def _arguments(self, request: Request) -> dict[str, Any]:
        """Keyword arguments of ``chat.completions.create`` (``extra_body`` is merged last and wins)."""
        arguments = {"model": self.model, "messages": openai_messages(request.messages, self.image_format),
                     "temperature": self.temperature, "max_tokens": self.max_tokens, "extra_body": self.extra_body}  # fmt: skip
        if self.json_mode == "object":
            arguments["response_format"] = {"type": "json_object"}
        elif self.json_mode == "schema":
            arguments["response_format"] = {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": self.response_schema}}
        return arguments

    def generate(self, requests: list[Request]) -> list[str | TransportError]:
        out: list[str | TransportError] = []
        for request in requests:
            try:
                out.append(self._post(self._arguments(request), request.id))
            except TransportError as error:
                out.append(error)
        return out

    def _post(self, arguments: dict[str, Any], request_id: str) -> str:
        openai = self._openai
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                completion = self._client.chat.completions.create(**arguments, extra_headers=self._auth())
                return _answer_text(completion)
            except openai.APIStatusError as error:
                last = f"HTTP {error.status_code}"
                if error.status_code != 429 and error.status_code < 500:
                    body = self.redact(_error_body(error))[:ERROR_BODY_CHARS]  # redacted before it is cut (no key prefix left)
                    raise TransportError(f"{request_id}: {last} (not retried): {body}") from None
                retry_after = error.response.headers.get("Retry-After")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(float(retry_after), self.max_backoff)
            except openai.APITimeoutError:
                last = "timeout"
            except openai.APIConnectionError as error:
                last = type(error.__cause__ or error).__name__
            except (openai.APIResponseValidationError, AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
                last = f"malformed response ({type(error).__name__})"
            if attempt == self.max_retries:
                break
            with self._lock:
                self.retries += 1
            wait = wait if wait is not None else min(self.backoff * 2**attempt, self.max_backoff) * (0.5 + random.random() / 2)
            logger.info("%s: %s; retry %d/%d in %.2fs", request_id, last, attempt + 1, self.max_retries, wait)
            time.sleep(wait)
        raise TransportError(self.redact(f"{request_id}: {last} after {self.max_retries} retries"))


SCHEMA_NAME = "mme5_synthetic_sample"
OPENAI_REQUIREMENT = "openai>=3.57,<4"
ERROR_BODY_CHARS = 1000  # of a non-retried error's body in its message (a 401 body may echo ~700 characters of headers)


def response_schema(schema: dict | None = None) -> dict:
    """A self-contained copy of the answer schema for ``response_format``: ``$ref`` to
    ``#/definitions/...`` inlined, ``definitions`` and ``$comment`` removed.

    Example:
        >>> sorted(response_schema()["properties"]["revised"]["properties"])
        ['hard_negative', 'positive', 'query', 'task_instruction']
    """
    if schema is None:
        from mm_st.synthesis.prompts import PROMPT_DIR

        schema = json.loads((PROMPT_DIR / "schema.json").read_text(encoding="utf-8"))
    root = schema

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = root
                for part in node["$ref"].lstrip("#/").split("/"):
                    target = target[part]
                return inline(target)
            return {k: inline(v) for k, v in node.items() if k not in ("$comment", "definitions")}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(schema)


def _error_body(error: Any) -> str:
    try:
        return error.response.text[:65536]
    except Exception:  # noqa: BLE001 - best effort
        return ""


def _answer_text(completion: Any) -> str:
    content = completion.choices[0].message.content
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise TypeError("message content is not text")
    return content


class TransformersBackend(Backend):
    """A local image-text-to-text checkpoint (``AutoModelForImageTextToText`` + ``AutoProcessor``), batched.

    No ``trust_remote_code``. Greedy by default.

    Example::

        backend = TransformersBackend("Qwen/Qwen2.5-VL-3B-Instruct", batch_size=8, max_new_tokens=1024)
    """

    def __init__(self, model_name_or_path: str, batch_size: int = 4, max_new_tokens: int = 1024, device: str | None = None,
                 torch_dtype: Any = "auto", do_sample: bool = False, temperature: float = 0.7):  # fmt: skip
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name, self.batch_size, self.concurrency = str(model_name_or_path), batch_size, 1
        self.processor = AutoProcessor.from_pretrained(model_name_or_path)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = AutoModelForImageTextToText.from_pretrained(model_name_or_path, dtype=torch_dtype)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.generation = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
        if do_sample:
            self.generation["temperature"] = temperature

    def generate(self, requests: list[Request]) -> list[str | TransportError]:
        import torch

        inputs = self.processor.apply_chat_template(
            [r.messages for r in requests], add_generation_prompt=True, tokenize=True, return_dict=True,
            return_tensors="pt", processor_kwargs={"padding": True},
        ).to(self.device)  # fmt: skip
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **self.generation, pad_token_id=tokenizer.pad_token_id)
        new = output[:, inputs["input_ids"].shape[1] :]
        return [tokenizer.decode(row, skip_special_tokens=True) for row in new]
