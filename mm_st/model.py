"""The model class :func:`mm_st.build_model` returns: a SentenceTransformer that also takes mm_st inputs.

Everything it saves is sentence-transformers' own modules, so ``SentenceTransformer(path)`` loads it
without mm_st. The subclass only adds, at preprocessing time:

- ``None`` fields, ``pathlib.Path`` images and image paths in dicts (:mod:`mm_st.inputs`), with
  errors that name the input index and path;
- truncation that never cuts image tokens: when a batch holds images, the text of an over-long input
  is shortened instead, so image tokens and the prompt suffix (the token last-token pooling reads)
  survive. Text-only batches use sentence-transformers' truncation, which restores the suffix.

Example:
    >>> from mm_st import build_model
    >>> from mm_st.testing import tiny_model
    >>> model = build_model(tiny_model("qwen2_vl"), recipe="e5v")
    >>> model.encode([{"text": "a red square", "image": None}]).shape
    (1, 64)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from mm_st.inputs import content_key, has_image, load_images, normalize_inputs, text_of, with_text
from mm_st.model_card import MultimodalModelCardData

CONTENT_KEY = "mm_st_content_key"
MODALITY_KEY = "mm_st_modality"

logger = logging.getLogger(__name__)
# True while encode runs on inputs it has normalised itself: preprocess then only opens image paths.
_INPUTS_CHECKED: ContextVar[bool] = ContextVar("mm_st_inputs_checked", default=False)


class MultimodalSentenceTransformer(SentenceTransformer):
    """:class:`~sentence_transformers.SentenceTransformer` with mm_st input handling (see module doc).

    With ``emit_content_keys = True`` (set by mm_st's losses), :meth:`preprocess` also returns each
    input's content hash and modality id (:func:`mm_st.inputs.content_key`) under ``mm_st_content_key``
    and ``mm_st_modality``; :meth:`forward` drops them before the backbone sees the features.
    """

    emit_content_keys: bool = False
    _warned_unused_prompt: bool = False
    model_card_data_class = MultimodalModelCardData  # widget examples from {"text", "image"} columns

    def _get_name(self) -> str:
        # Shown in repr and in model cards: what users load the saved model with.
        return "SentenceTransformer"

    def encode(self, inputs: Any = None, *args, **kwargs):
        """As :meth:`SentenceTransformer.encode`; an empty list gives an empty ``(0, dim)`` array.

        Inputs are checked up front, so an error names the input's index in the caller's list
        (encode sorts inputs by length before batching); image files are decoded batch by batch, and
        :meth:`preprocess` does not check these inputs a second time.
        """
        checked = isinstance(inputs, (list, tuple))
        if checked:
            if len(inputs) == 0:
                empty = np.zeros((0, self.get_embedding_dimension()), dtype=np.float32)
                return torch.from_numpy(empty) if kwargs.get("convert_to_tensor") else empty
            inputs = normalize_inputs(inputs, supports_image=self.supports("image"), load=False)
        token = _INPUTS_CHECKED.set(checked)
        try:
            return super().encode(inputs, *args, **kwargs)
        except RuntimeError as exc:
            raise explain_mixed_batch_error(inputs, exc) from exc
        finally:
            _INPUTS_CHECKED.reset(token)

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs) -> dict[str, Any]:
        if len(inputs) == 0:
            return {}
        self._warn_if_prompt_unused(prompt)
        checked = _INPUTS_CHECKED.get()
        items = load_images(inputs) if checked else normalize_inputs(inputs, supports_image=self.supports("image"))
        keys = [content_key(item) for item in items] if self.emit_content_keys else None
        if not any(has_image(item) for item in items):
            features = super().preprocess(items, prompt=prompt, **kwargs)
        else:
            features = self._preprocess_keeping_images(items, prompt, **kwargs)
        if keys is not None:
            features[CONTENT_KEY] = torch.tensor([key for key, _ in keys], dtype=torch.long)
            features[MODALITY_KEY] = torch.tensor([modality for _, modality in keys], dtype=torch.long)
        return features

    def _warn_if_prompt_unused(self, prompt: str | None) -> None:
        """Say once when a plain instruction goes to a recipe without an instruction slot (E5-V)."""
        if not prompt or self._warned_unused_prompt or "<image>" in prompt or "<sent>" in prompt:
            return
        from mm_st import templates

        processor = getattr(self[0], "processor", None)
        template = getattr(processor, "chat_template", None)
        found = re.search(r"mm_st recipe=(\S+) ", template[:200]) if isinstance(template, str) else None
        if found and found.group(1) in templates.RECIPES and not templates.RECIPES[found.group(1)].uses_instruction:
            self._warned_unused_prompt = True
            logger.warning(
                "Recipe %r has no instruction slot: the prompt %r is not shown to the model (as in VLM2Vec's "
                "E5-V evaluation). Pass a full prompt with <sent> / <image> markers to change E5-V's prompt.",
                found.group(1), prompt,
            )

    def forward(self, input: dict[str, Any], **kwargs) -> dict[str, Any]:
        input.pop(CONTENT_KEY, None)
        input.pop(MODALITY_KEY, None)
        return super().forward(input, **kwargs)

    def _preprocess_keeping_images(self, items: list[Any], prompt: str | None, **kwargs) -> dict[str, Any]:
        """Process without token truncation, then shorten the text of rows still over the limit."""
        limit = kwargs.get("max_length") or self.max_seq_length
        per_call = dict(kwargs.pop("processing_kwargs", None) or {})
        per_call["text"] = {**per_call.get("text", {}), "truncation": False}
        tokenizer = self[0].tokenizer
        for _ in range(4):
            features = super().preprocess(items, prompt=prompt, processing_kwargs=per_call, **kwargs)
            if not limit or "attention_mask" not in features:
                return features
            lengths = features["attention_mask"].sum(dim=1).tolist()
            changed = False
            for index, length in enumerate(lengths):
                text = text_of(items[index])
                if length <= limit or not text:
                    continue
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                shorter = tokenizer.decode(ids[: max(0, len(ids) - (length - limit))])
                if shorter != text:
                    items[index] = with_text(items[index], shorter)
                    changed = True
            if not changed:
                break
        if max(features["attention_mask"].sum(dim=1).tolist()) > limit:
            logger.warning(
                "Some inputs exceed max_seq_length=%d with their text removed (image tokens and prompt alone); "
                "they are kept whole, since cutting image tokens would break the model.",
                limit,
            )
        return features


MIXED_BATCH_SIGNS = ("aspect_ratio_ids", "is invalid for input of size")  # Mllama's forward on a mixed batch


def explain_mixed_batch_error(inputs: Any, exc: RuntimeError) -> RuntimeError:
    """A RuntimeError that explains Mllama's failure on batches mixing inputs with and without an image.

    transformers' Mllama model reshapes ``aspect_ratio_ids`` per image, so a batch in which some
    inputs have no image fails inside the model. Other errors are returned unchanged.
    """
    items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    with_image = sum(map(has_image, items))
    if not any(sign in str(exc) for sign in MIXED_BATCH_SIGNS) or with_image in (0, len(items)):
        return exc
    return RuntimeError(
        f"This batch mixes inputs with an image ({with_image}) and without ({len(items) - with_image}), which "
        "transformers' Mllama model cannot encode together (a known limitation, see README). Encode inputs "
        "with images and text-only inputs in separate calls; for training, keep text-only and image rows in "
        f"separate datasets of a DatasetDict. Original error: {exc}"
    )
