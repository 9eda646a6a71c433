"""Evaluation instructions: MMEB's 36 datasets, and which instruction each recipe gets on which mteb task.

MMEB-eval rows carry their instruction inside the text (``"<|image_1|>\\nIdentify the object shown
in the image"``, ``"Find me an everyday image that matches the given caption: A dog ..."``). The
tasks split each row into (instruction, text) with :func:`split_instruction`, using the entries of
:data:`MMEB` as anchors; the first anchor of each side is the task's declared prompt (the same
before and after the data load), and the model applies it through its recipe template.

This is mm_st's one MMEB instruction table (``mm_st.templates`` keeps none). Wording and final
punctuation follow VLM2Vec's ``archive/instruction_dict.py`` where it lists the dataset (e.g.
VOC2007 / ObjectNet without a final period, ImageNet-1K / SUN397 with one).
Sources: VLM2Vec / MMEB (TIGER-Lab; the eval rows, ``archive/instruction_dict.py``), the MMEB-eval
strings as quoted by third-party evaluators; punctuation differs between sources, which is why the
split tolerates trailing ``" .:"``. Which instruction a recipe gives which task is declared by the recipe
(:mod:`mm_st.recipes`; e.g. MM-Embed's M-BEIR instructions) and read here by :func:`recipe_task_prompts`.

Example:
    >>> from mm_st.evaluation.instructions import MMEB, split_instruction
    >>> MMEB["VOC2007"].category, MMEB["VOC2007"].meta_task, MMEB["VOC2007"].distribution
    ('i2t', 'Classification', 'IND')
    >>> split_instruction("<|image_1|>\\nRepresent the given image with the following question: Why?",
    ...                   MMEB["OK-VQA"].query)
    ('Represent the given image with the following question: ', 'Why?')
"""

from __future__ import annotations

from dataclasses import dataclass

from mm_st.recipes.registry import specs
from mm_st.recipes.vlm2vec import VLM2VEC_MMEB_PROMPTS  # noqa: F401  (re-exported: declared by the VLM2Vec recipe)

IMAGE_TOKEN = "<|image_1|>"  # VLM2Vec's image placeholder in MMEB rows
_TAIL = " .:\n"  # punctuation that may follow an instruction's core (differs between sources)


@dataclass(frozen=True)
class MMEBDataset:
    """One MMEB v1 dataset: meta-task, in/out of training distribution, mteb category, instructions.

    ``query`` / ``document``: instruction anchors (alternatives) that rows start with, after the
    image placeholder; ``()`` for documents that carry none (labels, answers, captions).
    """

    name: str
    meta_task: str  # Classification | VQA | Retrieval | Grounding
    distribution: str  # IND | OOD
    category: str  # mteb TaskCategory after the instruction is split off
    query: tuple[str, ...]
    document: tuple[str, ...] = ()


_VQA = ("Represent the given image with the following question: ",)
_IMAGE = ("Represent the given image.",)
_CROP = ("Represent the given cropped image of the object",)
_WIKI = ("Represent the given Wikipedia image with related text information: ",)
_EXPR = ("Select the portion of the image that follows the language expressions: ",)


def _dataset(name, meta, dist, cat, query, document=()):
    """One :class:`MMEBDataset`; ``query`` is one instruction or a tuple of them."""
    return MMEBDataset(name, meta, dist, cat, tuple(query) if isinstance(query, tuple) else (query,), document)


