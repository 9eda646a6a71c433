"""The template registry: exact paper strings, as the SAVED Jinja chat template renders them.

Every literal below is written out by hand from the reference code named next to it (never computed
from mm_st.templates); ``rendered`` runs the chat template mm_st saves with a model, through
transformers' own Jinja renderer, so the literals pin what the model actually gets as text.
"""

import pytest
from jinja2.exceptions import TemplateError
from transformers.utils.chat_template_utils import render_jinja_template

from mm_st import templates

LLAMA3 = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
VQA = "Represent the given image with the following question: "


def _messages(text, images, instruction):
    content = [{"type": "image"}] * images + ([{"type": "text", "text": text}] if text else [])
    system = [{"role": "system", "content": [{"type": "text", "text": instruction}]}] if instruction else []
    return system + [{"role": "user", "content": content}]


def rendered(recipe, family, text=None, images=0, instruction=None, task=None, wrapper=None, fmt="inference"):
    """What the saved chat template renders for one input."""
    chat_template = templates.render_chat_template(recipe, family, wrapper=wrapper, fmt=fmt)
    kwargs = {} if task is None else {"task": task}
    out, _ = render_jinja_template(conversations=[_messages(text, images, instruction)], chat_template=chat_template, **kwargs)
    return out[0]


def test_e5v_llama3_strings():
    # kongds/E5-V retrieval.py: llama3_template with the image / text / CIRR prompts
    assert rendered("e5v", "llava_next", images=1) == LLAMA3.format("<image>\nSummary above image in one word: ")
    assert rendered("e5v", "llava_next", text="A dog.") == LLAMA3.format("A dog.\nSummary above sentence in one word: ")
    assert rendered("e5v", "llava_next", text="red", images=1) == LLAMA3.format(
        '<image>Modify this image with "red", desribe modified image in one word:')
    cirr = templates.RECIPES["e5v"].extra_prompts["cirr_candidate"]
    assert rendered("e5v", "llava_next", images=1, instruction=cirr) == LLAMA3.format(
        "<image>\n Describe this image in one word:")


