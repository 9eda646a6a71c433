"""Video inputs (issue 32): VLM2Vec-V2's frame sampling, frame directories, errors naming the input, and exactness of
mm_st's video embeddings against a hand-written transformers forward (processor(videos=...) + model + last token).

The references below are written out by hand from the families' own chat templates (Qwen's
``<|vision_start|><|video_pad|><|vision_end|>`` for ``{"type": "video"}``) and E5-V's literal prompts, not from
mm_st.templates.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from mm_st import build_model, load_model
from mm_st.inputs import frame_files, normalize_input, sample_frames, video_frames
from mm_st.model import row_keys
from mm_st.testing import tiny_model

CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
QWEN_VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
VIDEO_PROMPT = "<image>\nSummary above image in one word: "  # E5-V's image prompt: a video takes it
COMPOSED_PROMPT = '<image>Modify this image with "<sent>", desribe modified image in one word:'
TEXT = "A ball rolls to the left."


def make_frames(count: int, seed: int, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def literal(text: str | None = None) -> str:
    prompt = COMPOSED_PROMPT if text else VIDEO_PROMPT
    return CHATML.format(prompt.replace("<image>", QWEN_VIDEO).replace("<sent>", text or ""))


def reference(path: str, frames: list[Image.Image], text: str | None = None) -> np.ndarray:
    """Hand-written: the processor's video path on the literal prompt, the backbone, the last token, L2 norm."""
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    inputs = processor(text=[literal(text)], videos=[frames], do_sample_frames=False, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state[:, -1]
    return torch.nn.functional.normalize(hidden, dim=-1)[0].numpy()


@pytest.fixture(scope="module")
def qwen2_vl():
    path = tiny_model("qwen2_vl")
    return path, build_model(path, recipe="e5v", num_frames=4)


# -- sampling and frame sources ------------------------------------------------------------------------------------


def test_sampling_is_vlm2vec_v2_s_linspace_and_keeps_short_videos_whole():
    # VLM2Vec@6e1e1d42 sample_frames: np.linspace(0, n - 1, num_frames, dtype=int), computed here by hand for n = 64
    assert sample_frames(list(range(64)), 8) == [0, 9, 18, 27, 36, 45, 54, 63]
    assert sample_frames(list(range(10)), 4) == [0, 3, 6, 9]
    assert sample_frames(list(range(3)), 8) == [0, 1, 2]  # process_video_frames samples only when num_frames <= n
    with pytest.raises(ValueError, match="num_frames must be at least 1, got 0"):
        sample_frames([1], 0)


def test_a_frame_directory_is_read_in_natural_name_order(tmp_path):
    frames = make_frames(12, seed=1, size=8)
    for index, frame in enumerate(frames):
        frame.save(tmp_path / f"frame_{index}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [p.name for p in frame_files(tmp_path, 0)][:3] == ["frame_0.png", "frame_1.png", "frame_2.png"]
    got = video_frames(str(tmp_path), 0, num_frames=4)
    assert [np.asarray(f).tolist() for f in got] == [np.asarray(frames[i]).tolist() for i in (0, 3, 7, 11)]
    paths = video_frames(tmp_path, 0, num_frames=4, load=False)  # checked, not opened
    assert [p.name for p in paths] == ["frame_0.png", "frame_3.png", "frame_7.png", "frame_11.png"]


def test_frame_paths_stay_inside_their_root(tmp_path):
    outside = tmp_path / "outside.png"
    make_frames(1, seed=2, size=8)[0].save(outside)
    root = tmp_path / "frames"
    (root / "v1").mkdir(parents=True)
    os.symlink(outside, root / "v1" / "frame_0000.png")
    with pytest.raises(ValueError, match=r"^Input 5: frame path 'frame_0000.png' resolves outside the frame root"):
        video_frames(root / "v1", 5)
    with pytest.raises(ValueError, match=r"^Input 2: video path '../outside.png' resolves outside the video root"):
        video_frames("../outside.png", 2, root=root)
    with pytest.raises(ValueError, match=r"^Input 3: frame path '../outside.png' resolves outside the frame root"):
        video_frames(["../outside.png"], 3, root=root)


@pytest.mark.parametrize("video, error, message", [
    ([], ValueError, r"^Input 4: the video has no frames\.$"),
    ([Image.new("RGB", (4, 4)), 3], TypeError, r"^Input 4: frame 1 of the video must be a PIL image or an image path"),
    ("missing_dir", FileNotFoundError, r"^Input 4: video not found: 'missing_dir'"),
    (np.zeros((2, 4, 4, 3)), TypeError, r"^Input 4: 'video' must be a list of frames, a frame directory or a video"),
])
def test_a_bad_video_is_refused_naming_the_input(video, error, message):
    with pytest.raises(error, match=message):
        normalize_input({"video": video}, 4)


def test_a_video_file_without_a_decoder_says_how_to_extract_frames(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 16)
    with pytest.raises(ValueError, match=r"^Input 1: '.*clip.mp4' is a video file, and no video decoder is installed"
                                         r".*ffmpeg -i clip.mp4 frames/frame_%04d.jpg$"):
        normalize_input({"video": str(tmp_path / "clip.mp4")}, 1)


def test_a_video_file_is_decoded_at_vlm2vec_v2_s_frames(tmp_path, monkeypatch):
    """Through transformers' load_video with an installed decoder (here a stand-in for PyAV: 20 frames, frame i
    filled with the value i): mm_st's frame indices reach the decoder, and its RGB frames come back as PIL images."""
    import importlib.util

    from transformers import video_utils
    from transformers.video_utils import VideoMetadata

    def fake_pyav(path, sample_indices_fn, **kwargs):
        metadata = VideoMetadata(total_num_frames=20, fps=10.0, duration=2.0, video_backend="pyav")
        indices = sample_indices_fn(metadata)
        return np.stack([np.full((8, 8, 3), i, dtype=np.uint8) for i in indices]), metadata

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "av" else real_find_spec(name, *a))
    monkeypatch.setattr(video_utils, "is_av_available", lambda: True)
    monkeypatch.setitem(video_utils.VIDEO_DECODERS, "pyav", fake_pyav)
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 16)
    frames = normalize_input({"video": tmp_path / "clip.mp4"}, 0)["video"]
    assert [int(np.asarray(frame)[0, 0, 0]) for frame in frames] == [0, 2, 5, 8, 10, 13, 16, 19]
    assert all(isinstance(frame, Image.Image) and frame.size == (8, 8) for frame in frames)


