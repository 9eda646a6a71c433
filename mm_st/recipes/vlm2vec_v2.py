"""VLM2Vec-V2 (arXiv 2507.04590, TIGER-AI-Lab/VLM2Vec): VLM2Vec's prompts, trained on image, video and visual-document
data in sub-batches each drawn from one dataset; its training config is
:class:`mm_st.training.vlm2vec_v2.VLM2VecV2Config`.

Every string and value below is read from TIGER-AI-Lab/VLM2Vec at commit 6e1e1d42d4cba85ae4db4d3f7a25cba2465d1e16
(:data:`PINNED`), cited as ``file:line``. V2's image rows are MMEB-train's, fed as written (VLM2Vec's training format);
its video and visual-document parsers write each row's text around the image / video token in their own ways, which
the training data carry per row as a full prompt (``<image>`` / ``<sent>`` markers; a video's is ``<image>`` too, see
:mod:`mm_st.data.vlm2vec_v2_train`).

Example:
    >>> from mm_st.recipes.vlm2vec_v2 import SPEC, visrag_target_prompt
    >>> SPEC.facts["steps"], SPEC.facts["interleave_batch_size"]
    (5000, 64)
    >>> visrag_target_prompt("ChartQA")
    'A statistical chart comparing values or analyzing trends.  <image>'
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import replace
from typing import TYPE_CHECKING

from mm_st.modality import VIDEO as VIDEO_MODALITY
from mm_st.modality import VIDEO_TEXT
from mm_st.recipes.registry import INSTRUCTION, Lazy, PaperModel, RecipeSpec, register_recipe
from mm_st.recipes.vlm2vec import PROMPTS as V1_PROMPTS
from mm_st.recipes.vlm2vec import TRAIN_PROMPTS as V1_TRAIN_PROMPTS
from mm_st.recipes.vlm2vec import VLM2VEC_MMEB_PROMPTS

if TYPE_CHECKING:
    from mm_st.evaluation.mmeb_v2_files import V2Dataset

PINNED = "TIGER-AI-Lab/VLM2Vec@6e1e1d42d4cba85ae4db4d3f7a25cba2465d1e16"
SCRIPT = f"{PINNED} experiments/public/train/train_v2-qwen2vl-2B.sh"
ALLTASKS = f"{PINNED} experiments/public/train/train_alltasks.yaml"
ARGUMENTS = f"{PINNED} src/arguments.py"

# The markers of a full prompt (mm_st.templates): <sent> the row's text, <image> the image block, and for a video the
# video block (mm_st writes a video where an image would go: VLM2Vec's bare '<|image_pad|>' -> '<|video_pad|>').
SENT, IMAGE = "<sent>", "<image>"
VIDEO = IMAGE

# V2's evaluation and MMEB-train rows are VLM2Vec's (the same eval code, src/data/eval_dataset/image_*.py, and
# src/data/dataset/mmeb_dataset.py:69-72: rows as written, '<|image_1|>' -> the backbone's token).
# Its video and visual-document evaluation writes src/model/processor.py:650-673 process_input_text's
# '{video token} {instruction} {text}' (no '\n': image_*.py alone add the v1 newlines): video inputs get it here;
# a visual-document page is an image, whose prompt stays v1's, so those tasks carry it per task (MMEB_V2_PROMPTS).
V2_VIDEO = f"{VIDEO} {INSTRUCTION} {SENT}"  # no text: ' <sent>' goes -> '<|video_pad|> {instruction}'
# Without an instruction (which V2's eval never does): a video is described as the video retrieval targets
# (msrvtt_dataset.py:11 TASK_INST_TGT), a video with text gets the text after one space.
VIDEO_TARGET = "Understand the content of the provided video."
PROMPTS = replace(
    V1_PROMPTS, name="vlm2vec_v2", source=f"VLM2Vec-V2 ({PINNED} eval code: image tasks as VLM2Vec, video "
    "inputs as src/model/processor.py process_input_text)",
    video_prompts={VIDEO_MODALITY: f"{VIDEO} {VIDEO_TARGET}", VIDEO_TEXT: f"{VIDEO} {SENT}"},
    video_instructed={VIDEO_MODALITY: V2_VIDEO, VIDEO_TEXT: V2_VIDEO},
)
TRAIN_PROMPTS = replace(V1_TRAIN_PROMPTS, name="vlm2vec_v2",
                        source=f"VLM2Vec-V2 training text: {PINNED} src/data/dataset/mmeb_dataset.py:69-72 (rows as written)")

# -- video rows (LLaVA-Hound): src/data/dataset/llavahound_dataset_caption.py, llavahound_dataset_qa.py -------------

# llavahound_dataset_caption.py:24-25 (data_mode video_retrieval: caption -> video)
VRET_QRY_PROMPT = "Find a video that contains the following visual content: "
VRET_TGT_PROMPT = "Understand the content of the provided video: "
# llavahound_dataset_qa.py:17 (question about the video -> answer)
QA_QUERY_PROMPT = "Answer a question based on the content of a video. "
LLAVA_HOUND_VIDEO = "<video>"  # llavahound_dataset_caption.py:11: the conversations' token, replaced by the backbone's

# -- visual-document rows: src/data/dataset/visrag_dataset.py:17-40 (by the row's `source`) ----------------------

VISRAG_QUERY_PROMPTS = {
    "NeurIPS Papers": "This query is about a research paper from NeurIPS, a leading AI/ML conference. The document contains technical discussions, methodologies, and findings. Identify relevant papers and sections that address the query: ",
    "Textbooks": "This query is related to a college-level textbook, which provides structured explanations, definitions, and examples. Find the most relevant concepts or explanations that address the query: ",
    "ICML Papers": "This query is about a research paper from ICML, a leading AI/ML conference. The document contains theoretical insights, experiments, and applications. Identify relevant papers and sections that best answer the query: ",
    "Manuallib": "This query pertains to a product manual, which contains detailed technical specifications, usage instructions, and troubleshooting steps. Find the most relevant section that answers the query: ",
    "ArxivQA": "This query is related to retrieving a relevant figure from an ArXiv research paper. The retrieved figure should contain scientific plots, mathematical visualizations, or experimental results that best address the query: ",
    "ChartQA": "This query is related to retrieving a relevant chart that visually represents numerical or categorical data. The retrieved chart should contain bar graphs, line charts, or other visual elements necessary to analyze trends, compare values, or extract insights related to the query: ",
    "MP-DocVQA": "This query is related to retrieving a relevant page from a multi-page document, such as reports, invoices, or research papers. The retrieved document should contain text, tables, or structured information necessary to answer the query: ",
    "InfoVQA": "This query is related to retrieving an infographic that visually presents statistical or factual information using charts, icons, and structured layouts. The retrieved image should contain the necessary visual elements to provide the best context for answering the query: ",
    "PlotQA": "This query relates to retrieving a relevant plot or chart that visually represents numerical data. The retrieved figure should contain the necessary information to analyze trends, compare values, or extract key insights related to the query: ",
    "SlideVQA": "This query is related to retrieving a relevant presentation slide that visually presents structured information. The retrieved slide should contain the necessary text, charts, or graphics to provide the best answer to the query: ",
}  # fmt: skip
VISRAG_TARGET_PROMPTS = {
    "Textbooks": "A textbook page with structured educational content and explanations.",
    "ICML Papers": "A research paper from ICML, covering machine learning topics.",
    "NeurIPS Papers": "A research paper from NeurIPS on AI and ML topics.",
    "Manuallib": "A product manual page with technical specifications and instructions.",
    "InfoVQA": "An infographic with structured data, charts, and annotations.",
    "PlotQA": "A numerical data visualization, such as bar charts or line graphs.",
    "SlideVQA": "A presentation slide with text, bullet points, and diagrams.",
    "ArxivQA": "A figure from a research paper, including plots or experimental results.",
    "MP-DocVQA": "A page from a multi-page document with text or tables.",
    "ChartQA": "A statistical chart comparing values or analyzing trends.",
}


def _visrag_process_query(query: str, prompt: str, image_token: str = "") -> str:
    """visrag_dataset.py:10-15 ``process_query`` (prompt, query and token joined by single spaces)."""
    return f"{prompt} {query} {image_token}" if prompt else f"{query} {image_token}"


def visrag_query_prompt(source: str) -> str:
    """The full prompt of a VisRAG query (visrag_dataset.py:50): its source's prompt, the query, a trailing space."""
    return _visrag_process_query(SENT, VISRAG_QUERY_PROMPTS.get(source, ""))


