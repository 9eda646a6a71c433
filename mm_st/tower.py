"""What training does to the backbone's image tower: ``"train"`` it like the rest, keep it ``"frozen"``, or adapt it
with ``"lora"`` (its own weights fixed, LoRA modules added).

A pretrained tower trained with full weights at a CPU-sized learning rate is destroyed (and a CNN's BatchNorm layers
overwrite their ImageNet statistics in train mode), so ``frozen`` and ``lora`` also keep the tower in eval mode.
:func:`add_adapter` is the one place :func:`mm_st.build_model` adds a recipe's adapter; with ``frozen`` / ``lora`` it
resolves the adapter's ``target_modules`` into explicit module names:

- ``frozen``: the recipe's targets outside the tower; the tower gets no adapter and no gradient.
- ``lora``: those, plus the tower's modules the targets name; where they name none of the tower's modules (a CNN
  tower such as EfficientNet-Lite0, whose layers are ``conv_pw`` / ``conv_pwl`` ...), every linear layer and 1 x 1
  convolution of the tower (spatial convolutions keep their weights: peft's LoRA cannot follow timm's dynamic
  "same" padding).

Example:
    >>> from mm_st import build_model
    >>> from mm_st.testing import tiny_model
    >>> model = build_model(tiny_model("llava_next"), recipe="vlm2vec", adapter={"r": 2}, vision_tower="frozen")
    >>> any("lora_" in n for n, _ in model.transformers_model.vision_tower.named_parameters())
    False
"""

from __future__ import annotations

import re
from typing import Any

MODES = ("train", "frozen", "lora")


def check_mode(mode: str, adapter: Any) -> None:
    """Raise ValueError for an unknown mode, or ``lora`` without an adapter (the rest would train full weights, and a
    saved model would keep the adapter alone)."""
    if mode not in MODES:
        raise ValueError(f"vision_tower={mode!r} is not one of {', '.join(MODES)}.")
    if mode == "lora" and adapter is None:
        raise ValueError("vision_tower='lora' needs an adapter on the language model too (--adapter lora or dora): with "
                         "full weights the saved model would keep the adapter alone; use --vision-tower frozen or train.")


def _supported(module: Any) -> bool:
    import torch

    return isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Embedding)) or _pointwise(module)


def _pointwise(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and module.groups == 1


def _named(spec: Any, name: str, module: Any, output: Any) -> bool:
    """Whether peft's ``target_modules`` ``spec`` ("all-linear", a regex, or a list of suffixes) names this module."""
    import torch

    if spec == "all-linear":
        return isinstance(module, torch.nn.Linear) and module is not output
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(name == target or name.endswith("." + target) for target in spec)


def target_names(backbone: Any, spec: Any, mode: str) -> list[str]:
    """Explicit module names for the adapter of ``mode`` (``frozen`` or ``lora``), from the recipe's ``spec``."""
    import torch

    from mm_st.real_vision import vision_tower

    tower = vision_tower(backbone)
    output = backbone.get_output_embeddings() if hasattr(backbone, "get_output_embeddings") else None
    inside = {id(m) for m in tower.modules()}
    named = [(n, m) for n, m in backbone.named_modules() if n and _supported(m) and _named(spec, n, m, output)]
    names = [n for n, m in named if id(m) not in inside]
    if mode == "lora":
        own = [n for n, m in named if id(m) in inside]
        prefix = next(n for n, m in backbone.named_modules() if m is tower)
        names += own or [f"{prefix}.{n}" for n, m in tower.named_modules()
                         if n and (isinstance(m, torch.nn.Linear) or _pointwise(m))]
    return names


def has_tower(backbone: Any) -> bool:
    """Whether the backbone has an image tower (a text-only LM has none: every mode trains it the same way)."""
    from mm_st.real_vision import vision_tower

    try:
        vision_tower(backbone)
    except ValueError:
        return False
    return True


def freeze(backbone: Any, mode: str) -> None:
    """Keep the tower's own weights and BatchNorm statistics fixed for ``frozen`` / ``lora`` (no tower: nothing)."""
    from mm_st.real_vision import freeze_vision_tower

    if mode != "train" and has_tower(backbone):
        freeze_vision_tower(backbone)


def add_adapter(model: Any, config: Any, mode: str) -> None:
    """Set the tower up for ``mode`` and add the adapter ``config`` (a ``peft.PeftConfig``, or None)."""
    import copy

    check_mode(mode, config)
    backbone = model.transformers_model
    if mode == "train" or not has_tower(backbone):
        if config is not None:
            _add_adapter(model, config)
        return
    freeze(backbone, mode)
    if config is not None:
        config = copy.copy(config)
        config.target_modules = set(target_names(backbone, config.target_modules, mode))
        _add_adapter(model, config)


# The transformers/peft pairs the test suite passes on (requirements.lock); see pyproject.toml for the ranges.
TESTED_ADAPTER_PAIRS = "transformers 5.23.x with peft 0.21.2"


def _add_adapter(model: Any, config: Any) -> None:
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
