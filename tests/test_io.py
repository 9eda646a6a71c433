"""mm_st.io: local path vs Hub id, paths kept inside their root (also against symlinks), modality names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from mm_st.io import IMAGE_TEXT, MODALITIES, MODALITY_IDS, PathOutsideRoot, is_local, modality_of, resolve_inside


@pytest.mark.parametrize(
    "source, local",
    [
        ("TIGER-Lab/MMEB-eval", False),
        ("sentence-transformers/all-nli", False),
        ("intfloat/mmE5-synthetic", False),
        ("./MMEB-eval", True),
        ("/data/MMEB-eval", True),
        ("~/MMEB-eval", True),
        ("MMEB-eval", True),
        ("nli.csv", True),
        ("a/b/c", True),
        (Path("TIGER-Lab/MMEB-eval"), True),
    ],
)
def test_is_local(source, local):
    assert is_local(source) is local


def test_is_local_existing_org_name_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_local("org/name")
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert is_local("org/name")


@pytest.fixture
def tree(tmp_path):
    """root/ with a.png, sub/b.png, an inside link, links leaving the root (file and folder); outside.png next to root."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    for path in (root / "a.png", root / "sub" / "b.png", tmp_path / "outside.png"):
        Image.new("RGB", (4, 4), "red").save(path)
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "elsewhere" / "c.png")
    os.symlink(root / "a.png", root / "inside_link.png")
    os.symlink(tmp_path / "outside.png", root / "leaving_link.png")
    os.symlink(tmp_path / "elsewhere", root / "leaving_dir")
    return root


def test_resolve_inside_accepts_paths_that_stay(tree):
    real = tree.resolve()
    assert resolve_inside(tree, "a.png") == real / "a.png"
    assert resolve_inside(tree, "sub/../a.png") == real / "a.png"
    assert resolve_inside(tree, "./sub/b.png") == real / "sub" / "b.png"
    assert resolve_inside(tree, str(real / "sub" / "b.png")) == real / "sub" / "b.png"  # absolute, but inside
    assert resolve_inside(tree, "inside_link.png") == real / "a.png"
    assert resolve_inside(tree, "missing.png") == real / "missing.png"  # existence is the caller's check


def test_resolve_inside_through_a_linked_root(tree, tmp_path):
    os.symlink(tree, tmp_path / "root_link")
    assert resolve_inside(tmp_path / "root_link", "a.png") == tree.resolve() / "a.png"


@pytest.mark.parametrize(
    "relative, message",
    [
        ("../outside.png", r"^row 7: image path '\.\./outside\.png' resolves outside the image root '.*/root'\.$"),
        ("sub/../../outside.png", r"^row 7: image path 'sub/\.\./\.\./outside\.png' resolves outside the image root"),
        ("/etc/passwd", r"^row 7: image path '/etc/passwd' resolves outside the image root '.*/root'\.$"),
        ("leaving_link.png", r"^row 7: image path 'leaving_link\.png' resolves outside the image root '.*/root' \(it leads to '.*/outside\.png'\)\.$"),
        ("leaving_dir/c.png", r"^row 7: image path 'leaving_dir/c\.png' resolves outside the image root .* \(it leads to '.*/elsewhere/c\.png'\)\.$"),
        ("a\0.png", r"^row 7: image path 'a\\x00\.png' contains a NUL byte\.$"),
    ],
)
def test_resolve_inside_refuses(tree, relative, message):
    with pytest.raises(PathOutsideRoot, match=message):
        resolve_inside(tree, relative, where="row 7")
    with pytest.raises(ValueError):  # PathOutsideRoot is a ValueError
        resolve_inside(tree, relative)


# A symbolic link leaving its root, through each public reader that takes an image root.


def test_load_image_refuses_a_leaving_link(tree):
    from mm_st.inputs import load_image

    assert load_image("inside_link.png", 0, root=tree).size == (4, 4)
    with pytest.raises(ValueError, match=r"^Input 3: image path 'leaving_link\.png' resolves outside the image root"):
        load_image("leaving_link.png", 3, root=tree)


