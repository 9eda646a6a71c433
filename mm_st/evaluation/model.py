"""The mteb side of an mm_st model: an encoder that applies task instructions through the recipe.

mteb's own sentence-transformers wrapper ignores task instructions. :class:`MMSTEncoder` passes the
task's instruction as ``prompt=`` (a system message the saved chat template renders with the
model's recipe) on the query side, and on the document side only for recipes that instruct
documents. The recipe is read from the model's saved metadata (:mod:`mm_st.metadata`:
``config_sentence_transformers.json``, else the chat template's header), so it works for any model
built or trained with mm_st, local or from the Hub. :func:`mm_st_model_meta` gives the ``ModelMeta``
(real modalities, loader) that ``mteb.get_model(path)`` and ``mteb run -m path`` use once mm_st is
registered.

Example:
    >>> import mteb
    >>> from mm_st import build_model
    >>> from mm_st.testing import tiny_model
    >>> from mm_st.evaluation import MMSTEncoder
    >>> encoder = MMSTEncoder(build_model(tiny_model("llava"), recipe="vlm2vec"), name="local/tiny")
    >>> encoder.recipe, encoder.mteb_model_meta.modalities
    ('vlm2vec', ['image', 'text'])
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from mteb.models import ModelMeta
from mteb.models.model_meta import ScoringFunction
from mteb.models.abs_encoder import AbsEncoder
from mteb.types import PromptType

from mm_st import metadata, templates
from mm_st.evaluation.data import fingerprint
from mm_st.evaluation.instructions import recipe_task_prompts
from mm_st.evaluation.mmeb_v2_files import IMAGE_COLUMN, INSTRUCTION_COLUMN
from mm_st.evaluation.tasks import is_mm_st_task
from mm_st.inputs import load_image
from mm_st.recipes.registry import INSTRUCTION

logger = logging.getLogger(__name__)

_MTEB_MODALITIES = ("image", "text", "video")


# ----------------------------------------------------------------------------------------------
# Recognising an mm_st model
# ----------------------------------------------------------------------------------------------


def recipe_of(model: Any) -> str | None:
    """The mm_st recipe a loaded SentenceTransformer was built with (None for other models)."""
    return (metadata.of_model(model) or {}).get("recipe")


def _modalities(config_text: str | None, default: list[str]) -> list[str]:
    """The mteb modalities a saved ``sentence_bert_config.json`` declares (its ``modality_config``), else ``default``."""
    modality_config = json.loads(config_text).get("modality_config", {}) if config_text else {}
    return [m for m in _MTEB_MODALITIES if m in modality_config] or default


def _modalities_of_dir(path: Path) -> list[str]:
    config = path / "sentence_bert_config.json"
    return _modalities(config.read_text(encoding="utf-8") if config.is_file() else None, ["text"])


def _hub_modalities(repo_id: str, revision: str | None) -> list[str]:
    """The modalities of a Hub model's ``sentence_bert_config.json`` (image and text when it cannot be read)."""
    from huggingface_hub import hf_hub_download

    try:
        text = Path(hf_hub_download(repo_id, "sentence_bert_config.json", revision=revision)).read_text(encoding="utf-8")
    except Exception:  # no such file, no network: mm_st's models take image and text
        text = None
    return _modalities(text, ["image", "text"])


def _hub_metadata(repo_id: str, revision: str | None) -> dict[str, str | None] | None:
    """mm_st metadata of a Hub model (one or two small files), None when unavailable or offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    from huggingface_hub import hf_hub_download

    for name, read in ((metadata.CONFIG_FILE, lambda text: metadata.from_config(json.loads(text))),
                       ("chat_template.jinja", metadata.from_template)):
        try:
            found = read(Path(hf_hub_download(repo_id, name, revision=revision)).read_text(encoding="utf-8"))
        except Exception:  # not an mm_st model, no network, no such repo: let mteb handle the name
            found = None
        if found is not None:
            return found
    return None


# ----------------------------------------------------------------------------------------------
# ModelMeta and loader
# ----------------------------------------------------------------------------------------------


def _local_revision(path: Path) -> str:
    return fingerprint([p for p in path.rglob("*") if p.is_file()])


def mm_st_model_meta(model_name: str, revision: str | None = None, allow_hub: bool = True) -> ModelMeta | None:
    """``ModelMeta`` for an mm_st model directory or Hub id; None when ``model_name`` is not one.

    A local directory is named ``local/<directory name>`` with a content-fingerprint revision; the
    loader receives the path. Modalities come from the saved ``modality_config``.
    """
    path = Path(model_name).expanduser()
    if path.is_dir():
        found = metadata.read_dir(path)
        if found is None:
            return None
        modalities = _modalities_of_dir(path)
        return _meta(f"local/{path.resolve().name}", revision or _local_revision(path), found["recipe"], modalities,
                     {"model_path": str(path.resolve())})
    if not allow_hub or "/" not in model_name:
        return None
    found = _hub_metadata(model_name, revision)
    if found is None:
        return None
    return _meta(model_name, revision, found["recipe"], _hub_modalities(model_name, revision), {})


class MMSTModelMeta(ModelMeta):
    """mteb's ``ModelMeta`` for mm_st models: a model that takes video does not need mteb's ``video`` extra
    (torchcodec, which decodes video files) to load, because mm_st's tasks give videos as frame files and mm_st
    reads them itself (docs/evaluation.md); mteb's other extras still apply."""

    def _resolve_extras_groups(self) -> list[str]:
        return [group for group in super()._resolve_extras_groups() if group != "video"]


