"""Prompt templates: one registry of recipe x backbone-family strings, rendered into a chat template.

A recipe (E5-V, mmE5, VLM2Vec, MM-Embed) is data: the exact prompt strings of its paper's reference
code, each with its source. A backbone family is data too: how its processor writes an image in text
and which chat wrapper its language model speaks. :func:`render_chat_template` turns one recipe and
one family into a Jinja chat template that sentence-transformers saves with the model, so a plain
``SentenceTransformer(path)`` reproduces the recipe without mm_st installed. That template is the one
copy of the selection logic: :func:`render_prompt` renders it with transformers' chat-template renderer.

Markers in prompt strings: ``<image>`` is replaced by the image block (once per image), ``<sent>`` by
the input text. Without an image, ``<image>`` and the ``\\n`` after it go; without text, ``<sent>`` and
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
from dataclasses import dataclass, field, replace

from mm_st.metadata import header as metadata_header
from mm_st.metadata import recipe_metadata
from mm_st.modality import IMAGE_TEXT, SUPPORTED, TEXT, prompt_key
from mm_st.modality import IMAGE as IMAGE_MODALITY

IMAGE = "<image>"
SENT = "<sent>"
INSTRUCTION = "{instruction}"
FORMATS = ("inference", "train")
MODALITIES = SUPPORTED  # a recipe has one prompt per modality mm_st embeds (mm_st.modality)


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
    """A backbone family: config ``model_type`` values, image placeholder, default wrapper."""

    name: str
    model_types: tuple[str, ...]
    image_placeholder: str | None
    wrapper: str | None = None  # fallback when detection from the tokenizer finds nothing


_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llava", ("llava",), "<image>", "vicuna"),
        Family("llava_next", ("llava_next",), "<image>", "llama3"),
        Family("mllama", ("mllama",), "<|image|>", "llama3"),
        Family("qwen2_vl", ("qwen2_vl",), _QWEN_IMAGE, "chatml"),
        Family("qwen2_5_vl", ("qwen2_5_vl",), _QWEN_IMAGE, "chatml"),
        Family("qwen3_vl", ("qwen3_vl",), _QWEN_IMAGE, "chatml"),
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


@dataclass(frozen=True)
class Recipe:
    """Exact prompt strings of one paper, in one format (``inference`` or ``train``).

    Attributes:
        prompts: ``text`` / ``image`` / ``image+text`` prompts (keyed by :mod:`mm_st.modality` names) used when no instruction is given.
        instructed: the same three, used with an instruction (``{instruction}`` is replaced by it).
        query_prompts: no-instruction prompts for queries (``task="query"``) when they differ (MM-Embed).
        instruct_documents: whether documents (``task="document"``) also get the instruction.
        image_block: how ``<image>`` is written, per family (``"*"``: every family; the value may use
            ``{placeholder}`` for the family's own), e.g. mmE5's Mllama rewrite, VLM2Vec's bare
            ``<|image_pad|>`` on Qwen2-VL. Families not listed use their placeholder.
        wrapped: whether the prompt goes inside the family's chat wrapper.
        train_wrappers: for a training format, the wrapper used in place of each detected wrapper
            (``"*"``: any other); empty: the detected wrapper.
        extra_prompts: other named full prompts of the paper (CIRR, FashionIQ, ...) for ``prompt=``.
        instruction_marker: the text that ends a query's instruction, for pooling that leaves the instruction
            out (MM-Embed's ``"\\nQuery: "``, read by ``build_model(pooling="latent_attention")``); None: none.
    """

    name: str
    prompts: dict[str, str]
    instructed: dict[str, str]
    query_prompts: dict[str, str] = field(default_factory=dict)
    instruct_documents: bool = True
    image_block: dict[str, str] = field(default_factory=dict)
    wrapped: bool = False
    train_wrappers: dict[str, str] = field(default_factory=dict)
    extra_prompts: dict[str, str] = field(default_factory=dict)
    instruction_marker: str | None = None
    fmt: str = "inference"
    source: str = ""

    @property
    def uses_instruction(self) -> bool:
        """Whether an instruction reaches the model (False for E5-V)."""
        return any(INSTRUCTION in p for p in self.instructed.values())


def _fashioniq(x: str) -> dict[str, str]:
    # kongds/E5-V retrieval.py: `if fiq_data_type == 'toptee': fiq_data_name = 'shirt'`
    word = "shirt" if x == "toptee" else x
    return {
        f"fashioniq_{x}_candidate": f"<image>\n Describe this {word} in one word based on its style:",
        f"fashioniq_{x}_query": f"<image> change the style of this {word} to <sent>\n Desribe this modified {word} in "
        "one word based on its style:",
    }


_E5V_TEXT = "<sent>\nSummary above sentence in one word: "
_E5V_IMAGE = "<image>\nSummary above image in one word: "
_E5V_CIRR_QUERY = '<image>Modify this image with "<sent>", desribe modified image in one word:'
_MME5_IMAGE = "<image>Represent the given image.\n"
_VLM2VEC_IMAGE = "<image>\nRepresent the given image.\n"
_MMEMBED = {TEXT: "<sent>", IMAGE_MODALITY: "<image>\n", IMAGE_TEXT: "<image>\n<sent>"}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "e5v",
            # kongds/E5-V retrieval.py: img_prompt / text_prompt inside llama3_template; the composed
            # (image + text) prompt is its CIRR query prompt.
            prompts={TEXT: _E5V_TEXT, IMAGE_MODALITY: _E5V_IMAGE, IMAGE_TEXT: _E5V_CIRR_QUERY},
            # TIGER-AI-Lab/VLM2Vec src/model/processor.py e5_v_prompt_template / process_input_text
            # (HEAD 6e1e1d4): E5-V is evaluated WITHOUT its instruction; image + text gets
            # '<image>\n{text}\nSummary above image and text in one word: '.
            instructed={
                TEXT: _E5V_TEXT,
                IMAGE_MODALITY: _E5V_IMAGE,
                IMAGE_TEXT: "<image>\n<sent>\nSummary above image and text in one word: ",
            },
            wrapped=True,
            extra_prompts={
                # kongds/E5-V retrieval.py CIRR prompts (with ' [/INST]' removed for llama3)
                "cirr_query": _E5V_CIRR_QUERY,
                "cirr_candidate": "<image>\n Describe this image in one word:",
                **_fashioniq("dress"),
                **_fashioniq("shirt"),
                **_fashioniq("toptee"),
            },
            source="E5-V (arXiv 2407.12580, kongds/E5-V retrieval.py); typos 'desribe'/'Desribe' kept for reproduction",
        ),
        Recipe(
            "mme5",
            # haon-chen/mmE5 demo.py (commit 4818cdf "align data format with model training"):
            # '{image tokens}{instruction} {query}\n'; a bare image target '{image}Represent the given
            # image.\n'; text targets plain.
            prompts={TEXT: "<sent>", IMAGE_MODALITY: _MME5_IMAGE, IMAGE_TEXT: "<image><sent>\n"},
            instructed={k: "<image>{instruction} <sent>\n" for k in MODALITIES},
            # haon-chen/mmE5 src/collator.py: '<|image_1|>\n' -> '<|image|><|begin_of_text|>' (Mllama);
            # the other backbones keep VLM2Vec's '<|image_1|>\n' with their own token (src/dataset.py).
            image_block={"mllama": "<|image|><|begin_of_text|>", "*": "{placeholder}\n"},
            source="mmE5 (arXiv 2502.08468, haon-chen/mmE5 demo.py and src/collator.py)",
        ),
        Recipe(
            "vlm2vec",
            # TIGER-AI-Lab/VLM2Vec src/data/eval_dataset/image_*.py (HEAD 6e1e1d4): queries and
            # 'Represent the given image.' targets end in '\n' ("to stay consistent with v1 eval");
            # '{image}\n{instruction} {text}'. Grounding crop targets (no '\n') and VisDial (an extra
            # '\n') are per-task full prompts in mm_st.evaluation.instructions. The eval code writes
            # '{image} ' + instruction and then .replace(' \n', '\n') on instructions that start with
            # '\n' (image_qa / image_i2i_vg parsers add it), giving '\n' after the image token; only the
            # demo scripts (experiments/examples/*/demo*.py) keep '{image} {instruction}' with a space.
            prompts={TEXT: "<sent>", IMAGE_MODALITY: _VLM2VEC_IMAGE, IMAGE_TEXT: "<image>\n<sent>\n"},
            instructed={k: "<image>\n{instruction} <sent>\n" for k in MODALITIES},
            # src/model/processor.py VLM_IMAGE_TOKENS: Qwen2(.5)-VL get the bare '<|image_pad|>'
            image_block={"qwen2_vl": "<|image_pad|>", "qwen2_5_vl": "<|image_pad|>"},
            source="VLM2Vec / MMEB (TIGER-AI-Lab/VLM2Vec eval code, HEAD 6e1e1d4)",
        ),
        Recipe(
            "mmembed",
            prompts=_MMEMBED,
            instructed={k: "Instruct: {instruction}\nQuery: " + p for k, p in _MMEMBED.items()},
            # nvidia/MM-Embed: query_prefix = 'Query: ' even without an instruction; documents bare
            query_prompts={k: "Query: " + p for k, p in _MMEMBED.items()},
            instruct_documents=False,
            # nvidia/MM-Embed: calculate_instruction_length(tokenizer, prompts, f'\\n{query_prefix}') -> pool_mask
            instruction_marker="\nQuery: ",
            source="MM-Embed (arXiv 2411.02571, nvidia/MM-Embed model code): 'Instruct: ...\\nQuery: ' on queries only",
        ),
    )
}


def _strip_trailing_newline(prompts: dict[str, str]) -> dict[str, str]:
    return {k: p[:-1] if p.endswith("\n") else p for k, p in prompts.items()}


# Training formats: what each reference training code feeds the model.
TRAIN_RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        replace(
            RECIPES["e5v"],
            # kongds/E5-V run.sh TEMPLATE='*sent_0*\nSummary_above_sentence_in_one_word:' (no trailing
            # space), wrapped by ft_llm.py only for llama-3 models, then de-tokenised (see the wrapper).
            # E5-V trains on text only; the image prompts follow the same rule (mm_st extension).
            prompts={k: p.rstrip(" ") for k, p in RECIPES["e5v"].prompts.items()},
            instructed={k: p.rstrip(" ") for k, p in RECIPES["e5v"].instructed.items()},
            train_wrappers={"llama3": "llama3_upstream_train", "*": "raw"},
            fmt="train",
            source="E5-V training text: kongds/E5-V ft_llm.py generate_sentemb_prompt + run.sh TEMPLATE",
        ),
        replace(
            RECIPES["mme5"],
            # haon-chen/mmE5 (HEAD 4818cdf) trains on rows as written after the placeholder swap: no
            # trailing '\n' (e.g. '<|image|><|begin_of_text|>Represent the given image with the
            # following question: What is in the image?'; the tokenizer adds a second BOS in front).
            prompts=_strip_trailing_newline(RECIPES["mme5"].prompts),
            instructed=_strip_trailing_newline(RECIPES["mme5"].instructed),
            fmt="train",
            source="mmE5 training text: haon-chen/mmE5 src/dataset.py + src/collator.py (rows as written)",
        ),
        replace(
            RECIPES["vlm2vec"],
            # TIGER-AI-Lab/VLM2Vec src/data/dataset/mmeb_dataset.py: MMEB-train rows as written with
            # '<|image_1|>' swapped for the backbone's token: '{image}\n{instruction}{text}', no '\n' at the end.
            prompts=_strip_trailing_newline(RECIPES["vlm2vec"].prompts),
            instructed=_strip_trailing_newline(RECIPES["vlm2vec"].instructed),
            fmt="train",
            source="VLM2Vec training text: TIGER-AI-Lab/VLM2Vec src/data/dataset/mmeb_dataset.py (rows as written)",
        ),
        # MM-Embed released no training code: its training format is its inference format.
        replace(RECIPES["mmembed"], fmt="train", source=RECIPES["mmembed"].source + "; no public training code"),
    )
}

# Training facts a recipe config reads; each with its source.
RECIPE_FACTS: dict[str, dict[str, object]] = {
    "e5v": {
        "epochs": 2,  # kongds/E5-V run.sh EPOCH=2
        "epochs_paper": 1,  # arXiv 2407.12580 text
        "learning_rate": 4e-4,
        "batch_size": 768,
        "max_text_tokens": 32,  # run.sh --cutoff_len 32
        "lora_r": 64,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "temperature": 0.05,
        "train_template": "inference",  # mm_st default; "upstream" = TRAIN_RECIPES["e5v"]
        "source": "kongds/E5-V run.sh and ft_llm.py; the paper says 1 epoch, run.sh runs 2",
    },
    "mme5": {"epochs": 1, "learning_rate": 1e-5, "max_length": 256, "temperature": 0.02, "dora_r": 8,
             "source": "mmE5 paper and haon-chen/mmE5 scripts/train/train.sh"},
    # lora_r: 8 in the authors' v1 LLaVA-NeXT / Phi-3.5-V runs (scripts/aws/*lora8*); 16 in the README's example
    "vlm2vec": {"steps": 2000, "learning_rate": 2e-5, "batch_size": 1024, "temperature": 0.02, "lora_r": 8,
                "lora_alpha": 64, "source": "TIGER-AI-Lab/VLM2Vec scripts/aws/llava16-mistral-lora8-bs1024-step2k.sh"},
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
) -> str:
    """The literal prompt one input gets: :func:`render_chat_template`, rendered by transformers.

    ``instruction`` is the system message (ST's ``prompt=``), ``task`` ST's ``"query"`` / ``"document"``.
    A full prompt missing the marker of an input's modality raises ValueError.
    """
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    user = [{"type": "image"}] * num_images + ([{"type": "text", "text": text}] if text else [])
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
{%- set modality = @IMAGE_TEXT@ if ns.images and ns.text else (@IMAGE@ if ns.images else @TEXT@) -%}
{%- set full = '<image>' in ns.instruction or '<sent>' in ns.instruction -%}
{%- set core = ns.instruction.rstrip(' ') -%}
{%- set is_query = task is defined and task == 'query' -%}
{%- if full -%}
{%- if ns.images and '<image>' not in ns.instruction -%}{{- raise_exception(MISSING_IMAGE) -}}{%- endif -%}
{%- if ns.text and '<sent>' not in ns.instruction -%}{{- raise_exception(MISSING_SENT) -}}{%- endif -%}
{%- set prompt = ns.instruction -%}
{%- elif core and (INSTRUCT_DOCUMENTS or task is not defined or task != 'document') -%}
{%- set prompt = INSTRUCTED[modality].replace('{instruction}', core) -%}
{%- elif is_query and QUERY_PROMPTS -%}{%- set prompt = QUERY_PROMPTS[modality] -%}
{%- else -%}{%- set prompt = PROMPTS[modality] -%}
{%- endif -%}
{%- if ns.images -%}{%- set prompt = prompt.replace('<image>', IMAGE_BLOCK * ns.images) -%}
{%- else -%}{%- set prompt = prompt.replace('<image>\\n', '').replace('<image>', '') -%}
{%- endif -%}
{%- if ns.text -%}{%- set prompt = prompt.replace('<sent>', ns.text) -%}
{%- else -%}{%- set prompt = prompt.replace(' <sent>', '').replace('<sent>', '') -%}
{%- endif -%}
{%- if STRIP -%}{%- set prompt = prompt.rstrip(' ') -%}{%- endif -%}
{%- if full -%}{{- BOS + FULL_HEAD + prompt + FULL_TAIL -}}{%- else -%}{{- BOS + HEAD + prompt + TAIL -}}{%- endif -%}
"""
# The saved templates' prompt keys (mm_st.modality.PROMPT_KEYS), written as Jinja literals.
_JINJA = _JINJA.replace("@IMAGE_TEXT@", f"'{prompt_key(IMAGE_TEXT)}'").replace(
    "@IMAGE@", f"'{prompt_key(IMAGE_MODALITY)}'").replace("@TEXT@", f"'{prompt_key(TEXT)}'")


def _saved_keys(prompts: dict[str, str]) -> dict[str, str]:
    """A recipe's prompts keyed as saved chat templates key them (``image+text`` -> ``image_text``)."""
    return {prompt_key(modality): prompt for modality, prompt in prompts.items()}


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
        "IMAGE_BLOCK": _lit(image_block(rec, fam)),
        "MISSING_IMAGE": _lit(_missing_marker(IMAGE, "an image")),
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
