"""MM-Embed (arXiv 2411.02571, nvidia/MM-Embed): 'Instruct: ...\\nQuery: ' on queries only, M-BEIR instructions; its
training config is :class:`mm_st.training.mmembed.MMEmbedConfig` (three stages). Its weights need remote code, so it
has no paper model entry.

Example:
    >>> from mm_st.recipes.mmembed import SPEC
    >>> SPEC.prompts.query_prompts["text"], SPEC.train_prompts.instruction_marker
    ('Query: <sent>', '\\nQuery: ')
"""

from __future__ import annotations

from dataclasses import replace

from mm_st.modality import IMAGE, IMAGE_TEXT, TEXT
from mm_st.recipes.registry import Recipe, RecipeSpec, register_recipe

_PROMPTS = {TEXT: "<sent>", IMAGE: "<image>\n", IMAGE_TEXT: "<image>\n<sent>"}

PROMPTS = Recipe(
    "mmembed",
    prompts=_PROMPTS,
    instructed={k: "Instruct: {instruction}\nQuery: " + p for k, p in _PROMPTS.items()},
    # nvidia/MM-Embed: query_prefix = 'Query: ' even without an instruction; documents bare
    query_prompts={k: "Query: " + p for k, p in _PROMPTS.items()},
    instruct_documents=False,
    # nvidia/MM-Embed: calculate_instruction_length(tokenizer, prompts, f'\\n{query_prefix}') -> pool_mask
    instruction_marker="\nQuery: ",
    source="MM-Embed (arXiv 2411.02571, nvidia/MM-Embed model code): 'Instruct: ...\\nQuery: ' on queries only",
)

# MM-Embed released no training code: its training format is its inference format.
TRAIN_PROMPTS = replace(PROMPTS, fmt="train", source=PROMPTS.source + "; no public training code")

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

# MM-Embed instructs queries only (the recipe never instructs documents).
TASK_PROMPTS = {task: {"query": text} for task, text in MBEIR_INSTRUCTIONS.items()}
TASK_PROMPTS["CIRRComposedImageRetrieval"] = {"query": MBEIR_INSTRUCTIONS["CIRRIT2IRetrieval"]}

SPEC = register_recipe(RecipeSpec(
    "mmembed", PROMPTS, TRAIN_PROMPTS, config="mm_st.training.mmembed:MMEmbedConfig", task_prompts=TASK_PROMPTS,
))