def test_item0_e5v_plain_prompt_keeps_the_input_as_vlm2vec_evaluates_e5v():
    # TIGER-AI-Lab/VLM2Vec src/model/processor.py e5_v_prompt_template: no instruction reaches E5-V
    find = "Find me an everyday image that matches the given caption: "
    assert rendered("e5v", "llava_next", text="a red car", instruction=find, task="query") == (
        "<|start_header_id|>user<|end_header_id|>\n\na red car\nSummary above sentence in one word: "
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n")
    assert rendered("e5v", "llava_next", images=1, instruction=find) == (
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\nSummary above image in one word: "
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n")
    assert rendered("e5v", "llava_next", text="a red car", images=1, instruction=find) == (
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\na red car\nSummary above image and text in one word: "
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n")


def test_item0_full_prompt_missing_a_marker_is_an_error():
    cirr = templates.RECIPES["e5v"].extra_prompts["cirr_candidate"]  # has <image>, no <sent>
    with pytest.raises(TemplateError, match=r"no <sent> marker, and the input has text"):
        rendered("e5v", "llava_next", text="a red car", images=1, instruction=cirr)
    with pytest.raises(TemplateError, match=r"no <image> marker, and the input has an image"):
        rendered("vlm2vec", "qwen2_vl", text="x", images=1, instruction="Caption: <sent>")
    with pytest.raises(ValueError, match=r"no <image> marker, and the input has an image"):
        templates.render_prompt("vlm2vec", "qwen2_vl", text="x", num_images=1, instruction="Caption: <sent>")


def test_item1_fashioniq_toptee_uses_shirt():
    # kongds/E5-V retrieval.py: `if fiq_data_type == 'toptee': fiq_data_name = 'shirt'`
    extra = templates.RECIPES["e5v"].extra_prompts
    assert rendered("e5v", "llava_next", images=1, instruction=extra["fashioniq_toptee_candidate"]) == LLAMA3.format(
        "<image>\n Describe this shirt in one word based on its style:")
    assert rendered("e5v", "llava_next", text="red", images=1, instruction=extra["fashioniq_toptee_query"]) == (
        LLAMA3.format("<image> change the style of this shirt to red\n Desribe this modified shirt in one word based on its style:"))
    assert extra["fashioniq_dress_candidate"] == "<image>\n Describe this dress in one word based on its style:"


def test_item2_e5v_mistral_wrapper():
    # kongds/E5-V retrieval.py: one space before [/INST]
    assert rendered("e5v", "llava_next", images=1, wrapper="mistral") == "[INST] <image>\nSummary above image in one word: [/INST]"
    assert rendered("e5v", "llava_next", text="A dog.", wrapper="mistral") == "[INST] A dog.\nSummary above sentence in one word: [/INST]"
    cirr = templates.RECIPES["e5v"].extra_prompts["cirr_candidate"]
    assert rendered("e5v", "llava_next", images=1, instruction=cirr, wrapper="mistral") == (
        "[INST] <image>\n Describe this image in one word: [/INST]")


def test_item3_e5v_phi3_wrapper_and_sources():
    # kongds/E5-V retrieval.py: Phi-3 prompts; the CIR prompts put a space before <|end|>
    assert rendered("e5v", "phi3_v", images=1) == "<|user|>\n<|image_1|>\nSummary above image in one word:<|end|>\n<|assistant|>\n"
    assert rendered("e5v", "phi3_v", text="A dog.") == "<|user|>\nA dog.\nSummary above sentence in one word:<|end|>\n<|assistant|>\n"
    cirr = templates.RECIPES["e5v"].extra_prompts
    assert rendered("e5v", "phi3_v", images=1, instruction=cirr["cirr_candidate"]) == (
        "<|user|>\n<|image_1|>\n Describe this image in one word: <|end|>\n<|assistant|>\n")
    assert rendered("e5v", "phi3_v", text="red", images=1, instruction=cirr["cirr_query"]) == (
        '<|user|>\n<|image_1|>Modify this image with "red", desribe modified image in one word: <|end|>\n<|assistant|>\n')
    for name in ("llama3", "mistral", "phi3"):
        assert "confirm" not in templates.WRAPPERS[name].source and "kongds/E5-V" in templates.WRAPPERS[name].source
    for name in ("idefics3", "chatml", "vicuna"):
        assert "extension" in templates.WRAPPERS[name].source


def test_item4_mme5_format():
    # haon-chen/mmE5 demo.py: '{image tokens}{instruction} {query}\n'; text targets plain
    assert rendered("mme5", "mllama", text="What is in the image", images=1, instruction=VQA, task="query") == (
        "<|image|><|begin_of_text|>Represent the given image with the following question: What is in the image\n")
    assert rendered("mme5", "mllama", text="A cat and a dog.", instruction="Find me an everyday image that matches the given caption: ",
                    task="query") == "Find me an everyday image that matches the given caption: A cat and a dog.\n"
    assert rendered("mme5", "mllama", images=1, task="document") == "<|image|><|begin_of_text|>Represent the given image.\n"
    assert rendered("mme5", "mllama", text="A cat and a dog", task="document") == "A cat and a dog"
    # the other backbones keep VLM2Vec's '<|image_1|>\n' layout with their own token
    assert rendered("mme5", "llava_next", text="q", images=1, instruction="Find it") == "<image>\nFind it q\n"


def test_item5_vlm2vec_bare_image_pad_on_qwen2_vl():
    # TIGER-AI-Lab/VLM2Vec src/model/processor.py VLM_IMAGE_TOKENS[QWEN2_VL] = '<|image_pad|>'
    assert rendered("vlm2vec", "qwen2_vl", text="What is in the image", images=1, instruction=VQA) == (
        "<|image_pad|>\nRepresent the given image with the following question: What is in the image\n")
    assert rendered("vlm2vec", "qwen2_5_vl", images=1) == "<|image_pad|>\nRepresent the given image.\n"
    # recipes that do not override keep the family's chat-style placeholder
    assert rendered("vlm2vec", "qwen3_vl", images=1) == "<|vision_start|><|image_pad|><|vision_end|>\nRepresent the given image.\n"
    assert rendered("mmembed", "qwen2_vl", images=1) == "<|vision_start|><|image_pad|><|vision_end|>\n"


def test_item6_vlm2vec_eval_text():
    # TIGER-AI-Lab/VLM2Vec src/data/eval_dataset/image_*.py: queries and 'Represent the given image.' end in '\n'
    assert rendered("vlm2vec", "llava_next", text="What is in the image", images=1, instruction=VQA) == (
        "<image>\nRepresent the given image with the following question: What is in the image\n")
    assert rendered("vlm2vec", "llava_next", images=1, instruction="Identify the object shown in the image") == (
        "<image>\nIdentify the object shown in the image\n")
    assert rendered("vlm2vec", "llava_next", text="A dog.", instruction="Find me an everyday image that matches the given caption: ") == (
        "Find me an everyday image that matches the given caption: A dog.\n")
    assert rendered("vlm2vec", "llava_next", images=1, instruction="Represent the given image.") == "<image>\nRepresent the given image.\n"
    assert rendered("vlm2vec", "llava_next", text="dog") == "dog"  # label / answer targets stay plain


def test_item7_mmembed_query_prefix_without_instruction():
    # nvidia/MM-Embed: query_prefix = 'Query: '; documents carry no prefix
    assert rendered("mmembed", "llava", text="q", images=1, task="query") == "Query: <image>\nq"
    assert rendered("mmembed", "llava", text="q", task="query") == "Query: q"
    assert rendered("mmembed", "llava", text="q", instruction="Find it.", task="query") == "Instruct: Find it.\nQuery: q"
    assert rendered("mmembed", "llava", text="q", instruction="Find it.", task="document") == "q"
    assert rendered("mmembed", "llava", text="q", images=1, task="document") == "<image>\nq"


def test_item10_e5v_upstream_training_text():
    # kongds/E5-V ft_llm.py generate_sentemb_prompt (llama3_template, run.sh TEMPLATE, '_' -> ' ', strip)
    assert rendered("e5v", "llava_next", text="A man sleeps.", fmt="train") == (
        "<|start header id|>user<|end header id|>\n\nA man sleeps.\nSummary above sentence in one word:"
        "<|eot id|><|start header id|>assistant<|end header id|>")
    assert rendered("e5v", "qwen2_vl", text="A man sleeps.", fmt="train") == "A man sleeps.\nSummary above sentence in one word:"
    facts = templates.RECIPE_FACTS["e5v"]
    assert (facts["epochs"], facts["epochs_paper"], facts["train_template"]) == (2, 1, "inference")


def test_item11_train_and_inference_formats():
    # mmE5 (haon-chen/mmE5 4818cdf): training rows as written, no trailing '\n'; inference (demo.py) ends in '\n'
    assert rendered("mme5", "mllama", text="What is in the image?", images=1, instruction=VQA, fmt="train") == (
        "<|image|><|begin_of_text|>Represent the given image with the following question: What is in the image?")
    assert rendered("mme5", "mllama", images=1, fmt="train") == "<|image|><|begin_of_text|>Represent the given image."
    # MMEB-train rows carry the instruction inline: '{image}{row}' in training, '{image}{row}\n' at inference
    row = "Represent the given image with the following question: What is in the image?"
    assert rendered("mme5", "mllama", text=row, images=1, fmt="train") == "<|image|><|begin_of_text|>" + row
    assert rendered("mme5", "mllama", text=row, images=1) == "<|image|><|begin_of_text|>" + row + "\n"
    # VLM2Vec (src/data/dataset/mmeb_dataset.py): rows as written with the backbone's token
    assert rendered("vlm2vec", "qwen2_vl", text=row, images=1, fmt="train") == "<|image_pad|>\n" + row
    assert rendered("vlm2vec", "qwen2_vl", text=row, images=1) == "<|image_pad|>\n" + row + "\n"
    assert rendered("vlm2vec", "llava_next", images=1, fmt="train") == "<image>\nRepresent the given image."
    # MM-Embed has no public training code: both formats are the same text
    assert rendered("mmembed", "llava", text="q", task="query", fmt="train") == "Query: q"
    with pytest.raises(ValueError, match=r"Unknown prompt format 'upstream' for recipe 'e5v'"):
        templates.get_recipe("e5v", "upstream")


def test_render_prompt_is_the_saved_template_rendered():
    # quotes, newlines and braces in the input reach the model as written (VLM2Vec eval layout)
    assert templates.render_prompt("vlm2vec", "llava_next", text='A "quoted"\nline {x}', num_images=2,
                                   instruction="Find it: ", task="query") == '<image><image>\nFind it: A "quoted"\nline {x}\n'
    assert templates.render_prompt("mmembed", "llava", text="q", instruction="Find it.", task="document") == "q"
    assert templates.render_prompt("e5v", "llava_next", text="A dog.", wrapper="mistral", fmt="train") == (
        "A dog.\nSummary above sentence in one word:")
    assert templates.render_chat_template("e5v", "llava_next").splitlines()[0] == (
        "{#- mm_st recipe=e5v family=llava_next format=inference wrapper=llama3 -#}")


def test_wrapper_detection():
    assert templates.detect_wrapper({"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}).name == "llama3"
    assert templates.detect_wrapper({"<|im_start|>", "<|im_end|>", "<end_of_utterance>"}).name == "idefics3"
    assert templates.detect_wrapper({"<|im_start|>", "<|im_end|>"}).name == "chatml"
    assert templates.detect_wrapper(set(), "{{ '[INST] ' + message['content'] + ' [/INST]' }}").name == "mistral"
    assert templates.detect_wrapper({"<s>"}) is None


def test_every_family_and_model_type_is_unique():
    model_types = [t for family in templates.FAMILIES.values() for t in family.model_types]
    assert len(model_types) == len(set(model_types))
    assert templates.family_for_model_type("smolvlm").name == "idefics3"


def test_item0_unused_e5v_instruction_is_logged_once(caplog):
    from mm_st import build_model
    from mm_st.testing import tiny_model

    model = build_model(tiny_model("qwen2_vl"), recipe="e5v")
    with caplog.at_level("WARNING", logger="mm_st.model"):
        model.encode_query(["a red car"], prompt="Find it: ")
        model.encode_query(["a blue boat"], prompt="Find it: ")
    messages = [r.getMessage() for r in caplog.records if r.name == "mm_st.model"]
    assert messages == ["Recipe 'e5v' has no instruction slot: the prompt 'Find it: ' is not shown to the model (as in "
                        "VLM2Vec's E5-V evaluation). Pass a full prompt with <sent> / <image> markers to change E5-V's prompt."]


def test_add_a_backbone_family_guide(monkeypatch):
    """docs/architecture.md "Add a backbone family": a Family entry for an existing transformers architecture (the
    tiny LLaVA checkpoint), found by its model_type, rendering its own placeholder and wrapper; removed after."""
    from PIL import Image

    from mm_st import build_model
    from mm_st.testing import tiny_model

    toy = templates.Family("toy_llava", ("toy_llava",), "<image>", "chatml")  # ChatML instead of LLaVA's Vicuna
    with monkeypatch.context() as patch:
        patch.setitem(templates.FAMILIES, toy.name, toy)
        assert templates.family_for_model_type("toy_llava") is toy
        assert templates.render_prompt("vlm2vec", "toy_llava", text="a cat", num_images=1, instruction="Find it:") == (
            "<image>\nFind it: a cat\n")
        assert templates.render_prompt("e5v", "toy_llava", text="A dog.") == (
            "<|im_start|>user\nA dog.\nSummary above sentence in one word: <|im_end|>\n<|im_start|>assistant\n")
        model = build_model(tiny_model("llava"), recipe="e5v", family="toy_llava")
        assert model[0].processor.chat_template.startswith("{#- mm_st recipe=e5v family=toy_llava ")  # mm_st.metadata
        embeddings = model.encode(["A dog.", {"text": "a cat", "image": Image.new("RGB", (8, 8))}])
        assert embeddings.shape == (2, model.get_embedding_dimension())
    assert "toy_llava" not in templates.FAMILIES
    with pytest.raises(ValueError, match="^Unknown backbone family 'toy_llava'"):
        templates.get_family("toy_llava")


def test_saved_chat_templates_keep_the_image_text_key_spelling():
    """Saved models' chat templates key the image+text prompt "image_text" (mm_st.modality.PROMPT_KEYS): templates
    rendered now are those saved before the vocabulary moved to "image+text", so old and new saves read alike."""
    template = templates.render_chat_template("e5v", "llava_next")
    assert '"image_text": "<image>Modify this image with \\"<sent>\\", desribe modified image in one word:"' in template
    assert "{%- set modality = 'image_text' if media and ns.text else ('image' if media else 'text') -%}" in template
    assert "image+text" not in template
    assert templates.RECIPES["e5v"].prompts["image+text"] == templates.RECIPES["e5v"].extra_prompts["cirr_query"]


# VLM2Vec-V2 (TIGER-AI-Lab/VLM2Vec @ 6e1e1d4): src/model/processor.py:650-673 process_input_text writes
# prompt = instruction; prompt + " " + text; video_token + " " + prompt (VLM_VIDEO_TOKENS[QWEN2_VL] = "<|video_pad|>",
# processor.py:76): one space each, no "\n" (only image_*.py add v1's newlines).
SCENE = "Find the clip that corresponds to the described scene in the given video:"  # moment_retrieval_datasets.py:10
VIDEO_TGT = "Understand the content of the provided video."  # msrvtt_dataset.py:11


def test_item12_vlm2vec_v2_video_is_process_input_text():
    render = templates.render_prompt
    for family in ("qwen2_vl", "qwen2_5_vl"):
        assert render("vlm2vec_v2", family, text="a man sings", num_videos=1, instruction=SCENE) == (
            "<|video_pad|> Find the clip that corresponds to the described scene in the given video: a man sings")
        assert render("vlm2vec_v2", family, num_videos=1, instruction=VIDEO_TGT) == (
            "<|video_pad|> Understand the content of the provided video.")  # msrvtt_dataset.py:32
    # no instruction: the video targets' one (msrvtt_dataset.py:11); text after one space
    assert render("vlm2vec_v2", "qwen2_vl", num_videos=1) == (
        "<|video_pad|> Understand the content of the provided video.")
    assert render("vlm2vec_v2", "qwen2_vl", text="a man sings", num_videos=1) == "<|video_pad|> a man sings"
    # V2's image tasks stay VLM2Vec's (image_cls_dataset.py:18-20: .replace(" \n", "\n") + "\n"), v1 unchanged
    assert render("vlm2vec_v2", "qwen2_vl", text="What is in the image", num_images=1, instruction=VQA) == (
        "<|image_pad|>\nRepresent the given image with the following question: What is in the image\n")
    assert render("vlm2vec", "qwen2_vl", text="a man sings", num_videos=1, instruction=SCENE) == (
        "<|video_pad|>\nFind the clip that corresponds to the described scene in the given video: a man sings\n")


def test_item13_vlm2vec_v2_mmeb_v2_task_prompts_render_the_parsers_text():
    from mm_st.evaluation.instructions import recipe_task_prompts

    table = recipe_task_prompts()["vlm2vec_v2"]

    def render(task, side, **inputs):
        return templates.render_prompt("vlm2vec_v2", "qwen2_vl", instruction=table[task][side], **inputs)

    # msrvtt_dataset.py:10-11, 24, 32
    assert render("MMEB-MSR-VTT", "query", text="a red circle") == (
        "Find a video that contains the following visual content: a red circle")
    assert render("MMEB-MSR-VTT", "document", num_videos=1) == (
        "<|video_pad|> Understand the content of the provided video.")
    # vidore_dataset.py:9-10, 23, 64 (a page: add_image_token, VLM_IMAGE_TOKENS[QWEN2_VL] = "<|image_pad|>")
    assert render("MMEB-ViDoRe_arxivqa", "query", text="Which model?") == (
        "Find a document image that matches the given query: Which model?")
    assert render("MMEB-ViDoRe_arxivqa", "document", num_images=1) == (
        "<|image_pad|> Understand the content of the provided document image.")
    # videomme_dataset.py:10-18, 32: f'{video_token} {prompt} {query}', TASK_PROMPT ends in a space: two spaces
    assert render("MMEB-Video-MME", "query", text="Why?\nA. x", num_videos=1) == (
        "<|video_pad|> Given a video and a question, select the most accurate answer from the provided candidates. "
        "Return only the exact text of your chosen answer. Question:  Why?\nA. x")
    # video_classification_utils.py:21 (its final space kept), video_classification_datasets.py:27
    assert render("MMEB-Breakfast", "query", num_videos=1) == (
        "<|video_pad|> Recognize the breakfast type that the person is cooking in the video. ")
    assert "document" not in table["MMEB-Breakfast"]  # labels: bare texts (video_classification_datasets.py:35)
    assert table["MMEB-MSCOCO"] == {"query": "{instruction}", "document": "<image>\n{instruction}"}  # v1's, kept


def test_item14_vlm2vec_v2_momentseeker_queries_render_their_own_instruction_as_v2_does():
    """MomentSeeker's rows carry their query type's instruction (momentseeker_dataset.py:12-14); V2 writes them with
    process_input_text (src/model/processor.py:650-673): text at momentseeker_dataset.py:54 '{instruction} {text}',
    image at :47 '<|image_pad|> {instruction} {text}', video at :30 '<|video_pad|> {instruction} {text}'."""
    from PIL import Image

    from mm_st.evaluation.instructions import recipe_task_prompts
    from mm_st.evaluation.mmeb_v2_files import MOMENTSEEKER_QUERY
    from mm_st.evaluation.model import mteb_rows

    query = recipe_task_prompts()["vlm2vec_v2"]["MMEB-MomentSeeker"]["query"]
    batch = {"id": ["t", "i", "task"], "text": ["a man sings", "a man sings", "a man sings"],
             "image": [None, Image.new("RGB", (8, 8)), None],
             "mm_st_instruction": [MOMENTSEEKER_QUERY["text"], MOMENTSEEKER_QUERY["image"], ""]}

    def render(recipe, row):
        return templates.render_prompt(recipe, "qwen2_vl", text=row["text"], num_images=int("image" in row),
                                       instruction=row["instruction"])

    text, image, task = mteb_rows(batch, "task's own", query)
    assert render("vlm2vec_v2", text) == "Find the clip that corresponds to the given text: a man sings"
    assert render("vlm2vec_v2", image) == (
        "<|image_pad|> Select the video clip that aligns with the given text and image: a man sings")
    assert task["instruction"] == "task's own"  # a row without its own: the task's
    video = {"text": "a man sings", "instruction": query.replace("{instruction}", MOMENTSEEKER_QUERY["video"])}
    assert templates.render_prompt("vlm2vec_v2", "qwen2_vl", text=video["text"], num_videos=1,
                                   instruction=video["instruction"]) == (
        "<|video_pad|> Find the clip that corresponds to the given sentence and video segment: a man sings")
    # a recipe without a MomentSeeker prompt (VLM2Vec) keeps the row's instruction in its own instructed prompt
    text, image, _ = mteb_rows(batch, "task's own")
    assert render("vlm2vec", text) == "Find the clip that corresponds to the given text: a man sings\n"
    assert render("vlm2vec", image) == (
        "<|image_pad|>\nSelect the video clip that aligns with the given text and image: a man sings\n")


def test_a_full_prompt_drops_its_image_marker_and_the_space_after_it_without_an_image():
    full = "<image> Find it: <sent>"
    assert templates.render_prompt("vlm2vec_v2", "qwen2_vl", text="a cat", instruction=full) == "Find it: a cat"
    assert templates.render_prompt("vlm2vec_v2", "qwen2_vl", text="a cat", num_images=1, instruction=full) == (
        "<|image_pad|> Find it: a cat")
