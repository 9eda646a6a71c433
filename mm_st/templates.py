"""Prompt templates: one registry of recipe x backbone-family strings, rendered into a chat template.

A recipe (E5-V, mmE5, VLM2Vec, MM-Embed) is data: the exact prompt strings of its paper. A backbone
family is data too: how its processor writes an image in text and which chat wrapper its language
model speaks. :func:`render_chat_template` turns one recipe and one family into a Jinja chat
template that sentence-transformers saves with the model, so a plain ``SentenceTransformer(path)``
reproduces the recipe without mm_st installed.

Markers in prompt strings: ``<image>`` is replaced by the family's image placeholder (once per
image), ``<sent>`` by the input text. The rendered template reads the ST ``task`` variable
(``"query"`` / ``"document"``) and takes a system message (ST's ``prompt=``) as the instruction.

Example:
    >>> from mm_st import templates
    >>> templates.RECIPES["e5v"].prompts["image"]
    '<image>\\nSummary above image in one word: '
    >>> templates.render_prompt("e5v", "llava_next", text="A dog.", num_images=0)
    '<|start_header_id|>user<|end_header_id|>\\n\\nA dog.\\nSummary above sentence in one word: <|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n \\n'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

IMAGE = "<image>"
SENT = "<sent>"


@dataclass(frozen=True)
class Wrapper:
    """A chat wrapper around one user turn; ``{}`` is where the prompt goes.

    ``markers`` are special tokens whose presence in a tokenizer's vocabulary identifies the wrapper.
    """

    name: str
    template: str
    markers: tuple[str, ...] = ()
    source: str = ""

    def wrap(self, prompt: str) -> str:
        head, tail = self.template.split("{}")
        return head + prompt + tail


# Ordered: detection takes the first wrapper whose markers are all in the tokenizer's vocabulary.
WRAPPERS: dict[str, Wrapper] = {
    w.name: w
    for w in (
        Wrapper(
            "llama3",
            "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n",
            ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            "E5-V reference code (kongds/E5-V), llava-llama3-8b",
        ),
        Wrapper(
            "idefics3",
            "<|im_start|>User:{}<end_of_utterance>\nAssistant:",
            ("<end_of_utterance>",),
            "Idefics3 / SmolVLM chat turn; E5-V-style, not in the E5-V paper",
        ),
        Wrapper(
            "chatml",
            "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
            ("<|im_start|>", "<|im_end|>"),
            "ChatML user turn + open assistant turn (Qwen, SmolLM2); E5-V-style, not in the E5-V paper",
        ),
        Wrapper(
            "phi3",
            "<|user|>\n{}<|end|>\n<|assistant|>\n",
            ("<|user|>", "<|end|>", "<|assistant|>"),
            "E5-V Phi-3 wrapper (confirm against kongds/E5-V)",
        ),
        Wrapper(
            "mistral",
            "[INST] {} [/INST]",
            ("[INST]", "[/INST]"),
            "E5-V Mistral wrapper (confirm against kongds/E5-V)",
        ),
        Wrapper("vicuna", "USER: {} ASSISTANT:", (), "LLaVA-1.5 (Vicuna) conversation format"),
        Wrapper("raw", "{}", (), "no chat wrapper"),
    )
}


@dataclass(frozen=True)
class Family:
    """A backbone family: config ``model_type`` values, image placeholder, default wrapper."""

    name: str
    model_types: tuple[str, ...]
    image_placeholder: str | None
    wrapper: str | None = None  # fallback when detection from the tokenizer finds nothing


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llava", ("llava",), "<image>", "vicuna"),
        Family("llava_next", ("llava_next",), "<image>", "llama3"),
        Family("mllama", ("mllama",), "<|image|>", "llama3"),
        Family("qwen2_vl", ("qwen2_vl",), "<|vision_start|><|image_pad|><|vision_end|>", "chatml"),
        Family("qwen2_5_vl", ("qwen2_5_vl",), "<|vision_start|><|image_pad|><|vision_end|>", "chatml"),
        Family("qwen3_vl", ("qwen3_vl",), "<|vision_start|><|image_pad|><|vision_end|>", "chatml"),
        Family("idefics3", ("idefics3", "smolvlm"), "<image>", "idefics3"),
        # Text-only causal language models (E5-V's text prompt, last token).
        Family("text", ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text"), None),
    )
}


@dataclass(frozen=True)
class Recipe:
    """Exact prompt strings of one paper.

    Attributes:
        prompts: ``text``, ``image`` and ``image_text`` prompts used when no instruction is given.
        instructed: prompt used when an instruction (system message / ST ``prompt=``) is present;
            ``{instruction}`` is replaced by it. None: the instruction itself is the prompt (E5-V).
        instruct_documents: whether documents (``task="document"``) also get the instruction.
        image_block: per-family override of how ``<image>`` is written (e.g. mmE5's Mllama rewrite).
        wrapped: whether the prompt goes inside the family's chat wrapper.
        extra_prompts: other named prompts of the paper (CIRR, FashionIQ, ...) for ``prompt=``.
    """

    name: str
    prompts: dict[str, str]
    instructed: str | None = None
    instruct_documents: bool = True
    image_block: dict[str, str] = field(default_factory=dict)
    wrapped: bool = False
    extra_prompts: dict[str, str] = field(default_factory=dict)
    source: str = ""


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "e5v",
            prompts={
                "text": "<sent>\nSummary above sentence in one word: ",
                "image": "<image>\nSummary above image in one word: ",
                "image_text": '<image>Modify this image with "<sent>", desribe modified image in one word:',
            },
            wrapped=True,
            extra_prompts={
                "cirr_query": '<image>Modify this image with "<sent>", desribe modified image in one word:',
                "cirr_candidate": "<image>\n Describe this image in one word:",
                **{
                    f"fashioniq_{x}_candidate": f"<image>\n Describe this {x} in one word based on its style:"
                    for x in ("dress", "shirt", "toptee")
                },
                **{
                    f"fashioniq_{x}_query": f"<image> change the style of this {x} to <sent>\n Desribe this "
                    f"modified {x} in one word based on its style:"
                    for x in ("dress", "shirt", "toptee")
                },
            },
            source="E5-V (arXiv 2407.12580, kongds/E5-V); typos 'desribe'/'Desribe' kept for reproduction",
        ),
        Recipe(
            "mme5",
            prompts={"text": "<sent>", "image": "<image>Represent the given image.\n", "image_text": "<image><sent>"},
            instructed="<image>{instruction}\n<sent>",
            image_block={"mllama": "<|image|><|begin_of_text|>"},
            source="mmE5 (arXiv 2502.08468, haon-chen/mmE5 collator)",
        ),
        Recipe(
            "vlm2vec",
            prompts={"text": "<sent>", "image": "<image>\nRepresent the given image.", "image_text": "<image>\n<sent>"},
            instructed="<image>\n{instruction}<sent>",
            source="VLM2Vec / MMEB (TIGER-Lab): '<|image_1|>\\n' + instruction + text",
        ),
        Recipe(
            "mmembed",
            prompts={"text": "<sent>", "image": "<image>\n", "image_text": "<image>\n<sent>"},
            instructed="Instruct: {instruction}\nQuery: <image>\n<sent>",
            instruct_documents=False,
            source="MM-Embed (arXiv 2411.02571): queries only carry 'Instruct: ...\\nQuery: '",
        ),
    )
}

# MMEB instructions (query side), from paper-facts.md; take exact punctuation from dataset rows.
MMEB_INSTRUCTIONS: dict[str, str] = {
    "ImageNet-1K": "Represent the given image for classification",
    "VOC2007": "Identify the object shown in the image.",
    "ObjectNet": "Identify the object shown in the image.",
    "SUN397": "Identify the scene shown in the image.",
    "Place365": "Identify the scene shown in the image.",
    "OK-VQA": "Represent the given image with the following question: ",
    "MSCOCO_t2i": "Find me an everyday image that matches the given caption: ",
    "CIRR": "Given an image, find a similar everyday image with the described changes: ",
}

# M-BEIR query instructions used by MM-Embed, keyed by mteb-style task names.
MBEIR_INSTRUCTIONS: dict[str, str] = {
    "VisualNewsT2IRetrieval": "Identify the news-related image in line with the described event.",
    "VisualNewsI2TRetrieval": "Find a caption for the news in the given photo.",
    "Fashion200kT2IRetrieval": "Based on the following fashion description, retrieve the best matching image.",
    "WebQAT2TRetrieval": "Retrieve passages from Wikipedia that provide answers to the following question.",
    "NIGHTSI2IRetrieval": "Find a day-to-day image that looks similar to the provided image.",
    "OVENIT2TRetrieval": "Retrieve a Wikipedia paragraph that provides an answer to the given query about the image.",
    "InfoSeekIT2TRetrieval": "Retrieve a Wikipedia paragraph that provides an answer to the given query about the image.",
    "FashionIQIT2IRetrieval": "Find a fashion image that aligns with the reference image and style note.",
    "CIRRIT2IRetrieval": "Retrieve a day-to-day image that aligns with the modification instructions of the provided image.",
    "MSCOCOT2IRetrieval": "Find me an everyday image that matches the given caption.",
}


def _known(kind: str, table: dict) -> str:
    return f"Known {kind}: {', '.join(sorted(table))}."


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. {_known('recipes', RECIPES)}")
    return RECIPES[name]


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


def _pick_prompt(recipe: Recipe, text: str | None, num_images: int, instruction: str | None, task: str | None) -> str:
    """Python mirror of the Jinja selection logic (used by tests and :func:`render_prompt`)."""
    use_instruction = bool(instruction) and (recipe.instruct_documents or task != "document")
    if use_instruction:
        if recipe.instructed is None:
            return instruction
        return recipe.instructed.replace("{instruction}", instruction)
    if num_images and text:
        return recipe.prompts["image_text"]
    if num_images:
        return recipe.prompts["image"]
    return recipe.prompts["text"]


def image_block(recipe: Recipe, family: Family) -> str:
    return recipe.image_block.get(family.name, family.image_placeholder or "")


def render_prompt(
    recipe: str,
    family: str,
    text: str | None = None,
    num_images: int = 0,
    instruction: str | None = None,
    task: str | None = None,
    wrapper: str | None = None,
) -> str:
    """The literal prompt string a recipe gives one input (what the saved chat template renders).

    For ``instructed`` prompts, the ``<image>`` marker is dropped when there is no image and the
    separator that follows it (``\\n``) with it, so a text-only query reads ``{instruction}{text}``.
    """
    rec, fam = get_recipe(recipe), get_family(family)
    prompt = _pick_prompt(rec, text, num_images, instruction, task)
    if num_images:
        prompt = prompt.replace(IMAGE, image_block(rec, fam) * num_images)
    else:
        prompt = prompt.replace(IMAGE + "\n", "").replace(IMAGE, "")
    prompt = prompt.replace(SENT, text or "")
    if rec.wrapped:
        prompt = WRAPPERS[wrapper or fam.wrapper or "vicuna"].wrap(prompt)
    return prompt


def _lit(value: str) -> str:
    """A Jinja string literal for ``value`` (Jinja accepts JSON-style escapes)."""
    return json.dumps(value, ensure_ascii=False)


# Jinja: collect instruction (system), text and image count, choose the recipe prompt, fill markers.
_JINJA = """\
{%- set ns = namespace(text='', images=0, instruction='') -%}
{%- for message in messages -%}
{%- set parts = [{'type': 'text', 'text': message['content']}] if message['content'] is string else message['content'] -%}
{%- for part in parts -%}
{%- if part['type'] == 'text' and message['role'] == 'system' -%}{%- set ns.instruction = ns.instruction + part['text'] -%}
{%- elif part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}
{%- elif part['type'] == 'image' -%}{%- set ns.images = ns.images + 1 -%}
{%- endif -%}
{%- endfor -%}
{%- endfor -%}
{%- set use_instruction = ns.instruction and (INSTRUCT_DOCUMENTS or task is not defined or task != 'document') -%}
{%- if use_instruction and INSTRUCTED is none -%}{%- set prompt = ns.instruction -%}
{%- elif use_instruction -%}{%- set prompt = INSTRUCTED.replace('{instruction}', ns.instruction) -%}
{%- elif ns.images and ns.text -%}{%- set prompt = P_IMAGE_TEXT -%}
{%- elif ns.images -%}{%- set prompt = P_IMAGE -%}
{%- else -%}{%- set prompt = P_TEXT -%}
{%- endif -%}
{%- if ns.images -%}{%- set prompt = prompt.replace('<image>', IMAGE_BLOCK * ns.images) -%}
{%- else -%}{%- set prompt = prompt.replace('<image>\\n', '').replace('<image>', '') -%}
{%- endif -%}
{{- BOS + HEAD + prompt.replace('<sent>', ns.text) + TAIL -}}
"""


def render_chat_template(recipe: str, family: str, wrapper: str | None = None, bos: str = "") -> str:
    """Render a recipe for a family into a Jinja chat template (saved with the model).

    Args:
        recipe: a key of :data:`RECIPES`.
        family: a key of :data:`FAMILIES`.
        wrapper: a key of :data:`WRAPPERS`; default the family's, else ``vicuna``.
        bos: text to put first (only for tokenizers whose chat-template path adds no BOS itself).
    """
    rec, fam = get_recipe(recipe), get_family(family)
    if wrapper is not None and wrapper not in WRAPPERS:
        raise ValueError(f"Unknown wrapper {wrapper!r}. {_known('wrappers', WRAPPERS)}")
    head, tail = WRAPPERS[wrapper or fam.wrapper or "vicuna"].template.split("{}") if rec.wrapped else ("", "")
    constants = {
        "INSTRUCT_DOCUMENTS": "true" if rec.instruct_documents else "false",
        "INSTRUCTED": "none" if rec.instructed is None else _lit(rec.instructed),
        "P_TEXT": _lit(rec.prompts["text"]),
        "P_IMAGE": _lit(rec.prompts["image"]),
        "P_IMAGE_TEXT": _lit(rec.prompts["image_text"]),
        "IMAGE_BLOCK": _lit(image_block(rec, fam)),
        "BOS": _lit(bos),
        "HEAD": _lit(head),
        "TAIL": _lit(tail),
    }
    header = "".join(f"{{%- set {k} = {v} -%}}\n" for k, v in constants.items())
    return f"{{#- mm_st recipe={rec.name} family={fam.name} -#}}\n" + header + _JINJA
