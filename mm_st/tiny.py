"""Tiny, randomly initialised multimodal checkpoints, built offline and deterministically.

Production code, not only a test helper: the embedded default of every recipe (:mod:`mm_st.training.embedded`)
trains one of these backbones, and :mod:`mm_st.real_vision` builds its pretrained-tower variant from a spec here.
Tests, doctests and the docs reach it as :mod:`mm_st.testing` (the same names).

:func:`tiny_model` builds one backbone family (model config + weights, processor, tokenizer and a
default chat template), saves it as a normal Hugging Face directory and returns the path. Nothing
is downloaded: the tokenizer is a byte-level BPE trained on a fixed corpus written in this file,
and the weights come from ``torch.manual_seed(seed)``. The same ``(family, seed)`` always gives
byte-identical ``model.safetensors`` and ``tokenizer.json``.

Example:
    >>> from mm_st.tiny import tiny_model
    >>> path = tiny_model("qwen2_vl")  # cached under $MM_ST_CACHE (default ~/.cache/mm_st)
    >>> from transformers import AutoModel, AutoProcessor
    >>> model, processor = AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)
    >>> model.config.text_config.hidden_size
    64

Every family is one entry of :data:`SPECS` (a :class:`FamilySpec`); the code that trains the
tokenizer, builds, saves and caches is shared. To add a family, add a spec.
"""

from __future__ import annotations

import functools
import os
import random
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mm_st.cache import build_atomically, cache_root

__all__ = ["TINY_FAMILIES", "SPECS", "FamilySpec", "SpecialTokens", "build", "chatml_template", "tiny_model"]

# Bump when the build changes, so stale caches are not reused.
_CACHE_VERSION = "v1"
_COMPLETE_MARKER = ".mm_st_tiny_complete"
_BPE_VOCAB_SIZE = 1024

# Shared sizes: text hidden 64, 2 layers, 4 heads of 16 (2 KV heads); vision hidden 32, 2 layers, 2 heads.
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
_VISION_HIDDEN = 32
_VISION_INTERMEDIATE = 64


# --------------------------------------------------------------------------------------------------
# Tokenizer: one byte-level BPE per process, shared by all families (they only add special tokens).
# --------------------------------------------------------------------------------------------------

_WORDS = """
the of and to in is was for on that with as by at from it be are this which or an have has not but they
his her their its one two three four five six seven eight nine ten first second new old big small long
short good bad great high low left right top bottom above below inside outside near far front back
image picture photo photograph video frame scene view shot drawing painting sketch diagram chart map
summary summarize describe description caption title word sentence paragraph passage document query
question answer retrieve retrieval represent representation embedding similar match find given
following based style change modify modified dress shirt toptee fashion news event everyday
instruct instruction user assistant system model text visual vision language task search
a cat dog bird horse cow sheep fish mouse lion tiger bear elephant zebra giraffe monkey rabbit
man woman person people child children boy girl baby player team group crowd family friend
car bus train truck bicycle motorcycle airplane boat ship road street city town building house
room kitchen table chair bed sofa door window wall floor roof garden park field forest tree
flower grass mountain river lake sea ocean beach sky cloud sun moon star rain snow water fire
red green blue yellow black white gray brown orange pink purple color light dark bright
food pizza sandwich cake apple banana orange coffee tea bread plate cup bottle glass bowl
sitting standing walking running playing eating holding looking riding flying swimming wearing
computer phone laptop keyboard screen book paper pen clock bag umbrella ball kite skateboard
day night morning evening today yesterday tomorrow year month week time hour minute second
what where when who why how which whose there here very more most less few many much some all
""".split()

_PHRASES = (
    "Summary above image in one word:",
    "Summary above sentence in one word:",
    "Summary above image in one word: ",
    "Represent the given image.",
    "Represent the given image with the following question:",
    "Find me an everyday image that matches the given caption:",
    "Identify the object shown in the image.",
    "Identify the scene shown in the image.",
    "Retrieve passages from Wikipedia that provide answers to the following question.",
    "Instruct: Given a question, retrieve relevant documents.\nQuery: ",
    "Describe this image in one word:",
    "Modify this image with",
    "A photo of a cat sitting on a red sofa.",
    "Two dogs are playing in the park on a sunny day.",
    "USER: What is shown in the picture? ASSISTANT:",
    "User: hello there!\nAssistant: Hi, how can I help you today?",
)

