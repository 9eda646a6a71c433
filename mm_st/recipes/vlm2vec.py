"""VLM2Vec v1 / MMEB (arXiv 2410.05160, TIGER-AI-Lab/VLM2Vec): '{image}\\n{instruction} {text}\\n' prompts; its training
config is :class:`mm_st.training.vlm2vec.VLM2VecConfig`.

Example:
    >>> from mm_st.recipes.vlm2vec import SPEC
    >>> SPEC.prompts.image_block["qwen2_vl"], SPEC.facts["steps"], sorted(SPEC.task_prompts)[0]
    ('<|image_pad|>', 2000, 'MMEB-MSCOCO')
"""

from __future__ import annotations

from mm_st.modality import IMAGE, IMAGE_TEXT, TEXT
from mm_st.recipes.registry import MODALITIES, PaperModel, Recipe, RecipeSpec, register_recipe, rows_as_written

PROMPTS = Recipe(
    "vlm2vec",
    # TIGER-AI-Lab/VLM2Vec src/data/eval_dataset/image_*.py (HEAD 6e1e1d4): queries and
    # 'Represent the given image.' targets end in '\n' ("to stay consistent with v1 eval");
    # '{image}\n{instruction} {text}'. Grounding crop targets (no '\n') and VisDial (an extra
    # '\n') are per-task full prompts (VLM2VEC_MMEB_PROMPTS below). The eval code writes
    # '{image} ' + instruction and then .replace(' \n', '\n') on instructions that start with
    # '\n' (image_qa / image_i2i_vg parsers add it), giving '\n' after the image token; only the
    # demo scripts (experiments/examples/*/demo*.py) keep '{image} {instruction}' with a space.
    prompts={TEXT: "<sent>", IMAGE: "<image>\nRepresent the given image.\n", IMAGE_TEXT: "<image>\n<sent>\n"},
    instructed={k: "<image>\n{instruction} <sent>\n" for k in MODALITIES},
    # src/model/processor.py VLM_IMAGE_TOKENS: Qwen2(.5)-VL get the bare '<|image_pad|>'
    image_block={"qwen2_vl": "<|image_pad|>", "qwen2_5_vl": "<|image_pad|>"},
    source="VLM2Vec / MMEB (TIGER-AI-Lab/VLM2Vec eval code, HEAD 6e1e1d4)",
)

# TIGER-AI-Lab/VLM2Vec src/data/dataset/mmeb_dataset.py: MMEB-train rows as written with
# '<|image_1|>' swapped for the backbone's token: '{image}\n{instruction}{text}', no '\n' at the end.
TRAIN_PROMPTS = rows_as_written(
    PROMPTS, "VLM2Vec training text: TIGER-AI-Lab/VLM2Vec src/data/dataset/mmeb_dataset.py (rows as written)")

# The paper's training values VLM2VecConfig reads.
# lora_r: 8 in the authors' v1 LLaVA-NeXT / Phi-3.5-V runs (scripts/aws/*lora8*); 16 in the README's example
FACTS: dict[str, object] = {"steps": 2000, "learning_rate": 2e-5, "batch_size": 1024, "temperature": 0.02, "lora_r": 8,
                            "lora_alpha": 64,
                            "source": "TIGER-AI-Lab/VLM2Vec scripts/aws/llava16-mistral-lora8-bs1024-step2k.sh"}

# VLM2Vec's MMEB evaluation (TIGER-AI-Lab/VLM2Vec src/data/eval_dataset/image_t2i_eval.py and
# image_i2i_vg_dataset.py, HEAD 6e1e1d4) departs from '{image}\n{instruction} {text}\n' in two places:
# VisDial queries get an extra '\n' ("to be consistent with v1"), and grounding crop targets (no
# caption) get no '\n'. They are full prompts around the rows' own instruction ('{instruction}').
# HEAD reads ziyjiang/MMEB_Test_Instruct (instruction and text in separate columns, joined by one
# space); mm_st splits the MMEB-eval rows instead, which gives the same text when the row has one
# space between instruction and text (what the v1 rows hold).
VLM2VEC_MMEB_PROMPTS: dict[str, dict[str, str]] = {
    "MMEB-VisDial": {"query": "{instruction} <sent>\n\n", "document": "{instruction}"},
    **{
        f"MMEB-{name}": {"query": "{instruction}", "document": "<image>\n{instruction}"}
        for name in ("MSCOCO", "RefCOCO", "Visual7W-Pointing")
    },
}

SPEC = register_recipe(RecipeSpec(
    "vlm2vec", PROMPTS, TRAIN_PROMPTS, config="mm_st.training.vlm2vec:VLM2VecConfig", facts=FACTS,
    task_prompts=VLM2VEC_MMEB_PROMPTS, mmeb_instructions=True,
    paper_models=(PaperModel("mm_st/VLM2Vec-LLaVa-Next", "TIGER-Lab/VLM2Vec-LLaVa-Next",
                             "https://github.com/TIGER-AI-Lab/VLM2Vec"),),
))
