"""mm_st.modality: the one modality vocabulary (sentence-transformers'), its translations, and that no other module of
mm_st spells a modality itself (docs/architecture.md, "Add a modality")."""

from __future__ import annotations

import ast
import itertools
import re
import typing
from pathlib import Path

import pytest

import mm_st
from mm_st import modality
from mm_st.io import modality_of
from mm_st.modality import (
    IMAGE, IMAGE_TEXT, KNOWN, PARTS, SUPPORTED, TEXT, VIDEO, VIDEO_TEXT, check_known, check_supported, from_letters,
    from_mbeir, from_st, prompt_key, to_letters, to_mbeir, to_st,
)

PACKAGE = Path(mm_st.__file__).parent


def test_the_vocabulary_is_sentence_transformers_modality():
    from sentence_transformers.base.modality import format_modality
    from sentence_transformers.base.modality_types import MULTIMODAL_DICT_KEYS, Modality

    single, combined = typing.get_args(Modality)
    assert set(PARTS) == set(MULTIMODAL_DICT_KEYS) == set(typing.get_args(typing.get_args(combined)[0]))
    assert set(PARTS) < set(typing.get_args(single))  # ST's "message" is an input form, not a content modality
    assert VIDEO in KNOWN and VIDEO_TEXT == "text+video" and len(KNOWN) == 2 ** len(PARTS) - 1
    for name in KNOWN:
        st_value = to_st(name)
        assert format_modality(st_value) == name and from_st(st_value) == name
    assert from_st(("text", "image")) == IMAGE_TEXT == "image+text"


def test_an_input_s_modality_is_st_s_inference_of_it():
    from PIL import Image
    from sentence_transformers.base.modality import infer_modality

    image = Image.new("RGB", (2, 2))
    for item in ("a cat", image, {"text": "a cat", "image": image}, {"image": image}):
        assert modality_of(item) == from_st(infer_modality(item))


@pytest.mark.parametrize("item, named", [
    ({"text": "a cat", "video": "cat.mp4"}, VIDEO_TEXT),
    ({"video": "cat.mp4"}, VIDEO),
    ({"video": ["f0.png", "f1.png"], "text": None, "image": None}, VIDEO),
    ([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "a cat"}]}], VIDEO_TEXT),
])
def test_video_and_text_video_inputs_are_embeddable(item, named):
    assert modality_of(item) == named and check_supported(named) == named
    assert SUPPORTED.index(named) in (3, 4)  # appended: the ids of text, image, image+text stay 0, 1, 2


@pytest.mark.parametrize("item, named", [
    ({"image": "cat.png", "audio": "cat.wav"}, "audio+image"),
    ({"image": "cat.png", "video": "cat.mp4"}, "image+video"),
    ([{"role": "user", "content": [{"type": "audio"}]}], "audio"),
])
def test_an_audio_or_image_video_input_is_refused_naming_its_modality(item, named):
    with pytest.raises(ValueError, match=rf"^Input has modality '{re.escape(named)}', which mm_st cannot embed yet "
                                         r"\(supported: text, image, image\+text, video, text\+video\)\.$"):
        modality_of(item)


def test_an_unknown_modality_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"^row 4 has unknown modality 'sound'; the vocabulary"):
        check_known("sound", where="row 4")
    with pytest.raises(ValueError, match=r"^Input 1 has unknown modality 'image_text'"):
        check_supported("image_text", where="Input 1")
    with pytest.raises(ValueError, match=r"^Unknown modality 'text\+smell'"):
        modality.name("text", "smell")
    assert check_supported(IMAGE_TEXT) == IMAGE_TEXT


@pytest.mark.parametrize("spelled, named", [
    ("text", TEXT), ("image", IMAGE), ("image,text", IMAGE_TEXT), ("text,image", IMAGE_TEXT), (" text , image", IMAGE_TEXT),
])
def test_mbeir_spellings_translate_to_the_vocabulary_and_back(spelled, named):
    assert from_mbeir(spelled, "pool.jsonl row 0") == named
    assert to_mbeir(named) == ("image,text" if named == IMAGE_TEXT else named)


@pytest.mark.parametrize("spelled", ["video", "image,video", "image+text", "", None, 3])
def test_an_mbeir_modality_outside_m_beir_is_refused_naming_the_row(spelled):
    with pytest.raises(ValueError, match=rf"^pool.jsonl row 2 has modality {re.escape(repr(spelled))}; expected one of 'text', "):
        from_mbeir(spelled, "pool.jsonl row 2")


def test_the_m_beir_reader_and_the_evaluation_read_a_pool_spelled_text_image_alike():
    from mm_st.data.mbeir import mbeir_modality
    from mm_st.evaluation.mbeir import UNIIR_TASKS, category_letters

    assert mbeir_modality("text,image", "q") == mbeir_modality("image,text", "q") == "image,text"
    assert UNIIR_TASKS[6] == ("image,text", "text") and category_letters("text,image") == "it"


@pytest.mark.parametrize("letters, named", [("t", TEXT), ("i", IMAGE), ("it", IMAGE_TEXT), ("vt", VIDEO_TEXT),
                                            ("v", VIDEO)])
def test_mteb_category_letters_of_mmeb_tasks_translate_both_ways(letters, named):
    assert from_letters(letters) == named and to_letters(named) == letters


def test_mmeb_task_categories_all_read_in_the_vocabulary():
    from mm_st.evaluation.instructions import MMEB

    sides = {side for entry in MMEB.values() for side in entry.category.split("2")}
    assert {from_letters(side, "MMEB") for side in sides} <= set(SUPPORTED)
    with pytest.raises(ValueError, match=r"^MMEB: unknown mteb modality letters 'x'"):
        from_letters("x", "MMEB")


def test_saved_prompt_keys_keep_their_spelling_and_video_has_none():
    assert [prompt_key(m) for m in modality.PROMPTED] == ["text", "image", "image_text"]  # saved models' chat templates
    with pytest.raises(ValueError, match=r"^No prompt for modality 'video': recipes have prompts for text, image, "):
        prompt_key(VIDEO)


# Every way of writing two parts together: "image_text", "image+text", "text,image", "video_text", ...
SPELLINGS = {sep.join(pair) for a, b in itertools.combinations(PARTS, 2) for pair in ((a, b), (b, a))
             for sep in ("+", "_", ",", ", ")}


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return {id(node.body[0].value) for node in nodes
            if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def _spelled(value: str) -> bool:
    return value.strip() in SPELLINGS or any(f"{q}{s}{q}" in value for s in SPELLINGS for q in "'\"")


def test_no_module_spells_a_modality_outside_the_vocabulary():
    """Only mm_st/modality.py writes a combined modality (and other projects' spellings of one) as a string; every
    other module names it through the vocabulary (prose in docstrings and messages may mention one)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "modality.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r:.60}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
                  and _spelled(node.value)]
    assert not found, "modality spelled outside mm_st/modality.py:\n" + "\n".join(found)


def test_the_vocabulary_check_finds_each_old_spelling():
    for line in ('P = {"image_text": "<image>"}', "M = ('text', 'image', 'image,text')", "t = \"{% set m = 'image_text' %}\""):
        tree = ast.parse(line)
        assert any(isinstance(n, ast.Constant) and isinstance(n.value, str) and _spelled(n.value) for n in ast.walk(tree))


def test_the_vocabulary_imports_neither_torch_nor_sentence_transformers():
    import subprocess
    import sys

    code = ("import sys, mm_st.modality, mm_st.io, mm_st.templates; "
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'mteb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