# Fixed multilingual sentences (Latin, Greek, Cyrillic, Arabic, Devanagari, CJK, Hangul, emoji).
_MULTILINGUAL = (
    "Le chat est assis sur le canapé rouge.",
    "Der Hund spielt im Park mit einem Ball.",
    "El perro corre en la playa al atardecer.",
    "Il gatto dorme sulla sedia di legno.",
    "O menino está lendo um livro na biblioteca.",
    "Ο σκύλος τρέχει στο πάρκο.",
    "Кошка сидит на красном диване.",
    "القطة تجلس على الأريكة الحمراء.",
    "बिल्ली लाल सोफे पर बैठी है।",
    "猫が赤いソファに座っています。",
    "一只猫坐在红色的沙发上。",
    "고양이가 빨간 소파에 앉아 있습니다.",
    "Kedi kırmızı kanepede oturuyor.",
    "Kot siedzi na czerwonej kanapie.",
    "Con mèo đang ngồi trên ghế sofa màu đỏ.",
    "🐱 😀 👍 ❤️ 🌍 ✨",
)

_PUNCTUATION = tuple(".,;:!?-()[]{}\"'/\\@#$%&*+=<>|~^_`")


def _corpus() -> list[str]:
    """A few thousand deterministic training strings (Python's ``random.Random`` is stable across versions)."""
    rng = random.Random(1234)
    lines: list[str] = list(_PHRASES) + list(_MULTILINGUAL)
    # Unicode character names: long, varied upper-case English (stable code points only).
    for code in range(0x20, 0x250):
        name = unicodedata.name(chr(code), "")
        if name:
            lines.append(name.lower())
    lines += [str(n) for n in range(0, 1000)]
    lines += [f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}" for _ in range(200)]
    for _ in range(2500):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        sentence = " ".join(words) + rng.choice((".", ".", "?", "!", ":", ",", ";"))
        if rng.random() < 0.2:
            sentence += " " + rng.choice(_MULTILINGUAL)
        if rng.random() < 0.1:
            sentence = f"({sentence}) {rng.choice(_PUNCTUATION)}{rng.randint(0, 99)}"
        lines.append(sentence)
    lines += [rng.choice(_MULTILINGUAL) for _ in range(300)]
    return lines


@functools.lru_cache(maxsize=1)
def _base_tokenizer_json() -> str:
    """Train the shared byte-level BPE once per process; returns its JSON (no special tokens yet)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer.to_str()


@dataclass(frozen=True)
class SpecialTokens:
    """A family's special tokens; ``extra`` ones (image placeholders, chat markers, ...) follow the named ones."""

    eos: str
    pad: str
    bos: str | None = None
    unk: str | None = None
    extra: tuple[str, ...] = ()
    add_bos: bool = False  # whether the tokenizer prepends ``bos`` itself (Llama-style)

    def all(self) -> list[str]:
        named = [self.bos, self.eos, self.unk, self.pad]
        return list(dict.fromkeys([t for t in named if t is not None] + list(self.extra)))


def _build_tokenizer(tokens: SpecialTokens):
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_base_tokenizer_json())
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens.all()])
    named = {"bos_token": tokens.bos, "eos_token": tokens.eos, "unk_token": tokens.unk, "pad_token": tokens.pad}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **{k: v for k, v in named.items() if v is not None},
        extra_special_tokens=[t for t in tokens.extra if t not in named.values()],
        add_bos_token=tokens.add_bos,
        add_eos_token=False,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------------------------------
# Chat templates (Jinja). Content may be a string or a list of {"type": "image"|"video"|"text"} items.
# --------------------------------------------------------------------------------------------------


