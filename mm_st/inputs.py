"""Input normalisation: what mm_st accepts on top of sentence-transformers' own input types.

sentence-transformers takes ``str``, PIL images and ``{"text": ..., "image": ...}`` dicts. mm_st adds:
``None`` fields (that modality is absent, as Arrow columns mixing text rows and image rows hold
them), ``pathlib.Path`` images, image paths inside dicts, errors that name the offending item, and a
row's own instruction: ``{"text", "image", "instruction"}`` becomes chat messages whose system message
is the instruction, which the recipe's chat template renders exactly as ``prompt=instruction`` (so
rows of different tasks, each with its instruction, can share a training batch). The instruction is
hashed with the content but is not content: an image with an instruction is an image input.

A video is ``{"video": V}`` (with optional ``"text"`` / ``"instruction"``), ``V`` a list of frames (PIL images or
image paths), a directory of frame images or a video file (:func:`video_frames`); it is sampled to the model's frame
count as VLM2Vec-V2 samples (:func:`sample_frames`) and given to sentence-transformers as ``{"video": [frames]}``,
its native video input.

Example:
    >>> from mm_st.inputs import normalize_inputs
    >>> normalize_inputs([{"text": "a cat", "image": None}])
    ['a cat']
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mm_st.io import FIELDS, INSTRUCTION, MODALITY_IDS, VIDEO, modality_name, resolve_inside
from mm_st.modality import check_supported
from mm_st.modality import name as modality_named

# VLM2Vec-V2's frame count for its video tasks: TIGER-AI-Lab/VLM2Vec@6e1e1d42 experiments/public/eval/video.yaml
# (num_frames: 8 for every video dataset).
DEFAULT_NUM_FRAMES = 8
# Frame files of a frame directory: VLM2Vec@6e1e1d42 src/utils/vision_utils/vision_utils.py IMAGE_EXTENSIONS.
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".wmv", ".flv", ".mkv", ".webm")  # sentence-transformers' list + webm


def load_image(path: str | os.PathLike, index: int, root: str | os.PathLike | None = None) -> Image.Image:
    """Open an image file fully (so a corrupt file fails here), naming the input index on error.

    With ``root``, a path is resolved inside it (:func:`mm_st.io.resolve_inside`): a path that escapes
    the root, also through a symbolic link, is refused.
    """
    full = resolve_inside(root, path, where=f"Input {index}") if root is not None else Path(path)
    return _open_image(full, index, verify_only=False)


def check_image_file(path: str | os.PathLike, index: int) -> None:
    """Cheap validity check of an image file (exists, PIL can verify it), naming the input index."""
    _open_image(Path(path), index, verify_only=True)


def _open_image(path: Path, index: int, verify_only: bool) -> Image.Image | None:
    if not path.is_file():
        raise FileNotFoundError(f"Input {index}: image file not found: {str(path)!r}.")
    try:
        with Image.open(path) as image:
            if verify_only:
                image.verify()
                return None
            image.load()
            return image.convert("RGB") if image.mode not in ("RGB", "L") else image.copy()
    except Exception as exc:  # PIL raises several types for unreadable files
        raise ValueError(f"Input {index}: cannot read image file {str(path)!r}: {exc}") from exc


ACCEPTED = (
    "a str, a PIL image, an image path (pathlib.Path or {'image': path}), a {'text', 'image'} dict, a video "
    "({'video': frames, frame directory or video file}, optionally with 'text') "
    "or chat messages (a list of {'role', 'content'} dicts)"
)


def _check_size(image: Image.Image, index: int) -> Image.Image:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Input {index}: the image is empty ({image.width}x{image.height} pixels).")
    return image


def _as_image(value: Any, index: int, load: bool) -> Any:
    if isinstance(value, (str, os.PathLike)):
        if not load:
            check_image_file(value, index)
            return value
        return _check_size(load_image(value, index), index)
    if isinstance(value, Image.Image):
        return _check_size(value, index)
    raise TypeError(f"Input {index}: 'image' must be a PIL image or an image path, got {_describe(value)}.")


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else f"{type(value).__name__} {value!r:.60}"


def _is_message(item: Any) -> bool:
    return isinstance(item, dict) and "role" in item and "content" in item


def is_messages(item: Any) -> bool:
    """One chat message, or a non-empty list of them."""
    return _is_message(item) or (isinstance(item, list) and bool(item) and all(map(_is_message, item)))


def _check_other(item: Any, index: int, supports_image: bool) -> Any:
    """Inputs that are not mm_st dicts: images, texts and chat messages pass; anything else is an error."""
    if isinstance(item, Image.Image):
        if not supports_image:
            raise ValueError(f"Input {index} is an image, but this model is text-only (no image modality).")
        return _check_size(item, index)
    if isinstance(item, str) or is_messages(item):
        return item
    if isinstance(item, (list, tuple)):
        raise TypeError(
            f"Input {index} is a {type(item).__name__} ({item!r:.60}): nested lists and pairs are not inputs; "
            f"give each text or image as its own input, a {{'text', 'image'}} dict for one image+text input, "
            f"or {{'video': frames}} for a video."
        )
    if hasattr(item, "shape"):
        raise TypeError(
            f"Input {index} is a {_describe(item)}: arrays are not inputs; give images as PIL images "
            "(e.g. PIL.Image.fromarray(array))."
        )
    if isinstance(item, dict):
        keys = sorted(map(str, item))
        raise ValueError(f"Input {index}: a dict needs 'text' / 'image' / 'video' keys (or 'role' and 'content'), "
                         f"got keys {keys}.")
    raise TypeError(f"Input {index}: unsupported type {_describe(item)}; give {ACCEPTED}.")


def normalize_input(
    item: Any, index: int, supports_image: bool = True, load: bool = True, num_frames: int = DEFAULT_NUM_FRAMES
) -> Any:
    """One input in the form sentence-transformers expects (see module docstring).

    With ``load=False`` image paths (and video frame paths) are only checked (see :func:`check_image_file`), not
    opened. A video is sampled to ``num_frames`` frames (:func:`video_frames`) and stays a ``{"video": frames}`` dict.
    """
    if item is None:
        raise ValueError(f"Input {index} is None (a missing value); give a text, an image or a dict of them.")
    if isinstance(item, os.PathLike):
        item = {"image": item}
    if isinstance(item, dict) and INSTRUCTION in item and set(item) <= {*FIELDS, INSTRUCTION}:
        instruction = item[INSTRUCTION]
        if instruction is not None and not isinstance(instruction, str):
            raise TypeError(f"Input {index}: 'instruction' must be a str or None, got {type(instruction).__name__}.")
        content = normalize_input({k: v for k, v in item.items() if k != INSTRUCTION}, index, supports_image, load,
                                  num_frames)
        return as_messages(content, instruction)
    if isinstance(item, dict) and set(item) <= set(FIELDS):
        present = {key: value for key, value in item.items() if value is not None}
        if not present:
            raise ValueError(f"Input {index}: every field is None ({sorted(item)}); give a text, an image, a video, "
                             "or a text with one of them.")
        if "image" in present and VIDEO in present:
            check_supported(modality_named(*present), where=f"Input {index}")
        if "text" in present and not isinstance(present["text"], str):
            raise TypeError(f"Input {index}: 'text' must be a str, got {type(present['text']).__name__}.")
        if "image" in present:
            if not supports_image:
                raise ValueError(f"Input {index} has an image, but this model is text-only (no image modality).")
            present["image"] = _as_image(present["image"], index, load)
        if VIDEO in present:
            present[VIDEO] = video_frames(present[VIDEO], index, num_frames, load)
        if set(present) == {"text"}:
            return present["text"]
        if set(present) == {"image"}:
            return present if isinstance(present["image"], (str, os.PathLike)) else present["image"]
        return {key: present[key] for key in FIELDS if key in present}
    return _check_other(item, index, supports_image)


def as_messages(content: Any, instruction: str | None) -> list[dict[str, Any]]:
    """A normalised input as chat messages: the instruction (if any) as the system message, then the user's
    image and text parts (the form the recipe's chat template renders, like ``prompt=instruction``).

    Example:
        >>> as_messages("a cat", "Find the image.")[0]
        {'role': 'system', 'content': [{'type': 'text', 'text': 'Find the image.'}]}
    """
    if isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, dict):
        parts = [{"type": key, key: content[key]} for key in ("image", VIDEO, "text") if key in content]
    else:
        parts = [{"type": "image", "image": content}]
    system = [{"role": "system", "content": [{"type": "text", "text": instruction}]}] if instruction else []
    return [*system, {"role": "user", "content": parts}]


def normalize_inputs(
    inputs: Sequence[Any], supports_image: bool = True, load: bool = True, num_frames: int = DEFAULT_NUM_FRAMES
) -> list[Any]:
    return [normalize_input(item, index, supports_image, load, num_frames) for index, item in enumerate(inputs)]


def sample_frames(frames: Sequence[Any], num_frames: int) -> list[Any]:
    """``num_frames`` of ``frames``, as VLM2Vec-V2 samples a video's frames; fewer frames are all kept.

    TIGER-AI-Lab/VLM2Vec@6e1e1d42 src/utils/vision_utils/vision_utils.py: ``process_video_frames`` calls
    ``sample_frames`` (indices ``np.linspace(0, n - 1, num_frames, dtype=int)``) only when ``num_frames <= n``.

    Example:
        >>> sample_frames(list(range(20)), 8), sample_frames([0, 1, 2], 8)
        ([0, 2, 5, 8, 10, 13, 16, 19], [0, 1, 2])
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    if len(frames) < num_frames:
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, num_frames, dtype=int).tolist()]


