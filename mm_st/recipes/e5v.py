"""E5-V (arXiv 2407.12580, kongds/E5-V): one-word summary prompts inside the backbone's chat template; its training
config is :class:`mm_st.training.e5v.E5VConfig`.

Example:
    >>> from mm_st.recipes.e5v import SPEC
    >>> SPEC.facts["epochs"], SPEC.facts["epochs_paper"], SPEC.train_prompts.train_wrappers["llama3"]
    (2, 1, 'llama3_upstream_train')
"""

from __future__ import annotations

from dataclasses import replace

from mm_st.modality import IMAGE, IMAGE_TEXT, TEXT
from mm_st.recipes.registry import PaperModel, Recipe, RecipeSpec, register_recipe


def _fashioniq(x: str) -> dict[str, str]:
    # kongds/E5-V retrieval.py: `if fiq_data_type == 'toptee': fiq_data_name = 'shirt'`
    word = "shirt" if x == "toptee" else x
    return {
        f"fashioniq_{x}_candidate": f"<image>\n Describe this {word} in one word based on its style:",
        f"fashioniq_{x}_query": f"<image> change the style of this {word} to <sent>\n Desribe this modified {word} in "
        "one word based on its style:",
    }


_TEXT = "<sent>\nSummary above sentence in one word: "
_IMAGE = "<image>\nSummary above image in one word: "
_CIRR_QUERY = '<image>Modify this image with "<sent>", desribe modified image in one word:'
_CIRR_CANDIDATE = "<image>\n Describe this image in one word:"

PROMPTS = Recipe(
    "e5v",
    # kongds/E5-V retrieval.py: img_prompt / text_prompt inside llama3_template; the composed
    # (image + text) prompt is its CIRR query prompt.
    prompts={TEXT: _TEXT, IMAGE: _IMAGE, IMAGE_TEXT: _CIRR_QUERY},
    # TIGER-AI-Lab/VLM2Vec src/model/processor.py e5_v_prompt_template / process_input_text
    # (HEAD 6e1e1d4): E5-V is evaluated WITHOUT its instruction; image + text gets
    # '<image>\n{text}\nSummary above image and text in one word: '.
    instructed={
        TEXT: _TEXT,
        IMAGE: _IMAGE,
        IMAGE_TEXT: "<image>\n<sent>\nSummary above image and text in one word: ",
    },
    wrapped=True,
    extra_prompts={
        # kongds/E5-V retrieval.py CIRR prompts (with ' [/INST]' removed for llama3)
        "cirr_query": _CIRR_QUERY,
        "cirr_candidate": _CIRR_CANDIDATE,
        **_fashioniq("dress"),
        **_fashioniq("shirt"),
        **_fashioniq("toptee"),
    },
    source="E5-V (arXiv 2407.12580, kongds/E5-V retrieval.py); typos 'desribe'/'Desribe' kept for reproduction",
)

TRAIN_PROMPTS = replace(
    PROMPTS,
    # kongds/E5-V run.sh TEMPLATE='*sent_0*\nSummary_above_sentence_in_one_word:' (no trailing
    # space), wrapped by ft_llm.py only for llama-3 models, then de-tokenised (see the wrapper).
    # E5-V trains on text only; the image prompts follow the same rule (mm_st extension).
    prompts={k: p.rstrip(" ") for k, p in PROMPTS.prompts.items()},
    instructed={k: p.rstrip(" ") for k, p in PROMPTS.instructed.items()},
    train_wrappers={"llama3": "llama3_upstream_train", "*": "raw"},
    fmt="train",
    source="E5-V training text: kongds/E5-V ft_llm.py generate_sentemb_prompt + run.sh TEMPLATE",
)

# The paper's training values E5VConfig reads.
FACTS: dict[str, object] = {
    "epochs": 2,  # kongds/E5-V run.sh EPOCH=2
    "epochs_paper": 1,  # arXiv 2407.12580 text
    "learning_rate": 4e-4,
    "batch_size": 768,
    "max_text_tokens": 32,  # run.sh --cutoff_len 32
    "lora_r": 64,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "temperature": 0.05,
    "train_template": "inference",  # mm_st default; "upstream" = the training format above
    "source": "kongds/E5-V run.sh and ft_llm.py; the paper says 1 epoch, run.sh runs 2",
}

# E5-V's own CIRR prompts on the CIRR tasks (they replace the whole prompt, markers included).
_CIRR = {"query": _CIRR_QUERY, "document": _CIRR_CANDIDATE}

SPEC = register_recipe(RecipeSpec(
    "e5v", PROMPTS, TRAIN_PROMPTS, config="mm_st.training.e5v:E5VConfig", facts=FACTS,
    task_prompts={"CIRRComposedImageRetrieval": _CIRR, "CIRRIT2IRetrieval": _CIRR, "MMEB-CIRR": _CIRR},
    paper_models=(PaperModel("mm_st/e5-v", "royokong/e5-v", "https://github.com/kongds/E5-V", use_instructions=False),),
))
