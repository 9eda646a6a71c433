"""The template registry: exact paper strings, and the saved Jinja template renders what render_prompt says."""

import itertools

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from mm_st import templates


def test_exact_paper_strings():
    e5v = templates.RECIPES["e5v"]
    assert templates.WRAPPERS["llama3"].template == (
        "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
    )
    assert e5v.prompts["image"] == "<image>\nSummary above image in one word: "
    assert e5v.prompts["text"] == "<sent>\nSummary above sentence in one word: "
    assert e5v.extra_prompts["cirr_candidate"] == "<image>\n Describe this image in one word:"
    assert e5v.prompts["image_text"] == '<image>Modify this image with "<sent>", desribe modified image in one word:'
    assert e5v.extra_prompts["fashioniq_dress_query"] == (
        "<image> change the style of this dress to <sent>\n Desribe this modified dress in one word based on its style:"
    )
    assert templates.render_prompt("mme5", "mllama", text="q", num_images=1, instruction="Find it") == (
        "<|image|><|begin_of_text|>Find it\nq"
    )
    assert templates.render_prompt("mme5", "mllama", num_images=1) == "<|image|><|begin_of_text|>Represent the given image.\n"
    assert templates.render_prompt("mmembed", "llava", text="q", instruction="Find it", task="query") == (
        "Instruct: Find it\nQuery: q"
    )
    assert templates.render_prompt("mmembed", "llava", text="q", instruction="Find it", task="document") == "q"


def _messages(text, images, instruction):
    content = [{"type": "image"}] * images + ([{"type": "text", "text": text}] if text else [])
    system = [{"role": "system", "content": [{"type": "text", "text": instruction}]}] if instruction else []
    return system + [{"role": "user", "content": content}]


@pytest.mark.parametrize("recipe", sorted(templates.RECIPES))
def test_jinja_template_matches_render_prompt(recipe):
    for family in templates.FAMILIES:
        chat_template = templates.render_chat_template(recipe, family)
        for text, images, instruction, task in itertools.product(
            [None, 'A "quoted"\nline {x}'], [0, 1, 2], [None, "Find it: "], [None, "query", "document"]
        ):
            if not text and not images:
                continue
            kwargs = {} if task is None else {"task": task}
            rendered, _ = render_jinja_template(
                conversations=[_messages(text, images, instruction)], chat_template=chat_template, **kwargs
            )
            assert rendered[0] == templates.render_prompt(
                recipe, family, text=text, num_images=images, instruction=instruction, task=task
            ), (family, text, images, instruction, task)


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