def visrag_target_prompt(source: str) -> str:
    """The full prompt of a VisRAG page (visrag_dataset.py:52): its source's description, two spaces, the image."""
    return _visrag_process_query("", VISRAG_TARGET_PROMPTS.get(source, ""), IMAGE)


# src/data/dataset/vidore_dataset.py:12-17, 29: the page and the question, '{image_token} {query}' (no prompt)
VIDORE_QUERY_PROMPT = f"{IMAGE} {SENT}"


def llava_hound_query(human_turn: str, prompt: str = "") -> str:
    """A LLaVA-Hound query as a full prompt: ``prompt`` + the human turn, its ``<video>`` the video's marker (``<image>``)
    (llavahound_dataset_caption.py:10-13, llavahound_dataset_qa.py:10-15)."""
    return prompt + human_turn.replace(LLAVA_HOUND_VIDEO, VIDEO)


def v2_eval_prompt(letters: str, instruction: str) -> str:
    """The full prompt VLM2Vec-V2's eval parsers give an input of ``letters`` (mteb's: ``v`` video, ``i`` image,
    ``t`` text) with ``instruction``: process_input_text's ``'{video or image token} {instruction} {text}'``
    (src/model/processor.py:650-673), the QA parsers' ``f'{video_token} {prompt} {query}'`` (e.g.
    videomme_dataset.py:10-15). The instruction is kept byte for byte (the QA prompt's final space included)."""
    media = f"{IMAGE} " if set(letters) & {"v", "i"} else ""
    return media + instruction + (f" {SENT}" if "t" in letters else "")