def _content(image: str, video: str = "") -> str:
    """Jinja snippet rendering ``message['content']`` in order; images/videos become placeholders."""
    return (
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'image' -%}{{- '" + image + "' -}}"
        "{%- elif item['type'] == 'video' -%}{{- '" + video + "' -}}"
        "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
    )


def _vicuna_template(image: str) -> str:
    """LLaVA-1.5: ``USER: <image>\\n... ASSISTANT:`` (bos is added by the tokenizer)."""
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] != 'system' -%}{{- message['role'] | upper + ': ' -}}{%- endif -%}"
        + _content(image)
        + "{{- ' ' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
    )


def _llama3_template(image: str) -> str:
    """Llama-3 headers: ``<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>``."""
    return (
        "{{- bos_token -}}{%- for message in messages -%}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
        + _content(image)
        + "{{- '<|eot_id|>' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
    )


def chatml_template(default_system: str | None, image: str = "<|vision_start|><|image_pad|><|vision_end|>") -> str:
    """ChatML: ``<|im_start|>role\\n...<|im_end|>\\n``; Qwen's image is the pad between vision start/end."""
    system = (
        "{%- if loop.first and message['role'] != 'system' -%}"
        "{{- '<|im_start|>system\\n" + default_system + "<|im_end|>\\n' -}}{%- endif -%}"
        if default_system
        else ""
    )
    return (
        "{%- for message in messages -%}"
        + system
        + "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        + _content(image, "<|vision_start|><|video_pad|><|vision_end|>")
        + "{{- '<|im_end|>\\n' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def _idefics3_template() -> str:
    """SmolVLM / Idefics3: ``<|im_start|>User:<image>...<end_of_utterance>\\nAssistant:``."""
    return (
        "{{- '<|im_start|>' -}}{%- for message in messages -%}"
        "{{- message['role'] | capitalize -}}"
        "{%- if message['content'] is not string and message['content'] "
        "and message['content'][0]['type'] == 'image' -%}{{- ':' -}}{%- else -%}{{- ': ' -}}{%- endif -%}"
        + _content("<image>")
        + "{{- '<end_of_utterance>\\n' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'Assistant:' -}}{%- endif -%}"
    )


# --------------------------------------------------------------------------------------------------
# Family registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilySpec:
    """Everything family-specific needed to build a tiny checkpoint.

    Attributes:
        name: family name (the :func:`tiny_model` argument).
        build_config: ``f(ids, vocab_size) -> PretrainedConfig`` where ``ids`` maps each special token to its id.
        processor_class: transformers processor class name.
        components: processor attribute -> (transformers class name, init kwargs), e.g. the image processor.
        processor_kwargs: extra processor init kwargs (patch size, image_seq_len, ...).
        tokens: the family's special tokens.
        chat_template: the default Jinja chat template saved with the processor and tokenizer.
        image_token: the placeholder written in text for one image; its id must equal the config's image token id.
        adjust_weights: optional in-place tweak of the freshly initialised model (deterministic, no RNG).
    """

    name: str
    build_config: Callable[[dict[str, int], int], Any]
    processor_class: str
    components: dict[str, tuple[str, dict[str, Any]]]
    tokens: SpecialTokens
    chat_template: str
    image_token: str
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    adjust_weights: Callable[[Any], None] | None = None


def _cls(name: str):
    import transformers

    return getattr(transformers, name)


def _llama_text(ids: dict[str, int], vocab_size: int, tokens: SpecialTokens) -> dict[str, Any]:
    return dict(
        model_type="llama",
        vocab_size=vocab_size,
        max_position_embeddings=4096,
        bos_token_id=ids.get(tokens.bos) if tokens.bos else None,
        eos_token_id=ids[tokens.eos],
        pad_token_id=ids[tokens.pad],
        **_TEXT,
    )


def _qwen_text(ids: dict[str, int], vocab_size: int, tokens: SpecialTokens, **rope: Any) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size,
        head_dim=16,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", **rope},
        bos_token_id=None,  # Qwen has no bos (the config class defaults to the real 151643)
        eos_token_id=ids[tokens.eos],
        pad_token_id=ids[tokens.pad],
        **_TEXT,
    )


