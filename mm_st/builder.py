"""``build_model``: a multimodal LLM (or a text-only causal LM) as a prompt-based embedding model.

The result is sentence-transformers' own pipeline: ``Transformer`` (with the recipe's prompts saved
as its chat template, left padding) -> ``Pooling("lasttoken")`` -> ``Normalize``. MM-Embed's architecture is
an option: ``pooling="latent_attention"`` puts :class:`mm_st.latent_attention.LatentAttentionPooling` in place of
``Pooling`` (its code travels with the saved model, which then loads with ``trust_remote_code=True``), and
``attention="bidirectional"`` switches the language model to bidirectional attention (a flag in its saved
config; no custom code). The recipe's name,
family, wrapper and format are saved in ``config_sentence_transformers.json`` (:mod:`mm_st.metadata`). Queries and
documents follow the recipe through the template's ``task`` variable; an instruction is passed as
``encode_query(x, prompt=instruction)``.

Example:
    >>> from mm_st import build_model
    >>> from mm_st.testing import tiny_model
    >>> model = build_model(tiny_model("llava_next"), recipe="e5v")
    >>> model.encode(["A dog runs."]).shape
    (1, 64)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sentence_transformers.base.modules import Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from mm_st import templates
from mm_st.latent_attention import LatentAttentionPooling, use_bidirectional_attention
from mm_st.metadata import recipe_metadata
from mm_st.model import MultimodalSentenceTransformer
from mm_st.io import PathOutsideRoot, resolve_inside


def _tokenizer_of(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts BOS first on its own (processor calls do; chat-template calls don't)."""
    bos_id = tokenizer.bos_token_id
    return bos_id is not None and tokenizer("a")["input_ids"][:1] == [bos_id]


def _peft_config(adapter: Any) -> Any:
    from peft import LoraConfig, PeftConfig, TaskType

    if isinstance(adapter, PeftConfig):
        return adapter
    if isinstance(adapter, dict):
        return LoraConfig(**{"task_type": TaskType.FEATURE_EXTRACTION, "target_modules": "all-linear", **adapter})
    raise TypeError(f"adapter must be a peft.PeftConfig or a dict of LoraConfig arguments, got {type(adapter).__name__}")


def _recipe_chat_template(
    path: str, recipe: templates.Recipe, family: templates.Family, wrapper: str | None, fmt: str, processor_kwargs: dict
) -> tuple[str, dict]:
    """The recipe rendered for this backbone, and its metadata (:mod:`mm_st.metadata`).

    The wrapper (E5-V) is detected from the backbone's own tokenizer.
    """
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path, **processor_kwargs)
    tokenizer = _tokenizer_of(processor)
    if wrapper is None and recipe.wrapped:
        own_template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
        detected = templates.detect_wrapper(tokenizer.get_vocab(), own_template if isinstance(own_template, str) else None)
        wrapper = detected.name if detected else None
    bos = tokenizer.bos_token if tokenizer is processor and _adds_bos(tokenizer) else ""
    # saved in config_sentence_transformers.json (mm_st.metadata): the wrapper as resolved for this template
    meta = recipe_metadata(recipe.name, family.name, templates.wrapper_for(recipe, family, wrapper).name, fmt)
    return templates.render_chat_template(recipe.name, family.name, wrapper=wrapper, bos=bos, fmt=fmt), meta


POOLINGS = ("lasttoken", "latent_attention")
ATTENTIONS = ("causal", "bidirectional")
LATENT_ATTENTION_KWARGS = ("num_latents", "num_heads", "head_dim", "ff_mult", "mask_marker")


def _check_architecture(pooling: str, attention: str, pooling_kwargs: dict | None, adapter: Any) -> dict:
    """The latent-attention arguments, after checking ``pooling`` / ``attention`` and their combinations."""
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}. Known poolings: {', '.join(POOLINGS)}.")
    if attention not in ATTENTIONS:
        raise ValueError(f"Unknown attention {attention!r}. Known attentions: {', '.join(ATTENTIONS)}.")
    kwargs = dict(pooling_kwargs or {})
    if kwargs and pooling != "latent_attention":
        raise ValueError(f"pooling_kwargs {sorted(kwargs)} apply to pooling='latent_attention' only, not {pooling!r}.")
    unknown = sorted(set(kwargs) - set(LATENT_ATTENTION_KWARGS))
    if unknown:
        raise ValueError(f"Unknown pooling_kwargs {unknown}. Known: {', '.join(LATENT_ATTENTION_KWARGS)}.")
    if attention == "bidirectional" and adapter is not None and pooling == "lasttoken":
        raise ValueError(
            "attention='bidirectional' with an adapter needs pooling='latent_attention': a model with an adapter is "
            "saved as the adapter alone and loads its base model's (causal) config, and only the latent-attention "
            "module switches bidirectional attention back on at load. Train full weights for a portable "
            "bidirectional last-token model."
        )
    return kwargs


