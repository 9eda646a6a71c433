"""mmE5 (arXiv 2502.08468, haon-chen/mmE5): '{image tokens}{instruction} {query}\\n' prompts; its training config is
:class:`mm_st.training.mme5.MME5Config`.

Example:
    >>> from mm_st.recipes.mme5 import SPEC
    >>> SPEC.prompts.image_block["mllama"], SPEC.facts["dora_r"], SPEC.mmeb_instructions
    ('<|image|><|begin_of_text|>', 8, True)
"""

from __future__ import annotations

from mm_st.modality import IMAGE, IMAGE_TEXT, TEXT
from mm_st.recipes.registry import MODALITIES, PaperModel, Recipe, RecipeSpec, register_recipe, rows_as_written

PROMPTS = Recipe(
    "mme5",
    # haon-chen/mmE5 demo.py (commit 4818cdf "align data format with model training"):
    # '{image tokens}{instruction} {query}\n'; a bare image target '{image}Represent the given
    # image.\n'; text targets plain.
    prompts={TEXT: "<sent>", IMAGE: "<image>Represent the given image.\n", IMAGE_TEXT: "<image><sent>\n"},
    instructed={k: "<image>{instruction} <sent>\n" for k in MODALITIES},
    # haon-chen/mmE5 src/collator.py: '<|image_1|>\n' -> '<|image|><|begin_of_text|>' (Mllama);
    # the other backbones keep VLM2Vec's '<|image_1|>\n' with their own token (src/dataset.py).
    image_block={"mllama": "<|image|><|begin_of_text|>", "*": "{placeholder}\n"},
    source="mmE5 (arXiv 2502.08468, haon-chen/mmE5 demo.py and src/collator.py)",
)

# haon-chen/mmE5 (HEAD 4818cdf) trains on rows as written after the placeholder swap: no
# trailing '\n' (e.g. '<|image|><|begin_of_text|>Represent the given image with the
# following question: What is in the image?'; the tokenizer adds a second BOS in front).
TRAIN_PROMPTS = rows_as_written(
    PROMPTS, "mmE5 training text: haon-chen/mmE5 src/dataset.py + src/collator.py (rows as written)")

# The paper's training values MME5Config reads.
FACTS: dict[str, object] = {"epochs": 1, "learning_rate": 1e-5, "max_length": 256, "temperature": 0.02, "dora_r": 8,
                            "source": "mmE5 paper and haon-chen/mmE5 scripts/train/train.sh"}

SPEC = register_recipe(RecipeSpec(
    "mme5", PROMPTS, TRAIN_PROMPTS, config="mm_st.training.mme5:MME5Config", facts=FACTS, mmeb_instructions=True,
    paper_models=(PaperModel("mm_st/mmE5-mllama-11b-instruct", "intfloat/mmE5-mllama-11b-instruct",
                             "https://github.com/haon-chen/mmE5"),),
))