MMEB: dict[str, MMEBDataset] = {
    dataset.name: dataset
    for dataset in (
        # Classification (10): image (+ caption for N24News) -> label text
        _dataset("ImageNet-1K", "Classification", "IND", "i2t", "Represent the given image for classification."),
        _dataset("N24News", "Classification", "IND", "it2t",
           "Represent the given news image with the following caption for domain classification: "),
        _dataset("HatefulMemes", "Classification", "IND", "i2t",
           "Represent the given image for binary classification to determine whether it constitutes hateful speech or not."),
        _dataset("VOC2007", "Classification", "IND", "i2t", "Identify the object shown in the image"),
        _dataset("SUN397", "Classification", "IND", "i2t", "Identify the scene shown in the image."),
        _dataset("Place365", "Classification", "OOD", "i2t", "Identify the scene shown in the image."),
        _dataset("ImageNet-A", "Classification", "OOD", "i2t", "Represent the given image for classification."),
        _dataset("ImageNet-R", "Classification", "OOD", "i2t", "Represent the given image for classification."),
        _dataset("ObjectNet", "Classification", "OOD", "i2t", "Identify the object shown in the image"),
        _dataset("Country211", "Classification", "OOD", "i2t", "Identify the country depicted in the image"),
        # VQA (10): image + question -> answer text
        *(_dataset(n, "VQA", "IND", "it2t", _VQA) for n in ("OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W")),
        *(_dataset(n, "VQA", "OOD", "it2t", _VQA) for n in ("ScienceQA", "VizWiz", "GQA", "TextVQA")),
        # Retrieval (12)
        _dataset("VisDial", "Retrieval", "IND", "t2i",
           "Represent the given dialogue about an image, which is used for image retrieval: ", _IMAGE),
        _dataset("CIRR", "Retrieval", "IND", "it2i",
           "Given an image, find a similar everyday image with the described changes: ", _IMAGE),
        _dataset("VisualNews_t2i", "Retrieval", "IND", "t2i", "Retrieve an image of this news caption. ", _IMAGE),
        _dataset("VisualNews_i2t", "Retrieval", "IND", "i2t", "Find a caption for the news in the given photo."),
        _dataset("MSCOCO_t2i", "Retrieval", "IND", "t2i", "Find me an everyday image that matches the given caption: ", _IMAGE),
        _dataset("MSCOCO_i2t", "Retrieval", "IND", "i2t", "Find an image caption describing the given everyday image."),
        _dataset("NIGHTS", "Retrieval", "IND", "i2i", "Find a day-to-day image that looks similar to the provided image.", _IMAGE),
        _dataset("WebQA", "Retrieval", "IND", "t2it", "Find a Wikipedia image that answers this question: ", _WIKI),
        _dataset("OVEN", "Retrieval", "OOD", "it2it",
           "Retrieve a Wikipedia image-description pair that provides evidence for the question of this image: ", _WIKI),
        _dataset("FashionIQ", "Retrieval", "OOD", "it2i", "Find an image to match the fashion image and style note: ", _IMAGE),
        _dataset("EDIS", "Retrieval", "OOD", "t2it", "Find a news image that matches the provided caption: ",
           ("Represent the given image with related text information: ",)),
        _dataset("Wiki-SS-NQ", "Retrieval", "OOD", "t2i", "Find the document image that can answer the given query: ", _IMAGE),
        # Visual grounding (4): image + object/expression -> cropped image
        _dataset("MSCOCO", "Grounding", "IND", "it2i",
           ("Select the portion of the image that isolates the object labeled as ",
            "Crop the image to to isolate the object labeled as "), _CROP),
        _dataset("RefCOCO", "Grounding", "OOD", "it2i", _EXPR, _CROP),
        _dataset("RefCOCO-Matching", "Grounding", "OOD", "it2it", _EXPR, _EXPR),
        _dataset("Visual7W-Pointing", "Grounding", "OOD", "it2i",
           "Select the portion of the image that answers the question: ", _CROP),
    )
}

META_TASKS = ("Classification", "VQA", "Retrieval", "Grounding")


def strip_image_token(text: str) -> str:
    """Remove VLM2Vec's ``<|image_1|>`` placeholder (and the newline after it)."""
    return text.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "")


def _core(instruction: str) -> str:
    return instruction.rstrip(_TAIL)