def _meta(name: str, revision: str | None, recipe: str | None, modalities: list[str], loader_kwargs: dict,
          **fields: Any) -> ModelMeta:
    fields.setdefault("use_instructions", recipe is not None and templates.get_recipe(recipe).uses_instruction)
    return MMSTModelMeta.create_empty(
        overwrites=dict(
            loader=load_mm_st_model,
            loader_kwargs=loader_kwargs,
            name=name,
            revision=revision,
            modalities=modalities,
            framework=["Sentence Transformers", "PyTorch"],
            similarity_fn_name=ScoringFunction.COSINE,
            **fields,
        )
    )


def load_mm_st_model(
    model_name: str,
    revision: str | None = None,
    *,
    model_path: str | None = None,
    recipe: str | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> MMSTEncoder:
    """mteb loader: an mm_st model (saved directory or Hub id), or a backbone built with ``recipe``.

    ``recipe`` is for raw backbones (the paper entries): ``mm_st.build_model(path, recipe)``.
    """
    from mm_st import build_model, load_model

    path = model_path or model_name
    hub_revision = revision if revision and not revision.startswith(("local-", "no_revision")) else None
    local = Path(path).expanduser().is_dir()
    is_mm_st = metadata.read_dir(Path(path)) is not None if local else recipe is None
    if recipe is not None and not is_mm_st:
        model = build_model(path, recipe=recipe, device=device, **kwargs)
    else:
        trusted, hub_revision = _own_module_code(path, local, hub_revision)
        if trusted:
            kwargs["trust_remote_code"] = True
        model = load_model(path, device=device, revision=None if local else hub_revision, **kwargs)
    return MMSTEncoder(model, name=model_name, revision=revision)


class UntrustedModelCode(ValueError):
    """A model ships a module code file that is not mm_st's own; mteb's command never runs such code."""


def _own_module_code(path: str, local: bool, revision: str | None) -> tuple[bool, str | None]:
    """Whether the module files the model ships (latent-attention pooling) are mm_st's own code, byte for byte
    (:func:`mm_st.builder.own_module_code`), so it loads without the ``trust_remote_code`` that mteb's command
    cannot pass; and the revision to load (a Hub model: the commit whose files were checked)."""
    from mm_st.builder import own_module_code

    if local:
        root = Path(path).expanduser()
    else:
        from huggingface_hub import snapshot_download

        try:
            root = Path(snapshot_download(path, revision=revision, allow_patterns=["modules.json", "*.py"]))
        except Exception:  # no such repo, offline, ...: the loader reports it
            return False, revision
        revision = root.name  # the snapshot's commit: what is loaded is what was checked
    if not (root / "modules.json").is_file():
        return False, revision
    try:
        return own_module_code(root), revision
    except ValueError as exc:
        raise UntrustedModelCode(f"{path}: {exc} mteb's command does not run a model's own code: load it in Python "
                                 "with trust_remote_code=True and pass it to mteb.evaluate.") from None


# ----------------------------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------------------------


def _rgb(image: Any) -> Any:
    return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image


def _frame(frame: Any) -> Any:
    """One frame of a tensor video (``C,H,W`` or ``H,W,C``, uint8 or float in [0, 1]) as a PIL image."""
    from PIL import Image

    array = np.asarray(frame.detach().cpu() if hasattr(frame, "detach") else frame)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return _rgb(Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array))


def video_frames(video: Any) -> Any:
    """An mteb video value in mm_st's video form (VIDEO_CONTRACT): a list of frames (PIL images or paths) or a path.

    mm_st's tasks give frame paths; mteb's ``VideoInput`` holds a tensor of frames (``T,C,H,W`` or ``T,H,W,C``),
    which becomes a list of PIL images; a path (a frame folder or video file) or a list of frames is kept as is.
    """
    if hasattr(video, "ndim") and getattr(video, "ndim", 0) == 4:
        return [_frame(frame) for frame in video]
    if isinstance(video, (list, tuple)):
        return [f if isinstance(f, (str, os.PathLike)) else _rgb(f) if hasattr(f, "mode") else _frame(f) for f in video]
    return video


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value)
    return len(value) > 0 if isinstance(value, (list, tuple)) else True


