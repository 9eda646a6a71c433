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
from mm_st.model import MultimodalSentenceTransformer, check_num_frames
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


def use_own_frame_sampling(transformer: Transformer, family: templates.Family) -> None:
    """On a backbone that takes video, have its video processor keep every frame given (``do_sample_frames=False``,
    saved in the module's ``processing_kwargs``): mm_st samples the frames itself, as VLM2Vec-V2 does
    (:func:`mm_st.inputs.sample_frames`); Qwen3-VL's processor would otherwise sample them again at 2 fps."""
    if family.takes_video:
        video = transformer.processing_kwargs.get("video", {})
        transformer.processing_kwargs = {**transformer.processing_kwargs, "video": {**video, "do_sample_frames": False}}


def use_recipe_processor_settings(transformer: Transformer, recipe: str, family: templates.Family) -> None:
    """Set what the recipe's code sets on this family's processor (:class:`mm_st.recipes.RecipeSpec`
    ``processor_settings``, e.g. VLM2Vec-V2's Qwen2-VL pixel bounds); ``save`` writes them with the processor, so a
    plain sentence-transformers reload gives the same inputs."""
    from mm_st.recipes.registry import get_spec

    for attribute, settings in get_spec(recipe).processor_settings.get(family.name, {}).items():
        processor = getattr(transformer.processor, attribute, None)
        if processor is None:
            raise ValueError(f"Recipe {recipe!r} sets the {attribute} of {family.name} processors, which this "
                             f"backbone's {type(transformer.processor).__name__} does not have.")
        for key, value in settings.items():
            setattr(processor, key, dict(value) if isinstance(value, dict) else value)


def configure_processor(transformer: Transformer, recipe: str, family: templates.Family) -> None:
    """What a new and a continued model both set on the backbone's processor: mm_st's own frame sampling and the
    recipe's processor settings."""
    use_own_frame_sampling(transformer, family)
    use_recipe_processor_settings(transformer, recipe, family)


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


def loading_kwargs(model_kwargs: dict | None, processor_kwargs: dict | None, *, dtype: Any = None,
                   attn_implementation: str | None = None, trust_remote_code: bool = False,
                   max_length: int | None = None) -> tuple[dict, dict]:
    """The ``model_kwargs`` / ``processor_kwargs`` of sentence-transformers' ``Transformer`` for these options
    (copies; ``max_length`` becomes the processor's ``model_max_length``).

    Example:
        >>> loading_kwargs(None, None, dtype="bfloat16", max_length=64)
        ({'dtype': 'bfloat16'}, {'model_max_length': 64})
    """
    model_kwargs, processor_kwargs = dict(model_kwargs or {}), dict(processor_kwargs or {})
    if dtype is not None:
        model_kwargs["dtype"] = dtype
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    if trust_remote_code:
        model_kwargs["trust_remote_code"] = processor_kwargs["trust_remote_code"] = True
    if max_length is not None:
        processor_kwargs["model_max_length"] = max_length
    return model_kwargs, processor_kwargs


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
    vision_tower: str = "train",
    num_frames: int | None = None,
) -> MultimodalSentenceTransformer:
    """Assemble a prompt-based embedding model from a multimodal LLM or a causal LM.

    Args:
        model_name_or_path: Hub id or local directory of a transformers model, or a model saved by
            mm_st / sentence-transformers (a folder with ``modules.json``, e.g. a training stage's
            ``model/``) to continue from: adapter-only folders load the base their adapter config names,
            then the adapter, which stays trainable (see :func:`continue_from`).
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
        vision_tower: ``"train"`` (like the rest), ``"frozen"`` or ``"lora"`` (:mod:`mm_st.tower`; also applied when
            continuing a saved model).
        num_frames: frames a video input is sampled to (VLM2Vec-V2's sampling, :func:`mm_st.inputs.sample_frames`);
            saved with the model. None: 8 (VLM2Vec-V2's ``video.yaml``), or the saved model's own when continuing.

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

    from mm_st import tower

    latent_kwargs = _check_architecture(pooling, attention, pooling_kwargs, adapter)
    recipe_spec = templates.get_recipe(recipe, prompt_format)
    if saved_model_folder(model_name_or_path):
        return continue_from(model_name_or_path, recipe, prompt_format=prompt_format, family=family, wrapper=wrapper,
                             max_length=max_length, dtype=dtype, adapter=adapter, device=device, model_kwargs=model_kwargs,
                             processor_kwargs=processor_kwargs, trust_remote_code=trust_remote_code,
                             vision_tower=vision_tower, num_frames=num_frames)
    tower.check_mode(vision_tower, adapter)
    check_backbone_folder(model_name_or_path)
    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    family_spec = templates.get_family(family) if family else templates.family_for_model_type(config.model_type)

    model_kwargs, processor_kwargs = loading_kwargs(model_kwargs, processor_kwargs, dtype=dtype,
                                                    attn_implementation=attn_implementation,
                                                    trust_remote_code=trust_remote_code, max_length=max_length)

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
    configure_processor(transformer, recipe_spec.name, family_spec)
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
    if num_frames is not None:
        model.num_frames = check_num_frames(num_frames)
    tower.add_adapter(model, None if adapter is None else _peft_config(adapter), vision_tower)
    return model


def saved_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local folder holding a saved sentence-transformers model (``modules.json``)."""
    return (Path(path) / "modules.json").is_file()