def _qwen_vision_ids(ids: dict[str, int]) -> dict[str, int]:
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


_CLIP_VISION = dict(
    model_type="clip_vision_model",
    hidden_size=_VISION_HIDDEN,
    intermediate_size=_VISION_INTERMEDIATE,
    num_hidden_layers=2,
    num_attention_heads=2,
    projection_dim=_VISION_HIDDEN,
    patch_size=14,
)

_LLAVA_TOKENS = SpecialTokens(bos="<s>", eos="</s>", unk="<unk>", pad="<pad>", extra=("<image>",), add_bos=True)
_LLAMA3_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
_LLAVA_NEXT_TOKENS = SpecialTokens(
    bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<pad>", extra=_LLAMA3_TOKENS + ("<image>",), add_bos=True
)
_MLLAMA_TOKENS = SpecialTokens(
    bos="<|begin_of_text|>",
    eos="<|eot_id|>",
    pad="<|finetune_right_pad_id|>",
    extra=_LLAMA3_TOKENS + ("<|image|>", "<|python_tag|>"),
    add_bos=True,
)
_QWEN_TOKENS = SpecialTokens(
    eos="<|im_end|>",
    pad="<|endoftext|>",
    extra=("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"),
)
_IDEFICS3_TOKENS = SpecialTokens(
    bos="<|im_start|>",
    eos="<end_of_utterance>",
    pad="<|im_end|>",
    unk="<|endoftext|>",
    extra=("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>")
    + tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)


def _llava_config(ids: dict[str, int], vocab_size: int):
    return _cls("LlavaConfig")(
        vision_config=dict(_CLIP_VISION, image_size=224),
        text_config=_llama_text(ids, vocab_size, _LLAVA_TOKENS),
        image_token_index=ids["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(224 // 14) ** 2,
    )


_LLAVA_NEXT_PINPOINTS = [[112, 112], [112, 224], [224, 112]]


def _llava_next_config(ids: dict[str, int], vocab_size: int):
    return _cls("LlavaNextConfig")(
        vision_config=dict(_CLIP_VISION, image_size=112),
        text_config=_llama_text(ids, vocab_size, _LLAVA_NEXT_TOKENS),
        image_token_index=ids["<image>"],
        image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=(112 // 14) ** 2,
    )


def _mllama_config(ids: dict[str, int], vocab_size: int):
    layers_indices = [0, 1]
    text = _llama_text(ids, vocab_size, _MLLAMA_TOKENS)
    del text["model_type"]  # MllamaTextConfig, not llama
    return _cls("MllamaConfig")(
        vision_config=dict(
            hidden_size=_VISION_HIDDEN,
            intermediate_size=_VISION_INTERMEDIATE,
            num_hidden_layers=2,
            num_global_layers=1,
            attention_heads=2,
            image_size=112,
            patch_size=14,
            max_num_tiles=2,
            supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]],  # == get_all_supported_aspect_ratios(2)
            intermediate_layers_indices=layers_indices,
            vision_output_dim=_VISION_HIDDEN * (len(layers_indices) + 1),
        ),
        text_config=dict(text, cross_attention_layers=[1]),  # layer 1 of 2 is the cross-attention layer
        image_token_index=ids["<|image|>"],
    )


def _open_mllama_gates(model) -> None:
    """Mllama initialises its tanh gates (cross-attention, tile/positional embeddings) to 0, which would
    make the text output independent of the image. Open them to tanh(pi/4), like the vision encoder's gates."""
    import math

    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate", "embedding.gate")):
                param.fill_(math.pi / 4)