def fill_instruction(prompt: str, instruction: str) -> str:
    """A recipe's per-task prompt with ``instruction`` (trailing spaces removed) in its ``{instruction}``."""
    return prompt.replace(INSTRUCTION, instruction.rstrip(" "))


def mteb_rows(batch: dict[str, Any], instruction: str | None = None, row_prompt: str | None = None) -> list[Any]:
    """mteb batch columns -> sentence-transformers inputs: text, an image, ``{"text", "image"}`` or
    ``{"video", "text"}`` (:func:`video_frames`).

    Queries of a task whose rows carry their own instruction (``mm_st_instruction``, MomentSeeker) become dicts with
    ``"instruction"``: the row's (put in ``row_prompt``'s ``{instruction}`` where the recipe gives the task such a
    prompt), else ``instruction`` (the task's); None leaves them without one (the recipe takes no instruction).
    An ``mm_st_image`` path is the row's image where the task's category has no image column.
    """
    n = len(next(iter(v for k, v in batch.items() if k in ("text", "image", "video", "id"))))
    texts, images, videos = ([None] * n if batch.get(k) is None else batch[k] for k in ("text", "image", "video"))
    own = batch.get(INSTRUCTION_COLUMN) if instruction is not None else None
    extra_images = batch.get(IMAGE_COLUMN) or [None] * n
    out = []
    for index, (text, image, video, extra) in enumerate(zip(texts, images, videos, extra_images)):
        item: dict[str, Any] = {}
        if _present(video):
            item["video"] = video_frames(video)
        if image is not None or _present(extra):
            item["image"] = _rgb(image if image is not None else load_image(extra, index))
        if isinstance(text, str) and text:
            item["text"] = text
        if not item:
            raise ValueError(f"mteb input {index} has neither text, image nor video.")
        if own is not None:
            mine = own[index] and (fill_instruction(row_prompt, own[index]) if row_prompt else own[index])
            out.append({**item, "instruction": mine or instruction})
        elif len(item) == 1 and "video" not in item:
            out.append(next(iter(item.values())))
        else:
            out.append(item)
    return out