def check_backbone_folder(path: str | os.PathLike) -> None:
    """A local directory given as a backbone must hold a transformers model; say what it lacks.

    Example:
        >>> import tempfile
        >>> check_backbone_folder(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ... is empty: expected a transformers model (config.json + weights) or a saved model ...
    """
    root = Path(path)
    if not root.is_dir() or (root / "config.json").is_file():
        return
    expected = ("expected a transformers model (config.json + weights) or a saved model (modules.json, e.g. a "
                "training stage's model/ folder; adapter-only folders hold adapter_config.json next to it)")
    if not any(root.iterdir()):
        raise FileNotFoundError(f"{str(root)!r} is empty: {expected}.")
    if (root / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{str(root)!r} holds a PEFT adapter but no modules.json: {expected}. Load the base "
                                "model and the adapter with peft, or point at the folder sentence-transformers saved.")
    raise FileNotFoundError(f"{str(root)!r} has no config.json and no modules.json: {expected}.")


def _adapter_base(path: Path) -> str | None:
    config = path / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")


def continue_from(
    path: str,
    recipe: str,
    *,
    prompt_format: str = "inference",
    family: str | None = None,
    wrapper: str | None = None,
    max_length: int | None = None,
    dtype: Any = None,
    adapter: Any = None,
    device: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    vision_tower: str = "train",
    num_frames: int | None = None,
) -> MultimodalSentenceTransformer:
    """A saved model (a folder with ``modules.json``) ready to train further with ``recipe``'s prompts.

    A folder whose modules ship their own code file (latent-attention pooling) loads when every such file is
    byte-identical to the installed mm_st's own module (mm_st's code, not remote code), or with
    ``trust_remote_code=True``; otherwise it is refused, naming the file.

    The folder loads as sentence-transformers loads it: an adapter-only folder loads the base model its
    ``adapter_config.json`` names (which must still exist, or be a Hub id), then the adapter. The
    adapter stays the one trained (its weights trainable; ``adapter`` is then ignored, logged); a
    full-weights folder gets ``adapter`` added when given. The chat template is rendered again for
    ``recipe`` / ``prompt_format`` (the family is the one the folder recorded, :mod:`mm_st.metadata`).
    ``vision_tower`` ``"frozen"`` / ``"lora"`` keeps the image tower's own weights fixed (:mod:`mm_st.tower`).

    Example:
        >>> import tempfile
        >>> from mm_st import build_model
        >>> from mm_st.testing import tiny_model
        >>> folder = tempfile.mkdtemp()
        >>> build_model(tiny_model("qwen2_vl"), recipe="mmembed", adapter={"r": 4}).save(folder)
        >>> again = build_model(folder, recipe="mmembed")
        >>> any(p.requires_grad for n, p in again.named_parameters() if "lora_A" in n)
        True
    """
    import logging

    from transformers import AutoConfig

    from mm_st import metadata, tower

    check_saved_model(path)
    root = Path(path)
    recipe_spec = templates.get_recipe(recipe, prompt_format)
    saved_meta = metadata.read_dir(root) or {}
    base = _adapter_base(root)
    if family is None:
        family = saved_meta.get("family")
    if family is None:
        source = base if base is not None else str(root)
        try:
            family = templates.family_for_model_type(AutoConfig.from_pretrained(source).model_type).name
        except OSError as exc:
            raise OSError(f"{str(root)!r}: cannot tell the backbone family (no mm_st metadata, and the base "
                          f"{source!r} does not load: {exc}); pass family=.") from exc
    family_spec = templates.get_family(family)
    if base is not None and not saved_model_base_exists(base):
        raise FileNotFoundError(f"{str(root)!r} is an adapter-only model whose adapter_config.json names the base "
                                f"model {base!r}, which does not exist here; restore it or point the adapter at it.")
    model_kwargs, processor_kwargs = loading_kwargs(model_kwargs, processor_kwargs, dtype=dtype, max_length=max_length)
    same_recipe = saved_meta.get("recipe") == recipe
    chat_template, meta = _recipe_chat_template(str(root), recipe_spec, family_spec,
                                                wrapper or (saved_meta.get("wrapper") if same_recipe else None),
                                                prompt_format, processor_kwargs)
    trusted = trust_remote_code or own_module_code(root)
    model = MultimodalSentenceTransformer(str(root), device=device, model_kwargs=model_kwargs or None,
                                          processor_kwargs={**processor_kwargs, "chat_template": chat_template},
                                          trust_remote_code=trusted)
    transformer = model[0]
    configure_processor(transformer, recipe_spec.name, family_spec)
    tokenizer = _tokenizer_of(transformer.processor)
    if tokenizer is not transformer.processor:
        tokenizer.chat_template = chat_template
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.mm_st_metadata = meta
    if num_frames is not None:
        model.num_frames = check_num_frames(num_frames)
    backbone = transformer.model
    if getattr(backbone, "_hf_peft_config_loaded", False):
        tower.freeze(backbone, vision_tower)
        # transformers loads a saved adapter for inference (frozen); train it again, as peft's is_trainable=True
        for name, parameter in backbone.named_parameters():
            if "lora_" in name:
                parameter.requires_grad_(True)
        if adapter is not None:
            logging.getLogger(__name__).info("%s already holds an adapter; training it further (the adapter "
                                             "settings given are not used).", root)
    else:
        tower.add_adapter(model, None if adapter is None else _peft_config(adapter), vision_tower)
    return model


