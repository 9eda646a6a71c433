"""The model class :func:`mm_st.build_model` returns: a SentenceTransformer that also takes mm_st inputs.

Everything it saves is sentence-transformers' own modules, so ``SentenceTransformer(path)`` loads it
without mm_st (the opt-in latent-attention pooling ships its own code file instead, see
:func:`portable_module_types`). The subclass only adds, at preprocessing (and, for grouping, forward) time:

- ``None`` fields, ``pathlib.Path`` images and image paths in dicts (:mod:`mm_st.inputs`), with
  errors that name the input index and path;
- truncation that never cuts image tokens: when a batch holds images, the text of an over-long input
  is shortened instead, so image tokens and the prompt suffix (the token last-token pooling reads)
  survive. Text-only batches use sentence-transformers' truncation, which restores the suffix;
- content keys for training: outside ``torch.inference_mode`` (so in the trainer's data collator,
  which calls :meth:`preprocess` per column, but never in ``encode``), each row's content hash and
  modality id ride along, for the duplicate masking of :mod:`mm_st.losses` (see :meth:`preprocess`);
- modality-grouped batching: a batch (an ``encode`` batch or a training column) that mixes text,
  image, image+text, video and text+video inputs is preprocessed and run through the backbone as one
  sub-batch per modality, and the embeddings come back in the caller's order. No text row is padded to
  the length of an image or video row, and backbones whose processor cannot batch mixed inputs (Mllama)
  work on them;
- videos (``{"video": frames | frame directory | video file, "text"?, "instruction"?}``), sampled to
  :attr:`MultimodalSentenceTransformer.num_frames` frames as VLM2Vec-V2 samples (:func:`mm_st.inputs.video_frames`)
  and embedded through the processor's own video path, on backbones that take video
  (:func:`mm_st.templates.check_takes_video`). The frame count is saved in ``config_sentence_transformers.json``
  (``"mm_st_video": {"num_frames": N}``); plain sentence-transformers takes the sampled frames as ``{"video": frames}``.

Example:
    >>> from mm_st import build_model
    >>> from mm_st.testing import tiny_model
    >>> model = build_model(tiny_model("qwen2_vl"), recipe="e5v")
    >>> model.encode([{"text": "a red square", "image": None}]).shape
    (1, 64)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.gradcache import _create_minibatch  # ST's own row slicer (GradCache)
from sentence_transformers.util import batch_to_device, cat_padded_token_embeddings

from mm_st.inputs import (DEFAULT_NUM_FRAMES, as_messages, content_key, has_image, has_media, has_video,
                          is_messages, load_images, normalize_inputs, text_of, with_text)
from mm_st.io import MODALITY_IDS, modality_of
from mm_st.model_card import MultimodalModelCardData
from mm_st.metadata import RecipeMetadataMixin, of_model
from mm_st.portable import scrub_saved_model

# Per row, in the caller's order: content hash and modality id (mm_st.inputs.content_key) of the raw input.
CONTENT_KEY = "mm_st_content_key"
MODALITY_KEY = "mm_st_modality"
ROW_KEYS = (CONTENT_KEY, MODALITY_KEY)  # read by mm_st.losses, never passed to the backbone
# Grouped features (a batch mixing modalities). The row axis is ``input_ids``: caller row ids, so that
# sentence-transformers' trainer (which finds a column by its ``*_input_ids`` key) and GradCache (which
# reads the batch size from ``input_ids`` and slices row-indexed tensors into mini-batches) see the
# caller's rows; the sub-batches are passed through untouched and sliced in ``forward``.
ROWS_KEY = "input_ids"
GROUPS_KEY = "mm_st_groups"  # list of feature dicts, one per modality, rows in ascending caller order
GROUP_ROWS_KEY = "mm_st_group_rows"  # list of LongTensors: the caller rows of each group

VIDEO_CONFIG_KEY = "mm_st_video"  # in config_sentence_transformers.json: {"num_frames": N}

logger = logging.getLogger(__name__)
# True while encode runs on inputs it has normalised itself: preprocess then only opens image paths.
_INPUTS_CHECKED: ContextVar[bool] = ContextVar("mm_st_inputs_checked", default=False)


class MultimodalSentenceTransformer(RecipeMetadataMixin, SentenceTransformer):
    """:class:`~sentence_transformers.SentenceTransformer` with mm_st input handling (see module doc).

    :meth:`preprocess` also returns each input's content hash and modality id
    (:func:`mm_st.inputs.content_key`) under ``mm_st_content_key`` and ``mm_st_modality``, except under
    ``torch.inference_mode`` (``encode``); :meth:`forward` keeps them from the backbone.

    With ``group_modalities = True`` (the default), :meth:`preprocess` splits a batch that mixes
    modalities into one sub-batch per modality and :meth:`forward` runs them separately and returns
    ``sentence_embedding`` in the caller's order (see :meth:`preprocess`). Set it to False to process
    mixed batches as one padded tensor, as plain sentence-transformers does.
    """

    _warned_unused_prompt: bool = False
    model_card_data_class = MultimodalModelCardData  # widget examples from {"text", "image"} columns
    group_modalities: bool = True
    num_frames: int = DEFAULT_NUM_FRAMES  # frames a video is sampled to (VLM2Vec-V2's video.yaml: 8)

    def _get_model_config(self) -> dict[str, Any]:
        return {**super()._get_model_config(), VIDEO_CONFIG_KEY: {"num_frames": self.num_frames}}

    def _parse_model_config(self, model_config: dict[str, Any]) -> None:
        super()._parse_model_config(model_config)
        saved = (model_config.get(VIDEO_CONFIG_KEY) or {}).get("num_frames")
        if saved is not None:
            self.num_frames = check_num_frames(saved, where=f"config_sentence_transformers.json {VIDEO_CONFIG_KEY!r}")

    def _normalize(self, inputs: Sequence[Any], load: bool) -> list[Any]:
        """:func:`mm_st.inputs.normalize_inputs` for this model; a video for a backbone without video is refused."""
        items = normalize_inputs(inputs, supports_image=self.supports("image"), load=load, num_frames=self.num_frames)
        for index, item in enumerate(items):
            if has_video(item):
                self._check_takes_video(index, modality_of(item))
        return items

    def _check_takes_video(self, index: int, modality: str) -> None:
        from mm_st import templates

        family = (of_model(self) or {}).get("family")
        if family in templates.FAMILIES:
            templates.check_takes_video(family, f"Input {index}", modality)
        elif not self.supports("video"):
            raise ValueError(f"Input {index} has modality {modality!r}, which this model's processor cannot embed "
                             f"(families that take video: {', '.join(templates.video_families())}).")

    def save(self, path: str, *args, **kwargs) -> None:
        """sentence-transformers' ``save``, portable: DoRA magnitudes under keys its loader maps back, and no
        load-time state of this machine in the saved files (:func:`mm_st.portable.scrub_saved_model`).

        peft writes a DoRA magnitude as ``...lora_magnitude_vector``; transformers 5.23's adapter loader
        renames that to ``...lora_magnitude_vector.default`` (not the parameter's ``.default.weight``) and
        drops it, so ``SentenceTransformer(path)`` would silently fall back to the initial magnitudes.
        Saved as ``...lora_magnitude_vector.weight``, both transformers' and peft's loaders restore them.
        transformers also writes load arguments back (``"local_files_only": true``, ``"is_local": true`` in
        ``tokenizer_config.json``); they are removed, and a base model path inside the Hugging Face cache
        becomes its Hub id.
        """
        super().save(path, *args, **kwargs)
        portable_dora_keys(path)
        scrub_saved_model(path)
        portable_module_types(path, self)

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
            inputs = self._normalize(inputs, load=False)
        token = _INPUTS_CHECKED.set(checked)
        try:
            return super().encode(inputs, *args, **kwargs)
        except RuntimeError as exc:
            raise explain_mixed_batch_error(inputs, exc) from exc
        finally:
            _INPUTS_CHECKED.reset(token)

    def preprocess(
        self, inputs: Sequence[Any], prompt: str | None = None, content_keys: bool | None = None, **kwargs
    ) -> dict[str, Any]:
        """As :meth:`SentenceTransformer.preprocess`, with mm_st inputs and modality-grouped batching.

        A batch of one modality gives sentence-transformers' usual features. A batch mixing text,
        image and image+text inputs gives ``{"input_ids": caller row ids, "mm_st_groups": [features
        per modality], "mm_st_group_rows": [caller rows per modality]}``, which :meth:`forward` runs
        sub-batch by sub-batch; a contiguous row range of it (a GradCache mini-batch) runs the same way.

        With ``content_keys`` (default: True, except under ``torch.inference_mode``, where ``encode``
        runs and features cannot be trained on), the features also hold ``mm_st_content_key`` and
        ``mm_st_modality``: each input's content hash (text and image bytes, before truncation) and
        modality id, in the caller's order, which :mod:`mm_st.losses` masks duplicates with. The
        trainer's data collator calls this method per column, so they reach the loss by themselves.

        Example:
            >>> from mm_st import build_model
            >>> from mm_st.testing import tiny_model
            >>> from PIL import Image
            >>> model = build_model(tiny_model("qwen2_vl"), recipe="e5v")
            >>> features = model.preprocess(["a cat", Image.new("RGB", (64, 64)), "a dog"])
            >>> [rows.tolist() for rows in features["mm_st_group_rows"]]
            [[0, 2], [1]]
            >>> model(features)["sentence_embedding"].shape
            torch.Size([3, 64])
        """
        if len(inputs) == 0:
            return {}
        self._warn_if_prompt_unused(prompt)
        checked = _INPUTS_CHECKED.get()
        items = load_images(inputs) if checked else self._normalize(inputs, load=True)
        if content_keys is None:
            content_keys = not torch.is_inference_mode_enabled()
        keys = row_keys(items) if content_keys else {}  # before truncation shortens any text
        groups = _modality_groups(items) if self.group_modalities else [list(range(len(items)))]
        if len(groups) == 1:
            features = self._preprocess_group(items, prompt, **kwargs)
        else:
            features = {
                ROWS_KEY: torch.arange(len(items)),
                GROUPS_KEY: [self._preprocess_group([items[i] for i in rows], prompt, **kwargs) for rows in groups],
                GROUP_ROWS_KEY: [torch.tensor(rows) for rows in groups],
            }
        return {**features, **keys}

    def _warn_if_prompt_unused(self, prompt: str | None) -> None:
        """Say once when a plain instruction goes to a recipe without an instruction slot (E5-V)."""
        if not prompt or self._warned_unused_prompt or "<image>" in prompt or "<sent>" in prompt:
            return
        from mm_st import templates

        recipe = (of_model(self) or {}).get("recipe")
        if recipe in templates.RECIPES and not templates.RECIPES[recipe].uses_instruction:
            self._warned_unused_prompt = True
            logger.warning(
                "Recipe %r has no instruction slot: the prompt %r is not shown to the model (as in VLM2Vec's "
                "E5-V evaluation). Pass a full prompt with <sent> / <image> markers to change E5-V's prompt.",
                recipe, prompt,
            )

    def forward(self, input: dict[str, Any], **kwargs) -> dict[str, Any]:
        """As :meth:`SentenceTransformer.forward`; content keys stay in ``input`` but never reach the backbone."""
        if not any(key in input for key in ROW_KEYS):
            return self._forward_grouped_or_not(input, **kwargs)
        output = self._forward_grouped_or_not({k: v for k, v in input.items() if k not in ROW_KEYS}, **kwargs)
        input.update(output)  # fill the caller's dict, as sentence-transformers' forward does
        return input

    def _forward_grouped_or_not(self, input: dict[str, Any], **kwargs) -> dict[str, Any]:
        if GROUPS_KEY in input:
            return self._forward_groups(input, **kwargs)
        return super().forward(input, **kwargs)

    def _preprocess_group(self, items: list[Any], prompt: str | None, **kwargs) -> dict[str, Any]:
        items = in_one_form(items)
        if not any(has_media(item) for item in items):
            return super().preprocess(items, prompt=prompt, **kwargs)
        return self._preprocess_keeping_images(items, prompt, **kwargs)

    def _forward_groups(self, input: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Run each modality sub-batch holding rows of ``input[ROWS_KEY]``; outputs in those rows' order.

        ``input[ROWS_KEY]`` is a contiguous range of caller rows (the whole batch, or a GradCache
        mini-batch); the rows of each group inside it are a contiguous slice of that group.
        """
        rows = input[ROWS_KEY]
        shared = {k: v for k, v in input.items() if k not in (ROWS_KEY, GROUPS_KEY, GROUP_ROWS_KEY)}
        first, last = int(rows[0]), int(rows[-1])
        outputs, placed = [], []
        for features, caller_rows in zip(input[GROUPS_KEY], input[GROUP_ROWS_KEY]):
            begin = int(torch.searchsorted(caller_rows, first))
            end = int(torch.searchsorted(caller_rows, last, right=True))
            if begin == end:
                continue
            if (begin, end) != (0, len(caller_rows)):
                features = _create_minibatch(features, begin, end)
            features = batch_to_device({**shared, **features}, rows.device)
            outputs.append(super().forward(features, **kwargs))
            placed.append(caller_rows[begin:end])
        placed = torch.cat(placed)
        if len(placed) != len(rows) or last - first + 1 != len(rows):
            raise ValueError(f"Grouped features must hold a contiguous range of rows, got rows {rows.tolist()}.")
        order = torch.argsort(placed.to(rows.device))
        result = {"sentence_embedding": torch.cat([out["sentence_embedding"] for out in outputs])[order]}
        if not self.training and all("token_embeddings" in out for out in outputs):
            tokens, mask = cat_padded_token_embeddings(
                [out["token_embeddings"] for out in outputs], [out["attention_mask"] for out in outputs]
            )
            result["token_embeddings"], result["attention_mask"] = tokens[order], mask[order]
        return result

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


def portable_dora_keys(path: str) -> list[str]:
    """Rename bare ``lora_magnitude_vector`` keys in the adapter files under ``path`` (see ``save``); returns the files changed."""
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import save_file

    changed = []
    for file in sorted(Path(path).rglob("adapter_model.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        renamed = {(key + ".weight" if key.endswith("lora_magnitude_vector") else key): value for key, value in tensors.items()}
        if renamed.keys() != tensors.keys():
            save_file(renamed, str(file), metadata=metadata)
            changed.append(str(file))
    return changed


def portable_module_types(path: str, model: Any) -> list[str]:
    """Name the modules that ship their own code file by that file in ``path``'s ``modules.json``.

    sentence-transformers writes a module's import path (``mm_st.latent_attention.LatentAttentionPooling``),
    which loads only where mm_st is installed. A module class with ``ships_code = True`` copies its code file
    to the model's root folder when saved; its type becomes ``<file stem>.<class>``, which
    ``SentenceTransformer(path, trust_remote_code=True)`` loads from that file. Returns the new types.
    """
    import inspect
    import json
    from pathlib import Path

    modules_file = Path(path) / "modules.json"
    entries = json.loads(modules_file.read_text(encoding="utf-8"))
    changed = []
    for entry, module in zip(entries, model._modules.values()):
        cls = type(module)
        if getattr(cls, "ships_code", False):
            entry["type"] = f"{Path(inspect.getfile(cls)).stem}.{cls.__name__}"
            changed.append(entry["type"])
    if changed:
        modules_file.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    return changed


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
        "transformers' Mllama model cannot encode together (see README). Keep `model.group_modalities = True` "
        "(the default: one sub-batch per modality), or encode inputs with images and text-only inputs in separate "
        f"calls. Original error: {exc}"
    )


def row_keys(items: list[Any]) -> dict[str, torch.Tensor]:
    """``{CONTENT_KEY, MODALITY_KEY}`` tensors of normalised inputs (:func:`mm_st.inputs.content_key`).

    Example:
        >>> keys = row_keys(["a cat", "a dog", "a cat"])
        >>> keys["mm_st_content_key"][0] == keys["mm_st_content_key"][2], keys["mm_st_modality"].tolist()
        (tensor(True), [0, 0, 0])
    """
    pairs = [content_key(item) for item in items]
    return {
        CONTENT_KEY: torch.tensor([key for key, _ in pairs], dtype=torch.long),
        MODALITY_KEY: torch.tensor([modality for _, modality in pairs], dtype=torch.long),
    }


def in_one_form(items: list[Any]) -> list[Any]:
    """``items`` as chat messages when some of them are (rows with an instruction beside rows without).

    sentence-transformers 6.2's ``parse_inputs`` turns a batch mixing messages with other inputs into messages by
    wrapping each message list as content of an unknown ``"message"`` type, which the chat template drops: the
    instructed rows would be embedded as empty texts.
    """
    if all(map(is_messages, items)) or not any(map(is_messages, items)):
        return items
    return [item if is_messages(item) else as_messages(item, None) for item in items]


def check_num_frames(value: Any, where: str = "num_frames") -> int:
    """``value`` when it is a frame count (an int of at least 1); else a ValueError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: num_frames must be an int of at least 1, got {value!r}.")
    return value


def _modality_groups(items: list[Any]) -> list[list[int]]:
    """Row indices of each modality present, in ``MODALITY_IDS`` order (text, image, image+text, video, text+video)."""
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(modality_of(item), []).append(index)
    return [groups[name] for name in MODALITY_IDS if name in groups]