def _qwen2_vl_config(ids: dict[str, int], vocab_size: int):
    return _cls("Qwen2VLConfig")(
        text_config=_qwen_text(ids, vocab_size, _QWEN_TOKENS, mrope_section=[2, 3, 3], rope_theta=1e6),
        vision_config=dict(
            depth=2, embed_dim=_VISION_HIDDEN, hidden_size=_TEXT["hidden_size"], mlp_ratio=2, num_heads=2,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        **_qwen_vision_ids(ids),
    )


def _qwen2_5_vl_config(ids: dict[str, int], vocab_size: int):
    return _cls("Qwen2_5_VLConfig")(
        text_config=_qwen_text(ids, vocab_size, _QWEN_TOKENS, mrope_section=[2, 3, 3], rope_theta=1e6),
        vision_config=dict(
            depth=2, hidden_size=_VISION_HIDDEN, intermediate_size=_VISION_INTERMEDIATE, num_heads=2,
            out_hidden_size=_TEXT["hidden_size"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
            window_size=56, fullatt_block_indexes=[1], tokens_per_second=2,
        ),
        **_qwen_vision_ids(ids),
    )


def _qwen3_vl_config(ids: dict[str, int], vocab_size: int):
    return _cls("Qwen3VLConfig")(
        text_config=_qwen_text(
            ids, vocab_size, _QWEN_TOKENS, mrope_section=[4, 2, 2], mrope_interleaved=True, rope_theta=5e6
        ),
        vision_config=dict(
            depth=2, hidden_size=_VISION_HIDDEN, intermediate_size=_VISION_INTERMEDIATE, num_heads=2,
            out_hidden_size=_TEXT["hidden_size"], patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
            num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
        ),
        **_qwen_vision_ids(ids),
    )


# FastVLM: timm's tiny test EfficientNet (GroupNorm: no batch statistics, so a row's embedding never depends on its
# batch), stride 32, 256 features; 128 px -> a 4 x 4 map = 16 image tokens. The LM is Qwen2, as in Apple's FastVLM.
_FAST_VLM_TOKENS = SpecialTokens(eos="<|im_end|>", pad="<|endoftext|>", extra=("<|im_start|>", "<|im_end|>", "<image>"))
_FAST_VLM_IMAGE = 128


def _fast_vlm_config(ids: dict[str, int], vocab_size: int):
    return _cls("FastVlmConfig")(
        vision_config=_cls("TimmWrapperConfig")(architecture="test_efficientnet_gn", do_pooling=False, hidden_size=256),
        text_config=dict(_qwen_text(ids, vocab_size, _FAST_VLM_TOKENS), model_type="qwen2"),
        image_token_index=ids["<image>"],
        image_seq_length=(_FAST_VLM_IMAGE // 32) ** 2,
    )


def _idefics3_config(ids: dict[str, int], vocab_size: int):
    return _cls("Idefics3Config")(
        vision_config=dict(
            hidden_size=_VISION_HIDDEN, intermediate_size=_VISION_INTERMEDIATE, num_hidden_layers=2,
            num_attention_heads=2, image_size=256, patch_size=32,
        ),
        text_config=_llama_text(ids, vocab_size, _IDEFICS3_TOKENS),
        image_token_id=ids["<image>"],
        scale_factor=2,
        pad_token_id=ids[_IDEFICS3_TOKENS.pad],
    )


# Qwen image budgets: patch 14 (x merge 2 = 28 px) -> 56x56..112x112 px; Qwen3 patch 16 -> 64x64..128x128 px.
_QWEN2_IMAGE = dict(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112}, patch_size=14, merge_size=2)
_QWEN3_IMAGE = dict(size={"shortest_edge": 64 * 64, "longest_edge": 128 * 128}, patch_size=16, merge_size=2)
_QWEN2_VIDEO = dict(_QWEN2_IMAGE, size={"shortest_edge": 56 * 56, "longest_edge": 4 * 112 * 112})
_QWEN3_VIDEO = dict(_QWEN3_IMAGE, size={"shortest_edge": 64 * 64, "longest_edge": 4 * 128 * 128})

SPECS: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec(
            name="llava",
            build_config=_llava_config,
            processor_class="LlavaProcessor",
            components={
                "image_processor": (
                    "CLIPImageProcessor",
                    dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
                )
            },
            processor_kwargs=dict(
                patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1
            ),
            tokens=_LLAVA_TOKENS,
            chat_template=_vicuna_template("<image>\\n"),
            image_token="<image>",
        ),
        FamilySpec(
            name="llava_next",
            build_config=_llava_next_config,
            processor_class="LlavaNextProcessor",
            components={
                "image_processor": (
                    "LlavaNextImageProcessor",
                    dict(
                        size={"shortest_edge": 112},
                        crop_size={"height": 112, "width": 112},
                        image_grid_pinpoints=_LLAVA_NEXT_PINPOINTS,
                    ),
                )
            },
            processor_kwargs=dict(
                patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1
            ),
            tokens=_LLAVA_NEXT_TOKENS,
            chat_template=_llama3_template("<image>\\n"),
            image_token="<image>",
        ),
        FamilySpec(
            name="mllama",
            build_config=_mllama_config,
            processor_class="MllamaProcessor",
            components={
                "image_processor": (
                    "MllamaImageProcessor",
                    dict(size={"height": 112, "width": 112}, max_image_tiles=2),
                )
            },
            tokens=_MLLAMA_TOKENS,
            chat_template=_llama3_template("<|image|>"),
            image_token="<|image|>",
            adjust_weights=_open_mllama_gates,
        ),
        FamilySpec(
            name="qwen2_vl",
            build_config=_qwen2_vl_config,
            processor_class="Qwen2VLProcessor",
            components={
                "image_processor": ("Qwen2VLImageProcessor", _QWEN2_IMAGE),
                "video_processor": ("Qwen2VLVideoProcessor", _QWEN2_VIDEO),
            },
            tokens=_QWEN_TOKENS,
            chat_template=chatml_template("You are a helpful assistant."),
            image_token="<|vision_start|><|image_pad|><|vision_end|>",
        ),
        FamilySpec(
            name="qwen2_5_vl",
            build_config=_qwen2_5_vl_config,
            processor_class="Qwen2_5_VLProcessor",
            components={
                "image_processor": ("Qwen2VLImageProcessor", _QWEN2_IMAGE),
                "video_processor": ("Qwen2VLVideoProcessor", _QWEN2_VIDEO),
            },
            tokens=_QWEN_TOKENS,
            chat_template=chatml_template("You are a helpful assistant."),
            image_token="<|vision_start|><|image_pad|><|vision_end|>",
        ),
        FamilySpec(
            name="qwen3_vl",
            build_config=_qwen3_vl_config,
            processor_class="Qwen3VLProcessor",
            components={
                "image_processor": ("Qwen2VLImageProcessor", _QWEN3_IMAGE),
                "video_processor": ("Qwen3VLVideoProcessor", _QWEN3_VIDEO),
            },
            tokens=_QWEN_TOKENS,
            chat_template=chatml_template(None),
            image_token="<|vision_start|><|image_pad|><|vision_end|>",
        ),
        FamilySpec(
            name="idefics3",
            build_config=_idefics3_config,
            processor_class="Idefics3Processor",
            components={
                "image_processor": (
                    "Idefics3ImageProcessor",
                    dict(
                        size={"longest_edge": 256},
                        max_image_size={"longest_edge": 256},
                        do_image_splitting=False,
                    ),
                )
            },
            # image_seq_len = (image_size // patch_size) ** 2 / scale_factor ** 2 = (256 // 32) ** 2 / 4
            processor_kwargs=dict(image_seq_len=16),
            tokens=_IDEFICS3_TOKENS,
            chat_template=_idefics3_template(),
            image_token="<image>",
        ),
        FamilySpec(
            name="fast_vlm",
            build_config=_fast_vlm_config,
            processor_class="LlavaProcessor",  # what Apple's FastVLM checkpoints name too
            components={
                "image_processor": (
                    "CLIPImageProcessor",
                    dict(size={"shortest_edge": _FAST_VLM_IMAGE},
                         crop_size={"height": _FAST_VLM_IMAGE, "width": _FAST_VLM_IMAGE}),
                )
            },
            processor_kwargs=dict(patch_size=32, vision_feature_select_strategy="full", num_additional_image_tokens=0),
            tokens=_FAST_VLM_TOKENS,
            chat_template=chatml_template(None, image="<image>"),
            image_token="<image>",
        ),
    )
}