# The transformers/peft pairs the test suite passes on (requirements.lock); see pyproject.toml for the ranges.
TESTED_ADAPTER_PAIRS = "transformers 5.23.x with peft 0.21.2"


def _add_adapter(model: MultimodalSentenceTransformer, config: Any) -> None:
    """``model.add_adapter(config)``, with a clear error when the installed transformers refuses the installed peft."""
    try:
        model.add_adapter(config)
    except ValueError as error:
        if "PEFT" not in str(error):
            raise
        from importlib.metadata import version

        raise ImportError(
            f"Cannot add a LoRA/DoRA adapter: transformers {version('transformers')} does not accept peft "
            f"{version('peft')} ({error}). Tested pairs: {TESTED_ADAPTER_PAIRS}. transformers 5.24 needs peft >= 0.22, "
            "which is not released yet. Install the tested set: `pip install -c requirements.lock mm-st` from a checkout, "
            "or `pip install 'transformers>=5.23,<5.24'`."
        ) from error


def build_model(
    model_name_or_path: str,
    recipe: str = "e5v",
    *,
    prompt_format: str = "inference",
    family: str | None = None,
    wrapper: str | None = None,
    max_length: int | None = None,
    dtype: Any = None,
    attn_implementation: str | None = None,
    adapter: Any = None,
    device: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    pooling: str = "lasttoken",
    attention: str = "causal",
    pooling_kwargs: dict[str, Any] | None = None,
) -> MultimodalSentenceTransformer:
    """Assemble a prompt-based embedding model from a multimodal LLM or a causal LM.

    Args:
        model_name_or_path: Hub id or local directory of a transformers model.
        recipe: ``"e5v"``, ``"mme5"``, ``"vlm2vec"`` or ``"mmembed"`` (see :mod:`mm_st.templates`).
        prompt_format: ``"inference"`` (the released models' text) or ``"train"`` (the text the
            reference training code feeds; see :data:`mm_st.templates.TRAIN_RECIPES`).
        family: backbone family; detected from the config's ``model_type`` when None.
        wrapper: chat wrapper for wrapped recipes (E5-V); detected from the tokenizer when None.
        max_length: token limit per input (images are never cut, see :mod:`mm_st.model`).
        dtype: e.g. ``torch.bfloat16``; passed to ``from_pretrained``.
        attn_implementation: e.g. ``"sdpa"``, ``"eager"``, ``"flash_attention_2"``.
        adapter: a ``peft.PeftConfig`` (LoRA/DoRA) or a dict of ``LoraConfig`` arguments
            (e.g. ``{"r": 8, "use_dora": True}``); None for full weights.
        device: device to put the model on.
        model_kwargs, processor_kwargs: passed to the ``Transformer`` module.
        trust_remote_code: off by default; only for backbones that need remote code.
        pooling: ``"lasttoken"`` (default: sentence-transformers' ``Pooling``, loads anywhere) or
            ``"latent_attention"`` (NV-Embed / MM-Embed, :mod:`mm_st.latent_attention`; the instruction of
            queries is left out of the pool when the recipe has an ``instruction_marker``; the saved model
            loads with ``trust_remote_code=True``).
        attention: ``"causal"`` (default) or ``"bidirectional"`` (NV-Embed: the language model's causal mask
            removed, transformers' ``is_causal=False``; saved in ``config.json``).
        pooling_kwargs: for ``"latent_attention"``: ``num_latents`` (512), ``num_heads`` (8), ``head_dim``
            (the hidden size), ``ff_mult`` (4), ``mask_marker`` (False).

    Example:
        >>> from mm_st.testing import tiny_model
        >>> model = build_model(tiny_model("qwen2_vl"), recipe="mmembed", pooling="latent_attention",
        ...                     attention="bidirectional", pooling_kwargs={"num_latents": 16})
        >>> type(model[1]).__name__, model[0].model.config.get_text_config().is_causal
        ('LatentAttentionPooling', False)
        >>> model.encode_query(["a red heart"], prompt="Find the emoji.").shape
        (1, 64)
    """
    from transformers import AutoConfig

    latent_kwargs = _check_architecture(pooling, attention, pooling_kwargs, adapter)
    recipe_spec = templates.get_recipe(recipe, prompt_format)
    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    family_spec = templates.get_family(family) if family else templates.family_for_model_type(config.model_type)

    model_kwargs = dict(model_kwargs or {})
    if dtype is not None:
        model_kwargs["dtype"] = dtype
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    processor_kwargs = dict(processor_kwargs or {})
    if trust_remote_code:
        model_kwargs["trust_remote_code"] = processor_kwargs["trust_remote_code"] = True
    if max_length is not None:
        processor_kwargs["model_max_length"] = max_length

    chat_template, meta = _recipe_chat_template(
        model_name_or_path, recipe_spec, family_spec, wrapper, prompt_format, processor_kwargs
    )
    # sentence-transformers infers the modalities and the message format from the processor's chat template
    # (text-only LMs gain the "message" modality; the template reads structured content).
    transformer = Transformer(
        model_name_or_path,
        model_kwargs=model_kwargs,
        processor_kwargs={**processor_kwargs, "chat_template": chat_template},
        config_kwargs={"trust_remote_code": trust_remote_code} if trust_remote_code else None,
    )
    tokenizer = _tokenizer_of(transformer.processor)
    if tokenizer is not transformer.processor:
        tokenizer.chat_template = chat_template  # saved beside the processor's: keep the two files the same
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    if attention == "bidirectional":
        use_bidirectional_attention(transformer.model)
    dim = transformer.get_embedding_dimension()
    if pooling == "latent_attention":
        pool = LatentAttentionPooling(
            dim, instruction_marker=recipe_spec.instruction_marker, bidirectional=attention == "bidirectional",
            **latent_kwargs,
        )
        if dtype is not None:
            pool = pool.to(dtype)
    else:
        pool = Pooling(dim, pooling_mode="lasttoken")
    model = MultimodalSentenceTransformer(
        modules=[transformer, pool, Normalize()],
        device=device,
        similarity_fn_name="cosine",
    )
    model.model_card_data.model_name = f"SentenceTransformer: {recipe} recipe on a {family_spec.name} backbone (mm_st)"
    model.mm_st_metadata = meta
    if adapter is not None:
        _add_adapter(model, _peft_config(adapter))
    return model