def split_instruction(text: str, anchors: tuple[str, ...]) -> tuple[str | None, str]:
    """``(instruction, rest)`` of an MMEB row text; ``(None, text)`` when no anchor starts it.

    The instruction is the anchor's core (trailing ``" .:"`` removed) plus whatever run of those
    characters follows it in the row, so the row's own punctuation is kept exactly.
    """
    text = strip_image_token(text)
    for anchor in anchors:
        core = _core(anchor)
        if core and text.startswith(core):
            end = len(core)
            while end < len(text) and text[end] in _TAIL:
                end += 1
            return text[:end], text[end:]
    return None, text


def same_instruction(a: str, b: str) -> bool:
    """Whether two instruction strings differ at most in trailing ``" .:"`` punctuation."""
    return _core(a) == _core(b)


# MMEB's wording for the M-BEIR tasks that have an MMEB counterpart (recipes that declare ``mmeb_instructions``:
# VLM2Vec, mmE5).
def _mbeir_mmeb_style() -> dict[str, dict[str, str]]:
    pairs = {
        "VisualNewsT2IRetrieval": "VisualNews_t2i",
        "VisualNewsI2TRetrieval": "VisualNews_i2t",
        "MSCOCOT2IRetrieval": "MSCOCO_t2i",
        "MSCOCOI2TRetrieval": "MSCOCO_i2t",
        "NIGHTSI2IRetrieval": "NIGHTS",
        "WebQAT2ITRetrieval": "WebQA",
        "OVENIT2ITRetrieval": "OVEN",
        "FashionIQIT2IRetrieval": "FashionIQ",
        "CIRRIT2IRetrieval": "CIRR",
        "EDIST2ITRetrieval": "EDIS",
    }
    out = {}
    for task, name in pairs.items():
        entry = MMEB[name]
        out[task] = {"query": entry.query[0], **({"document": entry.document[0]} if entry.document else {})}
    return out


# The 16 M-BEIR local-pool tasks mteb ships, and the paper metric of each (Recall@5; @10 for fashion).
MBEIR_TASKS: dict[str, str] = {
    name: ("recall_at_10" if name.startswith(("Fashion200k", "FashionIQ")) else "recall_at_5")
    for name in (
        "VisualNewsT2IRetrieval", "MSCOCOT2IRetrieval", "Fashion200kT2IRetrieval", "WebQAT2TRetrieval",
        "EDIST2ITRetrieval", "WebQAT2ITRetrieval", "VisualNewsI2TRetrieval", "MSCOCOI2TRetrieval",
        "Fashion200kI2TRetrieval", "NIGHTSI2IRetrieval", "OVENIT2TRetrieval", "InfoSeekIT2TRetrieval",
        "FashionIQIT2IRetrieval", "CIRRIT2IRetrieval", "OVENIT2ITRetrieval", "InfoSeekIT2ITRetrieval",
    )
}


def recipe_task_prompts() -> dict[str, dict[str, dict[str, str]]]:
    """``{recipe: {task name: {"query": ..., "document": ...}}}`` overriding the task prompts: a view of what each
    registered recipe declares (:class:`mm_st.recipes.RecipeSpec` ``task_prompts`` over MMEB's wording when it sets
    ``mmeb_instructions``). Recipes that declare none use the task prompts.

    A value may hold ``{instruction}``: the task's own instruction for that side goes there. A side
    a task's entry does not name gets no instruction.
    """
    mmeb_style = _mbeir_mmeb_style()
    tables = {spec.name: {**(mmeb_style if spec.mmeb_instructions else {}), **spec.task_prompts} for spec in specs()
              if spec.task_prompts or spec.mmeb_instructions}
    # mm_st's local M-BEIR tasks and their union-pool tasks get what mteb's task over the same data gets
    from mm_st.evaluation.mbeir_files import GLOBAL_PREFIX, MBEIR_LOCAL_FILES, PREFIX

    for table in tables.values():
        table.update({prefix + f.name: table[f.mteb_task] for f in MBEIR_LOCAL_FILES if f.mteb_task in table
                      for prefix in (PREFIX, GLOBAL_PREFIX)})
    return tables