class MMSTEncoder(AbsEncoder):
    """mteb encoder for a SentenceTransformer built or trained with mm_st.

    Args:
        model: the SentenceTransformer (e.g. from :func:`mm_st.build_model` or ``mm_st.load_model``).
        name: model name in results (``org/name``); default from the model card or ``local/model``.
        revision: revision recorded with results.
        recipe: recipe name; default from the model's saved metadata (:func:`mm_st.metadata.of_model`).
        prompts: ``{task name: {"query": ..., "document": ...}}`` overriding the per-recipe table
            (:func:`mm_st.evaluation.instructions.recipe_task_prompts`) and the task prompts.

    Attributes:
        encoded: number of inputs passed to the model, by ``"query"`` / ``"document"``.
    """

    def __init__(self, model: Any, *, name: str | None = None, revision: str | None = None, recipe: str | None = None,
                 prompts: dict[str, dict[str, str]] | None = None, meta: ModelMeta | None = None) -> None:
        self.model = model
        self.recipe = recipe or recipe_of(model)
        if self.recipe is None:
            logger.warning("%s has no mm_st chat template; task instructions will not be applied.", name or "model")
        table = recipe_task_prompts().get(self.recipe or "", {})
        self.prompts = {**table, **(prompts or {})}
        self.encoded: Counter[str] = Counter()
        modalities = [m for m in _MTEB_MODALITIES if _supports(model, m)]
        if meta is None:
            meta = _meta(name or "local/model", revision or "no_revision_available", self.recipe, modalities, {},
                         embed_dim=model.get_embedding_dimension(), max_tokens=model.max_seq_length,
                         n_parameters=sum(p.numel() for p in model.parameters()))
        self.mteb_model_meta = meta

    # -- instructions ---------------------------------------------------------------------------
    def instruction(self, task_metadata: Any, prompt_type: PromptType | None) -> str | None:
        """The instruction this model gets for one side of a task (None: the recipe's plain prompts)."""
        if self.recipe is None or prompt_type is None:
            return None
        recipe = templates.get_recipe(self.recipe)
        side = prompt_type.value
        if side == "document" and not recipe.instruct_documents:
            return None
        override = self.prompts.get(task_metadata.name)
        if override is not None:
            value = override.get(side) or None
            if value and INSTRUCTION in value:  # a per-task full prompt around the task's own instruction
                value = fill_instruction(value, self._task_prompt(task_metadata, side) or "")
            return value or None
        if not recipe.uses_instruction:  # E5-V: fixed per-modality prompts, no instruction slot
            return None
        return self._task_prompt(task_metadata, side)

    def row_prompt(self, task_metadata: Any, prompt_type: PromptType | None) -> str | None:
        """The recipe's prompt for one side of a task around ``{instruction}``, which takes each row's own
        instruction (MomentSeeker's queries); None where the recipe gives the task none."""
        value = self.prompts.get(task_metadata.name, {}).get(getattr(prompt_type, "value", ""))
        return value if value and INSTRUCTION in value else None

    @staticmethod
    def _task_prompt(task_metadata: Any, side: str) -> str | None:
        prompt = task_metadata.prompt
        text = prompt.get(side) if isinstance(prompt, dict) else (prompt if side == "query" else None)
        if not text and side == "query" and not is_mm_st_task(task_metadata.name):
            from mteb.abstasks.abstask import get_abstask_prompt

            text = get_abstask_prompt(task_metadata.name)
        return text or None

    # -- encoding -------------------------------------------------------------------------------
    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type: PromptType | None = None,
               **kwargs: Any) -> np.ndarray:
        have = set(self.mteb_model_meta.modalities or _MTEB_MODALITIES)
        needs = set(task_metadata.get_modalities(prompt_type)) & {"text", "image", "audio", "video"}
        if needs - have:
            side = {"query": "queries", "document": "documents"}.get(getattr(prompt_type, "value", ""), "inputs")
            raise ValueError(
                f"Model {self.mteb_model_meta.name!r} supports {sorted(have)}, but the {side} of task "
                f"{task_metadata.name!r} need {sorted(needs)} (missing {sorted(needs - have)}). Nothing was encoded."
            )
        instruction = self.instruction(task_metadata, prompt_type)
        encode = {PromptType.query: self.model.encode_query, PromptType.document: self.model.encode_document}.get(
            prompt_type, self.model.encode
        )
        batch_size = kwargs.get("batch_size", 32)
        out = []
        for batch in inputs:
            items = mteb_rows(batch, instruction, self.row_prompt(task_metadata, prompt_type))
            per_row = any(isinstance(item, dict) and "instruction" in item for item in items)  # MomentSeeker
            prompt = None if per_row else instruction
            out.append(np.asarray(encode(items, prompt=prompt, batch_size=batch_size, show_progress_bar=False,
                                         convert_to_numpy=True), dtype=np.float32))
            self.encoded[prompt_type.value if prompt_type else "other"] += len(items)
        if not out:
            return np.zeros((0, self.model.get_embedding_dimension()), dtype=np.float32)
        return np.concatenate(out)


def _supports(model: Any, modality: str) -> bool:
    supports = getattr(model, "supports", None)
    return bool(supports(modality)) if callable(supports) else modality == "text"


# ----------------------------------------------------------------------------------------------
# Paper models (no remote code needed)
# ----------------------------------------------------------------------------------------------

PAPER_MODELS: list[ModelMeta] = []


def paper_models() -> list[ModelMeta]:
    """mteb entries that build the paper models' public weights with mm_st's recipes: a view of the registered
    recipes' ``paper_models`` (:mod:`mm_st.recipes`).

    Named ``mm_st/...`` so mteb's own entries for the same weights stay untouched. MM-Embed
    (``nvidia/MM-Embed``) and VLM2Vec's Phi-3.5-V checkpoints need remote code and have no entry.
    """
    from mm_st.recipes.registry import specs

    declared = [(spec.name, paper) for spec in specs() for paper in spec.paper_models]
    if [meta.name for meta in PAPER_MODELS] != [paper.name for _, paper in declared]:
        PAPER_MODELS[:] = [_paper_meta(recipe, paper) for recipe, paper in declared]
    return PAPER_MODELS


def _paper_meta(recipe: str, paper: Any) -> ModelMeta:
    """The mteb entry of one :class:`mm_st.recipes.PaperModel` built with ``recipe``."""
    instructions = {} if paper.use_instructions is None else {"use_instructions": paper.use_instructions}
    return _meta(paper.name, None, recipe, ["image", "text"], {"model_path": paper.weights, "recipe": recipe},
                 adapted_from=paper.weights, reference=f"https://huggingface.co/{paper.weights}",
                 public_training_code=paper.training_code, languages=["eng-Latn"], open_weights=True, embed_dim=4096,
                 **instructions)