def test_an_empty_frame_directory_and_an_image_with_a_video_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^Input 0: the frame directory .* holds no frame images \(.jpg, .jpeg, .png\)"):
        normalize_input({"video": tmp_path}, 0)
    with pytest.raises(ValueError, match=r"^Input 6 has modality 'image\+video', which mm_st cannot embed yet"):
        normalize_input({"image": Image.new("RGB", (4, 4)), "video": make_frames(2, 0, 4)}, 6)


def test_content_keys_tell_videos_apart_and_name_their_modality():
    a, b = make_frames(2, seed=3, size=8), make_frames(2, seed=4, size=8)
    items = [normalize_input(x, i) for i, x in enumerate(
        [{"video": a}, {"video": b}, {"video": list(a)}, {"video": a, "text": TEXT}, {"image": a[0]}])]
    keys = row_keys(items)
    hashes, modalities = keys["mm_st_content_key"].tolist(), keys["mm_st_modality"].tolist()
    assert hashes[0] == hashes[2] and len({hashes[0], hashes[1], hashes[3], hashes[4]}) == 4
    assert modalities == [3, 3, 3, 4, 1]


# -- through the model -----------------------------------------------------------------------------------------------


def test_video_embedding_equals_the_hand_written_forward(qwen2_vl):
    path, model = qwen2_vl
    frames = make_frames(6, seed=5)
    sampled = [frames[i] for i in (0, 1, 3, 5)]  # linspace(0, 5, 4) -> 0, 1, 3, 5
    for text, model_input in [(None, {"video": frames}), (TEXT, {"video": frames, "text": TEXT})]:
        got = model.encode([model_input])[0]
        assert np.abs(got - reference(path, sampled, text)).max() <= 1e-5, text


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_other_qwen_families_embed_video_through_their_processor(family):
    path = tiny_model(family)
    model = build_model(path, recipe="e5v", num_frames=4)
    frames = make_frames(4, seed=6)
    assert np.abs(model.encode([{"video": frames}])[0] - reference(path, frames)).max() <= 1e-5


def test_mixed_batch_with_left_padding_equals_one_by_one(qwen2_vl, tmp_path):
    _, model = qwen2_vl
    short, long = make_frames(2, seed=7), make_frames(4, seed=8, size=64)
    for index, frame in enumerate(long):
        frame.save(tmp_path / f"frame_{index:04d}.jpg", quality=95)
    batch = [
        "a dog",
        {"video": short},
        {"image": short[0], "text": TEXT},
        {"video": str(tmp_path), "text": TEXT + " " + TEXT},
        {"video": long[:3], "instruction": "Find the clip."},
        {"text": "a cat", "video": None, "image": None},
    ]
    features = model.preprocess(batch)
    assert [rows.tolist() for rows in features["mm_st_group_rows"]] == [[0, 5], [2], [1, 4], [3]]  # the instruction is not content
    assert model.tokenizer.padding_side == "left"
    together = model.encode(batch, batch_size=len(batch))
    alone = np.stack([model.encode([item])[0] for item in batch])
    assert np.abs(together - alone).max() <= 1e-5
    from sentence_transformers.base.losses.gradcache import _create_minibatch

    with torch.no_grad():  # a training column, and GradCache mini-batches straddling the modality groups
        whole = model(dict(features))["sentence_embedding"]
        assert np.abs(whole.numpy() - together).max() <= 1e-5
        for begin, end in [(0, 2), (1, 4), (3, 6), (4, 5)]:
            part = model(_create_minibatch(features, begin, end))["sentence_embedding"]
            assert torch.allclose(part, whole[begin:end], atol=1e-6), (begin, end)