def check_saved_model(path: str | os.PathLike) -> None:
    """Refuse a local directory that is not a complete saved sentence-transformers model.

    Without ``modules.json`` sentence-transformers would silently build a different model (mean
    pooling, no normalisation) from the weights; this names the missing or invalid file instead.
    Hub ids (no such local directory) are left to sentence-transformers.

    Example:
        >>> import tempfile
        >>> check_saved_model(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ...modules.json' is missing...
    """
    root = Path(path)
    if not root.is_dir():
        return
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        raise FileNotFoundError(
            f"{str(root)!r} is not a complete saved sentence-transformers model: {str(modules_file)!r} is missing. "
            "To start from a raw backbone, use mm_st.build_model(path, recipe=...)."
        )
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Invalid {str(modules_file)!r}: not valid UTF-8 JSON ({exc}).") from exc
    if not isinstance(modules, list) or not modules:
        raise ValueError(f"Invalid {str(modules_file)!r}: expected a non-empty JSON list of modules.")
    for index, module in enumerate(modules):
        if not (isinstance(module, dict) and isinstance(module.get("path"), str) and isinstance(module.get("type"), str)):
            raise ValueError(f"Invalid {str(modules_file)!r}: entry {index} needs string 'path' and 'type' fields.")
        try:
            inside = resolve_inside(root, module["path"], what="module").is_dir()
        except PathOutsideRoot:
            inside = False
        if not inside:
            raise FileNotFoundError(
                f"{str(modules_file)!r}: entry {index} ({module['type']}) names directory {module['path']!r}, "
                f"which is missing or outside {str(root)!r}."
            )


def load_model(path: str, **kwargs) -> MultimodalSentenceTransformer:
    """Load a model saved by mm_st (or any SentenceTransformer) with mm_st's input handling.

    A local directory must be a complete saved model (see :func:`check_saved_model`);
    a raw backbone goes through :func:`build_model`.
    """
    check_saved_model(path)
    return MultimodalSentenceTransformer(path, **kwargs)
