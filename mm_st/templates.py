"""Prompt templates: one registry of recipe x backbone-family strings, rendered into a chat template.

A recipe (E5-V, mmE5, VLM2Vec, MM-Embed) is data: the exact prompt strings of its paper's reference
code, each with its source, declared in its module of :mod:`mm_st.recipes` (:data:`RECIPES` and
:data:`TRAIN_RECIPES` are views of that registry). A backbone family is data too: how its processor writes an image in text
and which chat wrapper its language model speaks. :func:`render_chat_template` turns one recipe and
one family into a Jinja chat template that sentence-transformers saves with the model, so a plain
``SentenceTransformer(path)`` reproduces the recipe without mm_st installed. That template is the one
copy of the selection logic: :func:`render_prompt` renders it with transformers' chat-template renderer.

Markers in prompt strings: ``<image>`` is replaced by the image block (once per image) and the video block
(once per video), ``<sent>`` by the input text. A video takes the prompt of an image (a text+video input that of
an image+text input); the video block is the recipe's image block with the family's image token swapped for its
video token (``<|vision_start|><|video_pad|><|vision_end|>`` as Qwen's own chat templates write a video; VLM2Vec's
bare ``<|image_pad|>`` becomes VLM2Vec-V2's bare ``<|video_pad|>``); a recipe that writes videos its own way
declares ``video_prompts`` / ``video_instructed`` (VLM2Vec-V2's ``<|video_pad|> {instruction} {text}``), used for
inputs with a video and no image. Families without a video token
(:attr:`Family.video_token`) take no video: :func:`check_takes_video`. Without an image, ``<image>`` and the ``\\n`` or space after it go; without text, ``<sent>`` and
the one space before it go. The rendered template reads the ST ``task`` variable (``"query"`` /
``"document"``) and takes a system message (ST's ``prompt=``) as the instruction:

- an instruction WITH a marker (``<image>`` / ``<sent>``) is a full prompt: it replaces the recipe's
  prompt (E5-V's CIRR / FashionIQ prompts); an input modality whose marker it lacks is an error that
  names the marker, so a prompt never silently drops the input;
- an instruction WITHOUT markers goes into the recipe's ``instructed`` prompts as ``{instruction}``
  (trailing spaces removed; ``" <sent>"`` then joins it to the text with one space). E5-V has no
  instruction slot: as in VLM2Vec's E5-V evaluation the instruction is not shown to the model and
  the input gets E5-V's own prompt (see :data:`RECIPES` ``e5v``).

Each recipe has two pinned renderings (:data:`FORMATS`): ``"inference"`` (what the released model is
evaluated / served with) and ``"train"`` (what the reference training code feeds); pick one with
``get_recipe(name, fmt)`` / ``render_chat_template(..., fmt=...)`` / ``build_model(..., prompt_format=...)``.
:data:`RECIPE_FACTS` holds the training facts a recipe config reads (epochs, learning rate, ...).

Example:
    >>> from mm_st import templates
    >>> templates.RECIPES["e5v"].prompts["image"]
    '<image>\\nSummary above image in one word: '
    >>> templates.render_prompt("e5v", "llava_next", text="A dog.", num_images=0)
    '<|start_header_id|>user<|end_header_id|>\\n\\nA dog.\\nSummary above sentence in one word: <|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n \\n'
    >>> templates.render_prompt("mme5", "mllama", text="q", num_images=1, instruction="Find it: ")
    '<|image|><|begin_of_text|>Find it: q\\n'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import mm_st.recipes  # noqa: F401  (registers mm_st's recipes)
from mm_st.metadata import header as metadata_header
from mm_st.metadata import recipe_metadata
from mm_st.modality import IMAGE_TEXT, TEXT, VIDEO, VIDEO_PROMPT_KEYS, VIDEO_TEXT, prompt_key
from mm_st.modality import IMAGE as IMAGE_MODALITY
from mm_st.recipes.mmembed import MBEIR_INSTRUCTIONS  # noqa: F401  (re-exported: M-BEIR instructions used by MM-Embed)
from mm_st.recipes.registry import INSTRUCTION, MODALITIES, Recipe, View  # noqa: F401  (re-exported)

IMAGE = "<image>"
SENT = "<sent>"
FORMATS = ("inference", "train")


@dataclass(frozen=True)
class Wrapper:
    """A chat wrapper around one user turn; ``{}`` is where the prompt goes.

    Attributes:
        markers: special tokens whose presence in a tokenizer's vocabulary identifies the wrapper.
        strip: remove the prompt's trailing spaces before filling ``{}`` (E5-V's Mistral / Phi-3 code).
        full_template: wrapper for full prompts given through ``prompt=`` (E5-V's composed-retrieval
            prompts), when it differs from ``template``.
    """

    name: str
    template: str
    markers: tuple[str, ...] = ()
    source: str = ""
    strip: bool = False
    full_template: str | None = None

    def parts(self, full: bool = False) -> tuple[str, str]:
        head, tail = ((full and self.full_template) or self.template).split("{}")
        return head, tail


_E5V = "kongds/E5-V retrieval.py (verified)"
# Ordered: detection takes the first wrapper whose markers are all in the tokenizer's vocabulary.
WRAPPERS: dict[str, Wrapper] = {
    w.name: w
    for w in (
        Wrapper(
            "llama3",
            "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n",
            ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            f"{_E5V}: llama3_template, llava-llama3-8b",
        ),
        Wrapper(
            "idefics3",
            "<|im_start|>User:{}<end_of_utterance>\nAssistant:",
            ("<end_of_utterance>",),
            "Idefics3 / SmolVLM chat turn: an E5-V-style extension by mm_st, not in E5-V's code",
        ),
        Wrapper(
            "chatml",
            "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
            ("<|im_start|>", "<|im_end|>"),
            "ChatML user turn + open assistant turn (Qwen, SmolLM2): an E5-V-style extension by mm_st, not in E5-V's code",
        ),
        Wrapper(
            "phi3",
            "<|user|>\n{}<|end|>\n<|assistant|>\n",
            ("<|user|>", "<|end|>", "<|assistant|>"),
            f"{_E5V}: '<|user|>\\n<|image_1|>\\nSummary above image in one word:<|end|>\\n<|assistant|>\\n'; "
            "composed-retrieval prompts use '<|user|>\\n{} <|end|>\\n<|assistant|>\\n'",
            strip=True,
            full_template="<|user|>\n{} <|end|>\n<|assistant|>\n",
        ),
        Wrapper(
            "mistral",
            "[INST] {} [/INST]",
            ("[INST]", "[/INST]"),
            f"{_E5V}: '[INST] <image>\\nSummary above image in one word: [/INST]' (one space before [/INST])",
            strip=True,
        ),
        Wrapper("vicuna", "USER: {} ASSISTANT:", (), "LLaVA-1.5 (Vicuna) conversation format: an E5-V-style extension by mm_st"),
        Wrapper("raw", "{}", (), "no chat wrapper"),
        # E5-V training text (kongds/E5-V ft_llm.py + run.sh): the llama3 template de-tokenised by
        # template.replace('_', ' ') and .strip(): special tokens become plain text, '\n\n \n' goes.
        Wrapper(
            "llama3_upstream_train",
            "<|start header id|>user<|end header id|>\n\n{}<|eot id|><|start header id|>assistant<|end header id|>",
            (),
            "kongds/E5-V ft_llm.py generate_sentemb_prompt on llama3_template (training only)",
        ),
    )
}


@dataclass(frozen=True)
class Family:
    """A backbone family: config ``model_type`` values, image placeholder, default wrapper, video capability.

    Attributes:
        video_token: ``(image token, video token)`` for families whose processor has a video path (``videos=``):
            a video is written as the image block with the image token replaced by the video token. None: the
            family takes no video.
    """

    name: str
    model_types: tuple[str, ...]
    image_placeholder: str | None
    wrapper: str | None = None  # fallback when detection from the tokenizer finds nothing
    video_token: tuple[str, str] | None = None

    @property
    def takes_video(self) -> bool:
        return self.video_token is not None


_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# Qwen2-VL / Qwen2.5-VL / Qwen3-VL chat templates write {"type": "video"} as <|vision_start|><|video_pad|><|vision_end|>.
_QWEN_VIDEO = ("<|image_pad|>", "<|video_pad|>")
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llava", ("llava",), "<image>", "vicuna"),
        Family("llava_next", ("llava_next",), "<image>", "llama3"),
        Family("mllama", ("mllama",), "<|image|>", "llama3"),
        Family("qwen2_vl", ("qwen2_vl",), _QWEN_IMAGE, "chatml", _QWEN_VIDEO),
        Family("qwen2_5_vl", ("qwen2_5_vl",), _QWEN_IMAGE, "chatml", _QWEN_VIDEO),
        Family("qwen3_vl", ("qwen3_vl",), _QWEN_IMAGE, "chatml", _QWEN_VIDEO),
        Family("idefics3", ("idefics3", "smolvlm"), "<image>", "idefics3"),
        # FastVLM (transformers FastVlmForConditionalGeneration: a timm tower through TimmWrapper, LlavaProcessor's
        # '<image>'); Apple's checkpoints and mm_st.real_vision speak ChatML (Qwen2 / SmolLM2).
        Family("fast_vlm", ("fast_vlm",), "<image>", "chatml"),
        # Phi-3-V (remote code only): E5-V's phi3 image token.
        Family("phi3_v", ("phi3_v",), "<|image_1|>", "phi3"),
        # Text-only causal language models (E5-V's text prompt, last token).
        Family("text", ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text"), None),
    )
}


# The recipes (mm_st.recipes: one module each, registered once) seen from here: views of the registry.
RECIPES: Mapping[str, Recipe] = View(lambda spec: spec.prompts, "inference prompts")
# Training formats: what each reference training code feeds the model.
TRAIN_RECIPES: Mapping[str, Recipe] = View(lambda spec: spec.train_prompts, "training prompts")
# Training facts a recipe config reads; each with its source.
RECIPE_FACTS: Mapping[str, Mapping[str, object]] = View(lambda spec: spec.facts, "paper training facts")


def _known(kind: str, table: dict) -> str:
    return f"Known {kind}: {', '.join(sorted(table))}."


def get_recipe(name: str, fmt: str = "inference") -> Recipe:
    """A recipe in one format: ``"inference"`` (default) or ``"train"`` (the reference training text)."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. {_known('recipes', RECIPES)}")
    if fmt not in FORMATS:
        raise ValueError(f"Unknown prompt format {fmt!r} for recipe {name!r}. Known formats: {', '.join(FORMATS)}.")
    return RECIPES[name] if fmt == "inference" else TRAIN_RECIPES[name]


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"Unknown backbone family {name!r}. {_known('families', FAMILIES)}")
    return FAMILIES[name]