def own_module_code(root: Path) -> bool:
    """Whether the custom module files a saved folder ships (``modules.json`` types ``<file>.<Class>``) are all
    byte-identical to the installed mm_st's own modules; False when it ships none. Raises naming a file that
    differs (loading it would run code that is not mm_st's: pass ``trust_remote_code=True`` if you trust it)."""
    import importlib
    import inspect

    shipped = []
    for entry in json.loads((root / "modules.json").read_text(encoding="utf-8")):
        stem, _, name = str(entry.get("type", "")).rpartition(".")
        if stem and "." not in stem and (root / f"{stem}.py").is_file():
            shipped.append((root / f"{stem}.py", name))
    for path, name in shipped:
        try:
            own = inspect.getfile(getattr(importlib.import_module(f"mm_st.{path.stem}"), name))
        except (ImportError, AttributeError):
            own = None
        if own is None or Path(own).read_bytes() != path.read_bytes():
            raise ValueError(f"{str(path)!r} (module {name}) is not mm_st's own code file: loading it runs its code. "
                             "Pass trust_remote_code=True only if you trust it.")
    return bool(shipped)


def saved_model_base_exists(base: str) -> bool:
    """A local base path must exist; anything else (a Hub id) is left to the loader."""
    from mm_st.io import is_local

    return not is_local(base) or Path(base).is_dir()


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
