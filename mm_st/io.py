"""The io layer every mm_st reader uses: local path or Hub id, paths kept inside their root, modality names.

- :func:`is_local`: whether a data source names a local path or a Hugging Face Hub repo id (``org/name``);
  :func:`hub_snapshot` gives a Hub dataset repo as a local folder.
- :func:`resolve_inside`: the real path of a file named relative to a root (image roots of the
  converters, evaluation data, synthesis pools and ``load_image``). NUL bytes are refused, and so is
  any path that ends up outside the root once resolved: ``..`` components, absolute paths and
  symbolic links that leave it.
- The modalities mm_st embeds, named in :mod:`mm_st.modality`'s vocabulary (sentence-transformers'):
  :data:`TEXT`, :data:`IMAGE`, :data:`IMAGE_TEXT`, :data:`VIDEO`, :data:`VIDEO_TEXT` (:data:`MODALITIES`, with
  stable ids :data:`MODALITY_IDS`), the fields of an input dict (:data:`FIELDS`) and :func:`modality_of` (an audio
  input, or one holding an image and a video, is refused, naming its modality).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from mm_st.io import is_local, modality_of, resolve_inside
    >>> is_local("TIGER-Lab/MMEB-eval"), is_local("./MMEB-eval")
    (False, True)
    >>> root = Path(tempfile.mkdtemp())
    >>> resolve_inside(root, "cats/1.png") == root.resolve() / "cats" / "1.png"
    True
    >>> resolve_inside(root, "../1.png", where="row 3")
    Traceback (most recent call last):
    ...
    mm_st.io.PathOutsideRoot: row 3: image path '../1.png' resolves outside the image root '...'.
    >>> modality_of({"text": "a cat", "image": None}), modality_of({"text": "a cat", "image": "cat.png"})
    ('text', 'image+text')
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mm_st.modality import IMAGE, IMAGE_TEXT, PARTS, TEXT, VIDEO, VIDEO_TEXT, check_supported
from mm_st.modality import SUPPORTED as MODALITIES
from mm_st.modality import SUPPORTED_IDS as MODALITY_IDS  # stored by mm_st's losses and miner
from mm_st.modality import name as _name

FIELDS = (TEXT, IMAGE, VIDEO)  # the keys of an input dict / struct column; None means that modality is absent
INSTRUCTION = "instruction"  # optional third key: the row's own instruction (rendered as ST's prompt= would be)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_local(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a local path rather than a Hub repo id.

    Local: a ``pathlib.Path``, an existing path, or any string not shaped ``org/name`` (``./data``,
    ``/data``, ``~/data``, ``nli.csv``). A string shaped ``org/name`` that does not exist here is a Hub id.

    Example:
        >>> is_local("sentence-transformers/all-nli"), is_local("~/all-nli"), is_local("nli.csv")
        (False, True, True)
    """
    if isinstance(source, os.PathLike):
        return True
    return Path(source).expanduser().exists() or not _HUB_ID.match(source)


def hub_snapshot(repo_id: str, revision: str | None = None, allow_patterns: list[str] | None = None) -> Path:
    """Download (or reuse from the HF cache) a Hub dataset repo laid out like a local directory; its path."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=allow_patterns))


class PathOutsideRoot(ValueError):
    """A path named relative to a root resolves outside it (or cannot name a file: NUL byte)."""


def resolve_inside(root: str | os.PathLike, relative: str | os.PathLike, where: str = "", what: str = "image") -> Path:
    """The resolved (absolute, symlink-free) path of ``relative`` inside ``root``.

    Raises :class:`PathOutsideRoot` naming ``where`` (the item: input index, file and row), the path
    and the root when ``relative`` has a NUL byte or resolves outside the root: through ``..``, as an
    absolute path elsewhere, or through a symbolic link (a file or any folder on the way) pointing out
    of it. Whether the file exists is the caller's check.

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> os.symlink("/etc/hostname", os.path.join(root, "link.png"))
        >>> resolve_inside(root, "link.png", where="Input 0")
        Traceback (most recent call last):
        ...
        mm_st.io.PathOutsideRoot: Input 0: image path 'link.png' resolves outside the image root '...' (it leads to '/etc/hostname').
    """
    prefix = f"{where}: " if where else ""
    if "\0" in os.fspath(relative):
        raise PathOutsideRoot(f"{prefix}{what} path {os.fspath(relative)!r} contains a NUL byte.")
    base = Path(root).expanduser().resolve()
    full = (base / relative).resolve()
    if not full.is_relative_to(base):
        lexical = Path(os.path.normpath(base / relative))
        via = f" (it leads to {str(full)!r})" if lexical.is_relative_to(base) else ""
        raise PathOutsideRoot(
            f"{prefix}{what} path {os.fspath(relative)!r} resolves outside the {what} root {str(base)!r}{via}."
        )
    return full


def modality_name(has_text: bool, has_image: bool, *others: str) -> str:
    """The modality (:data:`MODALITIES`) of an input holding these; ``others`` (e.g. ``"video"``) are further parts
    it holds; a combination mm_st does not embed is refused by :func:`mm_st.modality.check_supported`, naming it."""
    held = [TEXT] * has_text + [IMAGE] * has_image + list(others)
    if not held:
        raise ValueError("Input has neither text, image nor video.")
    return check_supported(_name(*held))


def modality_of(item: Any) -> str:
    """The modality of one input: a str, an image (PIL or path), a ``{"text", "image"}`` dict or struct
    row (a ``None`` field is absent; neither is an error; an ``instruction`` field is not content), or
    chat messages (by the content parts of their non-system messages; no part at all counts as text).
    An audio field or part, or an image with a video, is refused, naming the modality
    (:func:`mm_st.modality.check_supported`).

    Example:
        >>> modality_of("a cat"), modality_of({"image": "cat.png"})
        ('text', 'image')
        >>> modality_of([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a cat"}]}])
        'image+text'
    """
    if isinstance(item, str):
        return TEXT
    messages = [item] if isinstance(item, dict) and "content" in item else item
    if isinstance(messages, list):
        parts = []
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "system":
                continue  # the instruction, not the input's content
            content = message.get("content") if isinstance(message, dict) else None
            parts += [{"type": TEXT}] if isinstance(content, str) else [p for p in content or [] if isinstance(p, dict)]
        types = {p.get("type") for p in parts}
        others = sorted(types & set(PARTS) - {TEXT, IMAGE})  # video, audio
        return modality_name(TEXT in types or not (types & set(PARTS)), IMAGE in types, *others)
    if isinstance(item, dict):
        others = [part for part in PARTS if part not in (TEXT, IMAGE) and item.get(part) is not None]
        return modality_name(item.get(TEXT) is not None, item.get(IMAGE) is not None, *others)
    return IMAGE