TINY_FAMILIES: tuple[str, ...] = tuple(SPECS)  # tiny-model families; the backbone registry is mm_st.templates.FAMILIES


def _spec(family: str) -> FamilySpec:
    if family not in SPECS:
        raise ValueError(f"Unknown tiny model family {family!r}. Known families: {', '.join(TINY_FAMILIES)}.")
    return SPECS[family]


# --------------------------------------------------------------------------------------------------
# Build, save, cache
# --------------------------------------------------------------------------------------------------


def build(spec: FamilySpec, seed: int):
    """Returns (model, processor), both in memory."""
    import torch
    from transformers import AutoModelForImageTextToText

    tokenizer = _build_tokenizer(spec.tokens)
    tokenizer.chat_template = spec.chat_template
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in spec.tokens.all()}
    config = spec.build_config(ids, len(tokenizer))

    components = {attr: _cls(cls_name)(**kwargs) for attr, (cls_name, kwargs) in spec.components.items()}
    processor = _cls(spec.processor_class)(
        tokenizer=tokenizer, chat_template=spec.chat_template, **components, **spec.processor_kwargs
    )
    _check_token_ids(config.to_dict(), len(tokenizer))
    if config.image_token_id != processor.image_token_id:
        raise AssertionError(f"{spec.name}: config image token id {config.image_token_id} != processor's "
                             f"{processor.image_token_id}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    if spec.adjust_weights is not None:
        spec.adjust_weights(model)
    model.eval()
    return model, processor


def _check_token_ids(config: dict[str, Any], vocab_size: int, where: str = "config") -> None:
    """Every ``*_token_id(s)`` / ``*_token_index`` in the (nested) config must be a real token id.

    Guards against config-class defaults that point into the real, much larger vocabularies.
    """
    for key, value in config.items():
        if isinstance(value, dict):
            _check_token_ids(value, vocab_size, f"{where}.{key}")
        elif isinstance(key, str) and key.endswith(("token_id", "token_ids", "token_index")) and value is not None:
            for token_id in value if isinstance(value, (list, tuple)) else [value]:
                if not 0 <= token_id < vocab_size:
                    raise AssertionError(f"{where}.{key}={value} is outside the vocabulary (size {vocab_size})")


def _write(spec: FamilySpec, seed: int, directory: Path, head: bool = True) -> None:
    model, processor = build(spec, seed)
    (model if head else model.base_model).save_pretrained(directory)
    processor.save_pretrained(directory)
    (directory / _COMPLETE_MARKER).write_text(f"{spec.name} seed={seed} {_CACHE_VERSION}\n")


def tiny_model(family: str, path: str | os.PathLike | None = None, seed: int = 0, head: bool = True) -> str:
    """Build (or reuse) a tiny random checkpoint of ``family`` and return its directory.

    Args:
        family: one of :data:`TINY_FAMILIES`.
        path: where to write it. Always (re)built there. None: a cache directory
            ``$MM_ST_CACHE/tiny/{family}-seed{seed}-v1`` (default cache ``~/.cache/mm_st``), reused when
            complete; written to a temporary sibling first and renamed into place, so an interrupted
            build never leaves a partial cache.
        seed: torch seed of the random weights.
        head: save the generation model with its LM head (``AutoModelForImageTextToText``); False saves
            the base model only, the form ``AutoModel`` (and so an embedding model) loads without
            reporting unused weights.

    Returns:
        The checkpoint directory, loadable with ``AutoModel``/``AutoProcessor.from_pretrained`` and
        ``sentence_transformers.base.modules.Transformer``.

    Raises:
        ValueError: for an unknown family (the message lists the known ones).
    """
    spec = _spec(family)
    if path is not None:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        _write(spec, seed, directory, head)
        return str(directory)

    directory = cache_root() / "tiny" / f"{family}-seed{seed}{'' if head else '-base'}-{_CACHE_VERSION}"
    return build_atomically(directory, _COMPLETE_MARKER, lambda tmp: _write(spec, seed, tmp, head))