def v2_task_prompts(dataset: V2Dataset) -> dict[str, str]:
    """One MMEB-V2 task's full prompts (query; candidate where VLM2Vec gives it an instruction: bare candidate texts
    of classification and QA get none). Queries carrying their own instruction (MomentSeeker) get ``{instruction}``:
    each row's goes there, its ``<image> `` dropped where the row has no image or video (momentseeker_dataset.py:
    30, 47, 54: '{token} {instruction} {text}', a text query '{instruction} {text}')."""
    query, document = dataset.category.split("2")
    instruction = INSTRUCTION if dataset.row_instructions else dataset.query_instruction
    prompts = {"query": v2_eval_prompt(query, instruction)}
    if dataset.document_instruction:
        prompts["document"] = v2_eval_prompt(document, dataset.document_instruction)
    return prompts


# MMEB-V2's video and visual-document tasks (mm_st.evaluation.benchmarks.mmeb_v2), as VLM2Vec-V2 writes them.
# MomentSeeker's queries carry their own instruction per row (their modality's): its query prompt holds
# '{instruction}' for it (mm_st.evaluation.model.mteb_rows).
def _mmeb_v2_prompts() -> dict[str, dict[str, str]]:
    from mm_st.evaluation.mmeb_v2_files import DATASETS

    return {f"MMEB-{name}": v2_task_prompts(d) for name, d in DATASETS.items()}


MMEB_V2_PROMPTS = Lazy(_mmeb_v2_prompts)  # built on first use: import mm_st does not load the dataset list

# VLM2Vec-V2's Qwen2-VL processor (src/model/processor.py:121-133 load_processor: size={"shortest_edge":
# resize_min_pixels, "longest_edge": resize_max_pixels}, src/arguments.py:45-46: 28*28*4 and 28*28*1280 pixels).
# Its vendored Qwen2VLProcessor sends video frames through that image processor (src/model/vlm_backbone/qwen2_vl/
# processing_qwen2_vl.py:145 self.image_processor(images=None, videos=videos)): per-frame bounds, the same ones,
# and no whole-video pixel budget.
PIXELS = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 1280}
_QWEN_SIZES = {"image_processor": {"size": PIXELS}, "video_processor": {"size": PIXELS, "cap_pixels_per_frame": False}}
PROCESSOR_SETTINGS = {"qwen2_vl": _QWEN_SIZES, "qwen2_5_vl": _QWEN_SIZES}  # processor.py:121-133, 152-162


# The paper's training values VLM2VecV2Config reads (experiments/public/train/train_v2-qwen2vl-2B.sh:28 unless noted).
FACTS: dict[str, object] = {
    "steps": 5000, "learning_rate": 5e-5, "warmup": 100, "per_device_batch_size": 128, "gpus": 8, "batch_size": 1024,
    "interleave_batch_size": 64, "gc_chunk_size": 8, "temperature": 0.02, "lora_r": 16, "lora_alpha": 64,
    "lora_dropout": 0.1, "num_frames": 8,
    "source": SCRIPT + ":17,28 (EXP_NAME ...lora16.BS1024.IB64.GCq8p8.NormTemp002.lr5e5.step5kwarm100.8H100)",
}

SPEC = register_recipe(RecipeSpec(
    "vlm2vec_v2", PROMPTS, TRAIN_PROMPTS, config="mm_st.training.vlm2vec_v2:VLM2VecV2Config", facts=FACTS,
    # V2's image evaluation is VLM2Vec's (same eval code); its video and visual-document tasks its own
    task_prompts=ChainMap(VLM2VEC_MMEB_PROMPTS, MMEB_V2_PROMPTS), mmeb_instructions=True,
    processor_settings=PROCESSOR_SETTINGS,
    # README.md:96 at the pinned commit
    paper_models=(PaperModel("mm_st/VLM2Vec-V2.0", "VLM2Vec/VLM2Vec-V2.0", "https://github.com/TIGER-AI-Lab/VLM2Vec"),),
))