def family_for_model_type(model_type: str) -> Family:
    """The family whose ``model_types`` include a config's ``model_type``."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = sorted(t for f in FAMILIES.values() for t in f.model_types)
    raise ValueError(
        f"Unsupported backbone: config model_type {model_type!r} is in no family. "
        f"Known model types: {', '.join(known)}. Add a Family entry to mm_st.templates.FAMILIES."
    )


def detect_wrapper(vocab: set[str] | dict[str, int], chat_template: str | None = None) -> Wrapper | None:
    """The first wrapper whose markers all appear in the vocabulary or the model's own chat template.

    Returns None when no wrapper matches (the caller falls back to the family's default).
    """
    text = chat_template or ""
    for wrapper in WRAPPERS.values():
        if wrapper.markers and all(token in vocab or token in text for token in wrapper.markers):
            return wrapper
    return None


def image_block(recipe: Recipe, family: Family) -> str:
    """How one image is written in the recipe's text on this family."""
    if family.image_placeholder is None:
        return ""
    block = recipe.image_block.get(family.name, recipe.image_block.get("*", "{placeholder}"))
    return block.replace("{placeholder}", family.image_placeholder)


def video_block(recipe: Recipe, family: Family) -> str:
    """How one video is written in the recipe's text on this family ("" for families that take no video)."""
    if family.video_token is None:
        return ""
    image_token, video_token = family.video_token
    return image_block(recipe, family).replace(image_token, video_token)


def video_families() -> tuple[str, ...]:
    """The families whose backbone embeds video."""
    return tuple(name for name, family in FAMILIES.items() if family.takes_video)


def check_takes_video(family: str, where: str, modality: str) -> None:
    """A ValueError naming ``where`` and ``modality`` when the ``family`` backbone cannot embed video."""
    if not get_family(family).takes_video:
        raise ValueError(f"{where} has modality {modality!r}, which the {family} backbone cannot embed "
                         f"(families that take video: {', '.join(video_families())}).")


def wrapper_for(recipe: Recipe, family: Family, wrapper: str | None = None) -> Wrapper:
    """The chat wrapper a wrapped recipe uses (``raw`` for unwrapped recipes).

    A training format maps the detected wrapper through ``train_wrappers``; a wrapper that is already
    one of its targets is kept, so the saved metadata's wrapper renders the same template again.
    """
    if not recipe.wrapped:
        return WRAPPERS["raw"]
    if wrapper is not None and wrapper not in WRAPPERS:
        raise ValueError(f"Unknown wrapper {wrapper!r}. {_known('wrappers', WRAPPERS)}")
    name = wrapper or family.wrapper or "vicuna"
    if recipe.train_wrappers and name not in recipe.train_wrappers.values():
        name = recipe.train_wrappers.get(name, recipe.train_wrappers.get("*", name))
    return WRAPPERS[name]


def _missing_marker(marker: str, what: str) -> str:
    return (
        f"The prompt has markers but no {marker} marker, and the input has {what}: a full prompt must place "
        f"every input ({marker}); or pass a plain instruction without markers."
    )


def render_prompt(
    recipe: str,
    family: str,
    text: str | None = None,
    num_images: int = 0,
    instruction: str | None = None,
    task: str | None = None,
    wrapper: str | None = None,
    fmt: str = "inference",
    num_videos: int = 0,
) -> str:
    """The literal prompt one input gets: :func:`render_chat_template`, rendered by transformers.

    ``instruction`` is the system message (ST's ``prompt=``), ``task`` ST's ``"query"`` / ``"document"``.
    A full prompt missing the marker of an input's modality raises ValueError.
    """
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    user = [{"type": "image"}] * num_images + [{"type": "video"}] * num_videos + (
        [{"type": "text", "text": text}] if text else [])
    system = [{"role": "system", "content": [{"type": "text", "text": instruction}]}] if instruction else []
    template = render_chat_template(recipe, family, wrapper=wrapper, fmt=fmt)
    try:
        out, _ = render_jinja_template(conversations=[[*system, {"role": "user", "content": user}]],
                                       chat_template=template, **({} if task is None else {"task": task}))
    except TemplateError as error:
        raise ValueError(str(error)) from error
    return out[0]


def _lit(value: str) -> str:
    """A Jinja string literal for ``value`` (Jinja accepts JSON-style escapes)."""
    return json.dumps(value, ensure_ascii=False)


# Jinja: collect instruction (system), text, image and video count, choose the recipe prompt, fill markers.
_JINJA = """\
{%- set ns = namespace(text='', images=0, videos=0, instruction='') -%}
{%- for message in messages -%}
{%- set parts = [{'type': 'text', 'text': message['content']}] if message['content'] is string else message['content'] -%}
{%- for part in parts -%}
{%- if part['type'] == 'text' and message['role'] == 'system' -%}{%- set ns.instruction = ns.instruction + part['text'] -%}
{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}
{%- elif part['type'] == 'image' -%}{%- set ns.images = ns.images + 1 -%}
{%- elif part['type'] == 'video' -%}{%- set ns.videos = ns.videos + 1 -%}
{%- endif -%}
{%- endfor -%}
{%- endfor -%}
{%- if ns.videos and not VIDEO_BLOCK -%}{{- raise_exception(NO_VIDEO) -}}{%- endif -%}
{%- set media = ns.images + ns.videos -%}
{%- set modality = @IMAGE_TEXT@ if media and ns.text else (@IMAGE@ if media else @TEXT@) -%}
{%- set video_key = (@VIDEO_TEXT@ if ns.text else @VIDEO@) if ns.videos and not ns.images else '' -%}
{%- set instructed = VIDEO_INSTRUCTED[video_key] if video_key in VIDEO_INSTRUCTED else INSTRUCTED[modality] -%}
{%- set plain = VIDEO_PROMPTS[video_key] if video_key in VIDEO_PROMPTS else PROMPTS[modality] -%}
{%- set full = '<image>' in ns.instruction or '<sent>' in ns.instruction -%}
{%- set core = ns.instruction.rstrip(' ') -%}
{%- set is_query = task is defined and task == 'query' -%}
{%- if full -%}
{%- if media and '<image>' not in ns.instruction -%}{{- raise_exception(MISSING_IMAGE) -}}{%- endif -%}
{%- if ns.text and '<sent>' not in ns.instruction -%}{{- raise_exception(MISSING_SENT) -}}{%- endif -%}
{%- set prompt = ns.instruction -%}
{%- elif core and (INSTRUCT_DOCUMENTS or task is not defined or task != 'document') -%}
{%- set prompt = instructed.replace('{instruction}', core) -%}
{%- elif is_query and QUERY_PROMPTS -%}{%- set prompt = QUERY_PROMPTS[modality] -%}
{%- else -%}{%- set prompt = plain -%}
{%- endif -%}
{%- if media -%}{%- set prompt = prompt.replace('<image>', IMAGE_BLOCK * ns.images + VIDEO_BLOCK * ns.videos) -%}
{%- else -%}{%- set prompt = prompt.replace('<image>\\n', '').replace('<image> ', '').replace('<image>', '') -%}
{%- endif -%}
{%- if ns.text -%}{%- set prompt = prompt.replace('<sent>', ns.text) -%}
{%- else -%}{%- set prompt = prompt.replace(' <sent>', '').replace('<sent>', '') -%}
{%- endif -%}
{%- if STRIP -%}{%- set prompt = prompt.rstrip(' ') -%}{%- endif -%}
{%- if full -%}{{- BOS + FULL_HEAD + prompt + FULL_TAIL -}}{%- else -%}{{- BOS + HEAD + prompt + TAIL -}}{%- endif -%}
"""
# The saved templates' prompt keys (mm_st.modality.PROMPT_KEYS), written as Jinja literals.
_JINJA = _JINJA.replace("@IMAGE_TEXT@", f"'{prompt_key(IMAGE_TEXT)}'").replace(
    "@IMAGE@", f"'{prompt_key(IMAGE_MODALITY)}'").replace("@TEXT@", f"'{prompt_key(TEXT)}'").replace(
    "@VIDEO_TEXT@", f"'{VIDEO_PROMPT_KEYS[VIDEO_TEXT]}'").replace("@VIDEO@", f"'{VIDEO_PROMPT_KEYS[VIDEO]}'")


def _saved_keys(prompts: dict[str, str]) -> dict[str, str]:
    """A recipe's prompts keyed as saved chat templates key them (``image+text`` -> ``image_text``)."""
    return {prompt_key(modality): prompt for modality, prompt in prompts.items()}


def _video_keys(prompts: dict[str, str]) -> dict[str, str]:
    """A recipe's video prompts keyed as the template reads them (:data:`mm_st.modality.VIDEO_PROMPT_KEYS`)."""
    unknown = sorted(set(prompts) - set(VIDEO_PROMPT_KEYS))
    if unknown:
        raise ValueError(f"Video prompts are keyed {', '.join(map(repr, VIDEO_PROMPT_KEYS))}; got {unknown}.")
    return {VIDEO_PROMPT_KEYS[modality]: prompt for modality, prompt in prompts.items()}


def render_chat_template(
    recipe: str, family: str, wrapper: str | None = None, bos: str = "", fmt: str = "inference"
) -> str:
    """Render a recipe for a family into a Jinja chat template (saved with the model).

    Args:
        recipe: a key of :data:`RECIPES`.
        family: a key of :data:`FAMILIES`.
        wrapper: a key of :data:`WRAPPERS`; default the family's, else ``vicuna``.
        bos: text to put first (only for tokenizers whose chat-template path adds no BOS itself).
        fmt: ``"inference"`` or ``"train"`` (see :data:`FORMATS`).
    """
    rec, fam = get_recipe(recipe, fmt), get_family(family)
    chosen = wrapper_for(rec, fam, wrapper)
    (head, tail), (full_head, full_tail) = chosen.parts(), chosen.parts(full=True)
    constants = {
        "INSTRUCT_DOCUMENTS": "true" if rec.instruct_documents else "false",
        "PROMPTS": _lit(_saved_keys(rec.prompts)),
        "INSTRUCTED": _lit(_saved_keys(rec.instructed)),
        "QUERY_PROMPTS": _lit(_saved_keys(rec.query_prompts)),
        "VIDEO_PROMPTS": _lit(_video_keys(rec.video_prompts)),
        "VIDEO_INSTRUCTED": _lit(_video_keys(rec.video_instructed)),
        "IMAGE_BLOCK": _lit(image_block(rec, fam)),
        "VIDEO_BLOCK": _lit(video_block(rec, fam)),
        "NO_VIDEO": _lit(f"The {fam.name} backbone cannot embed video (families that take video: "
                         f"{', '.join(video_families())})."),
        "MISSING_IMAGE": _lit(_missing_marker(IMAGE, "an image or a video")),
        "MISSING_SENT": _lit(_missing_marker(SENT, "text")),
        "STRIP": "true" if chosen.strip else "false",
        "BOS": _lit(bos),
        "HEAD": _lit(head),
        "TAIL": _lit(tail),
        "FULL_HEAD": _lit(full_head),
        "FULL_TAIL": _lit(full_tail),
    }
    header = "".join(f"{{%- set {k} = {v} -%}}\n" for k, v in constants.items())
    meta = recipe_metadata(rec.name, fam.name, chosen.name, rec.fmt)
    return metadata_header(meta) + "\n" + header + _JINJA