def _natural_key(name: str) -> list[Any]:
    """VLM2Vec's ``load_frames`` order: digit runs compare as numbers (``frame_2`` before ``frame_10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(directory: str | os.PathLike, index: int, root: str | os.PathLike | None = None) -> list[Path]:
    """The frame images of a frame directory (VLM2Vec's ``frame_root/<video_id>/frame_0000.jpg``), in name order.

    Files are ``.jpg`` / ``.jpeg`` / ``.png`` (VLM2Vec's ``load_frames``), each kept inside the directory (a symbolic
    link out of it is refused); with ``root`` the directory itself is resolved inside ``root``.
    """
    where = f"Input {index}"
    folder = resolve_inside(root, directory, where=where, what="video") if root is not None else Path(directory)
    names = sorted((p.name for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS), key=_natural_key)
    if not names:
        raise ValueError(f"{where}: the frame directory {str(folder)!r} holds no frame images "
                         f"({', '.join(FRAME_EXTENSIONS)}).")
    return [resolve_inside(folder, name, where=where, what="frame") for name in names]


def video_frames(
    video: Any, index: int, num_frames: int = DEFAULT_NUM_FRAMES, load: bool = True,
    root: str | os.PathLike | None = None,
) -> list[Any]:
    """The ``num_frames`` frames (:func:`sample_frames`) of a video: PIL images, or with ``load=False`` checked paths.

    ``video`` is a list of frames (PIL images or image paths), a frame directory (:func:`frame_files`) or a video
    file (decoded when a decoder is installed). With ``root``, paths are resolved inside it. Errors name ``index``.
    """
    where = f"Input {index}"
    if isinstance(video, (str, os.PathLike)):
        path = resolve_inside(root, video, where=where, what="video") if root is not None else Path(video)
        if path.is_dir():
            frames: list[Any] = frame_files(path, index)
        elif path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
            return decode_video(path, index, num_frames)
        elif path.exists():
            raise ValueError(f"{where}: {str(path)!r} is neither a frame directory nor a video file "
                             f"({', '.join(VIDEO_EXTENSIONS)}).")
        else:
            raise FileNotFoundError(f"{where}: video not found: {str(path)!r} (give a frame directory, a video file "
                                    "or a list of frames).")
    elif isinstance(video, (list, tuple)) and not isinstance(video, str):
        if not video:
            raise ValueError(f"{where}: the video has no frames.")
        frames = [_frame(frame, index, position, root) for position, frame in enumerate(video)]
    else:
        raise TypeError(f"{where}: 'video' must be a list of frames, a frame directory or a video file, "
                        f"got {_describe(video)}.")
    return [_as_image(frame, index, load) for frame in sample_frames(frames, num_frames)]


def _frame(frame: Any, index: int, position: int, root: str | os.PathLike | None) -> Any:
    if isinstance(frame, Image.Image):
        return frame
    if isinstance(frame, (str, os.PathLike)):
        return resolve_inside(root, frame, where=f"Input {index}", what="frame") if root is not None else frame
    raise TypeError(f"Input {index}: frame {position} of the video must be a PIL image or an image path, "
                    f"got {_describe(frame)}.")


def decode_video(path: Path, index: int, num_frames: int) -> list[Image.Image]:
    """The sampled frames (:func:`sample_frames`) of a video file, decoded by transformers' ``load_video`` with the
    first installed decoder (PyAV, decord, OpenCV: each gives RGB frames, height x width x 3); without one, an error
    that says how to extract frames."""
    import importlib.util

    from transformers.video_utils import load_video

    backends = {"av": "pyav", "decord": "decord", "cv2": "opencv"}
    backend = next((name for module, name in backends.items() if importlib.util.find_spec(module)), None)
    if backend is None:
        raise ValueError(
            f"Input {index}: {str(path)!r} is a video file, and no video decoder is installed (PyAV, decord or "
            "OpenCV: e.g. pip install av). Or extract its frames into a directory and pass that: "
            f"ffmpeg -i {path.name} frames/frame_%04d.jpg"
        )

    def indices(metadata: Any, **_: Any) -> np.ndarray:
        return np.array(sample_frames(range(metadata.total_num_frames), num_frames))

    try:
        array, _ = load_video(str(path), backend=backend, sample_indices_fn=indices)
    except Exception as exc:  # decoders raise several types for unreadable files
        raise ValueError(f"Input {index}: cannot decode video file {str(path)!r}: {exc}") from exc
    return [Image.fromarray(np.asarray(frame)) for frame in array]


def load_images(items: Sequence[Any]) -> list[Any]:
    """Inputs already checked by ``normalize_inputs(..., load=False)``, with their image paths opened.

    What ``load=True`` adds, without checking each input again (``encode`` checks its inputs up front).

    Example:
        >>> load_images(["a cat", {"text": "a cat", "image": None}])
        ['a cat', {'text': 'a cat', 'image': None}]
    """
    return [_open_image_path(item, index) for index, item in enumerate(items)]


def _open_image_path(item: Any, index: int) -> Any:
    if isinstance(item, list) and all(isinstance(message, dict) for message in item):  # chat messages
        return [{**message, "content": [_open_part(part, index) for part in message["content"]]}
                if isinstance(message.get("content"), list) else message for message in item]
    if isinstance(item, dict) and isinstance(item.get("image"), (str, os.PathLike)):
        image = _check_size(load_image(item["image"], index), index)
        return {**item, "image": image} if "text" in item else image
    if isinstance(item, dict) and isinstance(item.get(VIDEO), list):
        return {**item, VIDEO: _open_frames(item[VIDEO], index)}
    return item


def _open_frames(frames: list[Any], index: int) -> list[Any]:
    return [_as_image(frame, index, load=True) for frame in frames]


def _open_part(part: Any, index: int) -> Any:
    if isinstance(part, dict) and part.get("type") == "image" and isinstance(part.get("image"), (str, os.PathLike)):
        return {**part, "image": _check_size(load_image(part["image"], index), index)}
    if isinstance(part, dict) and part.get("type") == VIDEO and isinstance(part.get(VIDEO), list):
        return {**part, VIDEO: _open_frames(part[VIDEO], index)}
    return part


def has_image(item: Any) -> bool:
    if isinstance(item, Image.Image):
        return True
    if isinstance(item, dict):
        return "image" in item or _content_has_image(item.get("content"))
    if isinstance(item, list):
        return any(isinstance(message, dict) and _content_has_image(message.get("content")) for message in item)
    return False


def _content_has_image(content: Any, kind: str = "image") -> bool:
    return isinstance(content, list) and any(isinstance(part, dict) and part.get("type") == kind for part in content)


def has_video(item: Any) -> bool:
    """Whether a normalised input holds a video (a ``{"video": ...}`` dict or a video part of chat messages)."""
    if isinstance(item, dict):
        return item.get(VIDEO) is not None or _content_has_image(item.get("content"), VIDEO)
    if isinstance(item, list):
        return any(isinstance(message, dict) and _content_has_image(message.get("content"), VIDEO) for message in item)
    return False


def has_media(item: Any) -> bool:
    """Whether a normalised input holds an image or a video (tokens that truncation must never cut)."""
    return has_image(item) or has_video(item)


def content_key(item: Any) -> tuple[int, int]:
    """``(content hash, modality id)`` of a normalised input: equal content gives an equal 63-bit hash.

    The hash covers the text, each image's and each video frame's mode, size and pixel bytes (exact identity,
    never float closeness); the modality id is :data:`mm_st.io.MODALITY_IDS` of what the input holds.
    """
    digest = hashlib.blake2b(digest_size=8)
    texts, images, instructions, videos = [], [], [], []
    if isinstance(item, str):
        texts.append(item)
    elif isinstance(item, Image.Image):
        images.append(item)
    elif isinstance(item, dict) and ("text" in item or "image" in item or VIDEO in item):
        texts += [item["text"]] if "text" in item else []
        images += [item["image"]] if "image" in item else []
        videos += [item[VIDEO]] if VIDEO in item else []
    else:  # chat messages
        messages = item if isinstance(item, list) else [item]
        for message in messages:
            content = message.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            if message.get("role") == "system":  # the instruction: part of the identity, not of the modality
                instructions += [part.get("text", "") for part in parts if part.get("type") == "text"]
                continue
            texts += [part.get("text", "") for part in parts if part.get("type") == "text"]
            images += [part.get("image") for part in parts if part.get("type") == "image"]
            videos += [part.get(VIDEO) for part in parts if part.get("type") == VIDEO]
    for text in instructions:
        digest.update(b"S" + text.encode("utf-8") + b"\0")
    for text in texts:
        digest.update(b"T" + text.encode("utf-8") + b"\0")
    for image in images:
        _hash_image(digest, image)
    for frames in videos:
        digest.update(f"V{len(frames)}".encode())
        for frame in frames:
            _hash_image(digest, frame)
    modality = modality_name(bool(texts) or not (images or videos), bool(images), *[VIDEO] * bool(videos))
    return int.from_bytes(digest.digest(), "little") >> 1, MODALITY_IDS[modality]


def _hash_image(digest: Any, image: Any) -> None:
    if isinstance(image, Image.Image):
        digest.update(f"I{image.mode}{image.size}".encode() + image.tobytes())
    else:
        digest.update(b"P" + str(image).encode("utf-8"))


def text_of(item: Any) -> str | None:
    """The text field of a normalised input (None for images and chat messages)."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"]
    return None


def with_text(item: Any, text: str) -> Any:
    return text if isinstance(item, str) else {**item, "text": text}
