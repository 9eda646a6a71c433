"""``build_model``: a multimodal LLM (or a text-only causal LM) as a prompt-based embedding model.

The result is sentence-transformers' own pipeline: ``Transformer`` (with the recipe's prompts saved
as its chat template, left padding) -> ``Pooling("lasttoken")`` -> ``Normalize``; the recipe's name,
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

from typing import Any

from sentence_transformers.base.modules import Normalize, Transformer
from sentence_transformers.sentence_transformer.modules import Pooling

from mm_st import templates
from mm_st.metadata import recipe_metadata
from mm_st.model import MultimodalSentenceTransformer


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
    """
    from transformers import AutoConfig

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

    transformer = Transformer(
        model_name_or_path,
        model_kwargs=model_kwargs,
        processor_kwargs=processor_kwargs,
        config_kwargs={"trust_remote_code": trust_remote_code} if trust_remote_code else None,
    )
    processor, tokenizer = transformer.processor, _tokenizer_of(transformer.processor)
    if wrapper is None and recipe_spec.wrapped:
        own_template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
        detected = templates.detect_wrapper(tokenizer.get_vocab(), own_template if isinstance(own_template, str) else None)
        wrapper = detected.name if detected else None
    # saved in config_sentence_transformers.json (mm_st.metadata): the wrapper as resolved for this template
    meta = recipe_metadata(recipe, family_spec.name, templates.wrapper_for(recipe_spec, family_spec, wrapper).name, prompt_format)
    chat_template = templates.render_chat_template(
        recipe,
        family_spec.name,
        wrapper=wrapper,
        bos=tokenizer.bos_token if tokenizer is processor and _adds_bos(tokenizer) else "",
        fmt=prompt_format,
    )
    processor.chat_template = chat_template
    if tokenizer is not processor:
        tokenizer.chat_template = chat_template
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Re-infer modalities now that a chat template exists (text-only LMs gain the "message" modality).
    transformer.modality_config, transformer.module_output_name = transformer.infer_modalities(
        transformer.model, processor
    )
    transformer.input_formatter.supported_modalities = list(transformer.modality_config)
    transformer.input_formatter.message_format = "structured"  # what the rendered template reads

    dim = transformer.get_embedding_dimension()
    model = MultimodalSentenceTransformer(
        modules=[transformer, Pooling(dim, pooling_mode="lasttoken"), Normalize()],
        device=device,
        similarity_fn_name="cosine",
    )
    model.model_card_data.model_name = f"SentenceTransformer: {recipe} recipe on a {family_spec.name} backbone (mm_st)"
    model.mm_st_metadata = meta
    if adapter is not None:
        _add_adapter(model, _peft_config(adapter))
    return model


def load_model(path: str, **kwargs) -> MultimodalSentenceTransformer:
    """Load a model saved by mm_st (or any SentenceTransformer) with mm_st's input handling."""
    return MultimodalSentenceTransformer(path, **kwargs)