def test_a_backbone_without_a_video_path_names_the_input_and_the_families():
    model = build_model(tiny_model("llava"), recipe="e5v")
    with pytest.raises(ValueError, match=r"^Input 1 has modality 'text\+video', which the llava backbone cannot embed "
                                         r"\(families that take video: qwen2_vl, qwen2_5_vl, qwen3_vl\)\.$"):
        model.encode(["a cat", {"video": make_frames(2, 0, 8), "text": "a cat"}])


def test_the_frame_count_is_saved_with_the_model(qwen2_vl, tmp_path):
    _, model = qwen2_vl
    model.save(str(tmp_path))
    config = json.loads((tmp_path / "config_sentence_transformers.json").read_text())
    assert config["mm_st_video"] == {"num_frames": 4}
    assert load_model(str(tmp_path)).num_frames == 4
    assert build_model(str(tmp_path), recipe="e5v", num_frames=2).num_frames == 2
    with pytest.raises(ValueError, match=r"^num_frames: num_frames must be an int of at least 1, got 0\.$"):
        build_model(str(tmp_path), recipe="e5v", num_frames=0)


def test_rows_with_and_without_an_instruction_share_a_batch(qwen2_vl):
    """sentence-transformers turned such a batch into messages that dropped the instructed row's content (an empty
    text): mm_st gives every row of the group as chat messages."""
    _, model = qwen2_vl
    image, frames = make_frames(1, seed=9)[0], make_frames(2, seed=10)
    for batch in ([{"image": image}, {"image": image, "instruction": "Find the emoji."}, "a cat"],
                  [{"video": frames}, {"video": frames, "text": TEXT, "instruction": "Find the clip."}]):
        together = model.encode(batch, batch_size=len(batch))
        alone = np.stack([model.encode([item])[0] for item in batch])
        assert np.abs(together - alone).max() <= 1e-5


def test_a_video_is_written_as_the_family_s_own_video_placeholder():
    from mm_st.templates import render_prompt

    assert render_prompt("e5v", "qwen3_vl", num_videos=1) == literal()
    assert render_prompt("e5v", "qwen2_vl", text=TEXT, num_videos=1) == literal(TEXT)
    # VLM2Vec writes Qwen2-VL's image as a bare <|image_pad|>; VLM2Vec-V2's VLM_VIDEO_TOKENS a video as <|video_pad|>
    assert render_prompt("vlm2vec", "qwen2_vl", text=TEXT, num_videos=1) == f"<|video_pad|>\n{TEXT}\n"
    with pytest.raises(ValueError, match=r"^The llava backbone cannot embed video \(families that take video: "):
        render_prompt("e5v", "llava", num_videos=1)


PLAIN_ST = """
import json, sys
sys.modules["mm_st"] = None  # mm_st must not be importable here
import torch
torch.set_num_threads(1)
from PIL import Image
from sentence_transformers import SentenceTransformer
case = json.loads(sys.argv[1])
model = SentenceTransformer(case["dir"])
frames = [Image.open(path).convert("RGB") for path in case["frames"]]
inputs = [{"video": frames}, {"text": case["text"], "video": frames}, case["text"]]
print("RESULT" + json.dumps({"alone": model.encode(inputs, batch_size=1).tolist(),
                             "batch": model.encode(inputs, batch_size=3).tolist()}))
"""


@pytest.mark.slow  # a process without mm_st (forked from the plain_python server, tests/plain_python.py)
def test_a_saved_model_takes_st_s_native_video_input_without_mm_st(qwen2_vl, tmp_path, plain_python):
    _, model = qwen2_vl
    paths = []
    for index, frame in enumerate(make_frames(6, seed=11)):
        paths.append(str(tmp_path / f"frame_{index:04d}.png"))
        frame.save(paths[-1])
    model.save(str(tmp_path / "model"))
    expected = model.encode([{"video": str(tmp_path)}, {"text": TEXT, "video": paths}, TEXT])
    sampled = [paths[i] for i in (0, 1, 3, 5)]  # what mm_st samples (num_frames=4): plain ST takes frames as given
    case = {"dir": str(tmp_path / "model"), "frames": sampled, "text": TEXT}
    run = plain_python.run(PLAIN_ST, json.dumps(case))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    assert np.abs(np.array(result["alone"]) - expected).max() <= 1e-6
    assert np.abs(np.array(result["batch"]) - expected).max() <= 1e-5  # one padded batch: text and video rows


def test_qwen_embeds_image_and_video_rows_in_one_padded_forward_too(qwen2_vl):
    """Grouping is not needed for correctness here: Qwen2-VL's forward takes image and video rows together."""
    _, model = qwen2_vl
    batch = ["a dog", {"video": make_frames(4, seed=12)}, {"image": make_frames(1, seed=13)[0], "text": TEXT},
             {"video": make_frames(2, seed=14, size=64), "text": TEXT}]
    grouped = model.encode(batch, batch_size=len(batch))
    try:
        model.group_modalities = False
        assert "mm_st_groups" not in model.preprocess(batch)
        assert np.abs(model.encode(batch, batch_size=len(batch)) - grouped).max() <= 1e-6
    finally:
        model.group_modalities = True