@pytest.mark.parametrize("image_path", ["leaving_link.png", "leaving_dir/c.png"])
def test_converter_refuses_a_leaving_link(tree, tmp_path, image_path):
    from mm_st.data.converters import load_mmeb_train

    row = {"qry": "q", "qry_image_path": "a.png", "pos_text": "p", "pos_image_path": "", "neg_text": "", "neg_image_path": ""}
    data = tmp_path / "data"
    (data / "cfg").mkdir(parents=True)
    lines = [row, {**row, "qry_image_path": image_path}]
    (data / "cfg" / "original.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ValueError, match=rf"cfg/original row 1 qry: image path '{image_path}' resolves outside the image root"):
        load_mmeb_train(data, configs=["cfg"], image_root=tree, on_missing="skip")
    (data / "cfg" / "original.jsonl").write_text(json.dumps({**row, "qry_image_path": "inside_link.png"}) + "\n")
    loaded = load_mmeb_train(data, configs=["cfg"], image_root=tree)["cfg"]
    assert loaded[0]["anchor"]["image"].size == (4, 4)


def test_evaluation_data_refuses_a_leaving_link(tree):
    from mm_st.evaluation.data import DataLayoutError, image_file

    assert image_file(tree, "inside_link.png", "VOC2007: query q0", "") == str(tree.resolve() / "a.png")
    with pytest.raises(DataLayoutError, match=r"^VOC2007: query q0: image path 'leaving_link\.png' resolves outside"):
        image_file(tree, "leaving_link.png", "VOC2007: query q0", "")


def test_synthesis_image_pool_refuses_a_leaving_link(tree, tmp_path):
    from mm_st.synthesis.images import ImagePool

    with pytest.raises(PathOutsideRoot, match=r"image path 'leaving_link\.png' resolves outside the image root"):
        ImagePool.open(tree)
    (tree / "leaving_link.png").unlink()
    pool = ImagePool.open(tree)
    assert pool.files == ["a.png", "inside_link.png", "sub/b.png"]  # rglob does not enter leaving_dir/
    export = tmp_path / "export"
    export.mkdir()
    os.symlink(tmp_path / "elsewhere", export / "sub")  # the export's own root: a folder leading out of it
    assert pool.save(0, export) == "a.png" and (export / "a.png").is_file()
    with pytest.raises(PathOutsideRoot, match=r"^Image pool file 2: image path 'sub/b\.png' resolves outside the image root"):
        pool.save(2, export)
    assert not (tmp_path / "elsewhere" / "b.png").exists()


# The modality vocabulary (stored in mining outputs and content keys: the ids must not change).


def test_modality_vocabulary_is_pinned():
    assert MODALITIES == ("text", "image", "image+text", "video", "text+video")
    assert MODALITY_IDS == {"text": 0, "image": 1, "image+text": 2, "video": 3, "text+video": 4}


@pytest.mark.parametrize(
    "item, modality",
    [
        ("a cat", "text"),
        (Image.new("RGB", (2, 2)), "image"),
        (Path("cat.png"), "image"),
        ({"text": "a cat", "image": None}, "text"),
        ({"text": None, "image": "cat.png"}, "image"),
        ({"image": Image.new("RGB", (2, 2))}, "image"),
        ({"text": "a cat", "image": "cat.png"}, "image+text"),
        ({"role": "user", "content": "a cat"}, "text"),
        ({"role": "user", "content": []}, "text"),
        ([{"role": "user", "content": [{"type": "image"}]}, {"role": "assistant", "content": "a cat"}], IMAGE_TEXT),
        ([{"role": "user", "content": [{"type": "image"}]}], "image"),
        ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a cat"}]}], IMAGE_TEXT),
    ],
)
def test_modality_of(item, modality):
    assert modality_of(item) == modality


def test_modality_of_refuses_an_empty_input():
    with pytest.raises(ValueError, match="^Input has neither text, image nor video.$"):
        modality_of({"text": None, "image": None})


def test_content_key_modality_ids_follow_the_vocabulary():
    from mm_st.inputs import content_key

    image = Image.new("RGB", (2, 2))
    assert [content_key(item)[1] for item in ("a", image, {"text": "a", "image": image})] == [0, 1, 2]
