"""The one modality vocabulary of mm_st: sentence-transformers' ``Modality``, and the translations of other spellings.

sentence-transformers 6.2 (``sentence_transformers.base.modality_types.Modality``) names a modality ``"text"``,
``"image"``, ``"audio"`` or ``"video"``, and an input combining several (a ``{"text", "image"}`` dict) the sorted tuple
of its parts, ``("image", "text")``, which its ``format_modality`` writes ``"image+text"``. mm_st uses those names
and that spelling everywhere (:data:`IMAGE_TEXT` is ``"image+text"``): :func:`name` builds one from its parts,
:func:`from_st` / :func:`to_st` convert to and from ST's value. This module does not import sentence-transformers
(``import mm_st`` stays light); a test pins every name here to ST's.

:data:`KNOWN` holds every combination of ST's content modalities; :data:`SUPPORTED` those mm_st's models embed
(text, image, image+text, video, text+video; video only on backbones whose processor has a video path, see
:data:`mm_st.templates.FAMILIES`). :func:`check_supported` refuses the others naming the modality and the item:
audio is a known modality that mm_st cannot embed yet, ``"sound"`` is no modality at all. A recipe's prompts are
keyed by :data:`PROMPTED` (text, image, image+text): a video is written where the recipe writes its image.

Other spellings are translated only where their files are read or written:

- M-BEIR (UniIR) writes ``"text"``, ``"image"`` and ``"image,text"`` (also ``"text,image"`` in some rows):
  :func:`from_mbeir` / :func:`to_mbeir`;
- mteb's task categories (MMEB's tasks, ``"it2i"``) write a modality as letters, media first: :func:`to_letters` /
  :func:`from_letters`;
- saved chat templates key a recipe's prompts ``"text"`` / ``"image"`` / ``"image_text"``
  (:data:`PROMPT_KEYS`): the spelling of models already saved, kept byte for byte.

Example:
    >>> from mm_st.modality import IMAGE_TEXT, from_mbeir, name, to_letters
    >>> name("text", "image"), IMAGE_TEXT
    ('image+text', 'image+text')
    >>> from_mbeir("text,image", where="pool.jsonl row 3"), to_letters(IMAGE_TEXT)
    ('image+text', 'it')
    >>> check_supported("audio", where="Input 2")
    Traceback (most recent call last):
    ...
    ValueError: Input 2 has modality 'audio', which mm_st cannot embed yet (supported: text, image, image+text, video, text+video).
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers.base.modality_types import Modality

TEXT, IMAGE, AUDIO, VIDEO = "text", "image", "audio", "video"
PARTS = (TEXT, IMAGE, AUDIO, VIDEO)  # ST's MULTIMODAL_DICT_KEYS: the content modalities (ST's "message" is a form)
SEPARATOR = "+"  # ST's format_modality joins a tuple's parts with it


def name(*parts: str) -> str:
    """The vocabulary's name of an input holding ``parts`` (any order): ``name("text", "image") == "image+text"``."""
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise ValueError(f"Unknown modality {SEPARATOR.join(parts) or '(none)'!r}: the parts of a modality are "
                         f"{', '.join(PARTS)}.")
    return SEPARATOR.join(sorted(set(parts)))


IMAGE_TEXT = name(IMAGE, TEXT)
VIDEO_TEXT = name(VIDEO, TEXT)
KNOWN = tuple(name(*c) for size in range(1, len(PARTS) + 1) for c in combinations(PARTS, size))
PROMPTED = (TEXT, IMAGE, IMAGE_TEXT)  # the keys of a recipe's prompts (a video takes the image's prompt)
# What mm_st's models embed; ids below are stable (stored by losses, miner): new modalities are appended.
SUPPORTED = (*PROMPTED, VIDEO, VIDEO_TEXT)
SUPPORTED_IDS = {modality: index for index, modality in enumerate(SUPPORTED)}


def parts(modality: str) -> tuple[str, ...]:
    """The parts of a vocabulary name: ``parts("image+text") == ("image", "text")``."""
    check_known(modality)
    return tuple(modality.split(SEPARATOR))


def check_known(modality: Any, where: str = "") -> str:
    """``modality`` when it is in the vocabulary; else a ValueError naming it (and ``where``) and the known ones."""
    if modality not in KNOWN:
        prefix = f"{where} has " if where else ""
        raise ValueError(f"{prefix}unknown modality {modality!r}; the vocabulary (sentence-transformers' Modality) is "
                         f"{', '.join(PARTS)} and their combinations, e.g. {IMAGE_TEXT!r}.")
    return modality


def check_supported(modality: Any, where: str = "Input") -> str:
    """``modality`` when mm_st's models embed it; an unknown one or a known one they cannot embed yet (audio,
    image+video) is a ValueError naming it and ``where``."""
    check_known(modality, where)
    if modality not in SUPPORTED:
        raise ValueError(f"{where} has modality {modality!r}, which mm_st cannot embed yet "
                         f"(supported: {', '.join(SUPPORTED)}).")
    return modality


def from_st(modality: Modality) -> str:
    """The vocabulary's name of a sentence-transformers ``Modality`` (a str or a tuple of parts)."""
    return name(*modality) if isinstance(modality, tuple) else check_known(modality)


def to_st(modality: str) -> Modality:
    """The sentence-transformers ``Modality`` of a vocabulary name: a str, or the sorted tuple of its parts."""
    found = parts(modality)
    return found[0] if len(found) == 1 else found


# -- M-BEIR (UniIR): "text", "image", "image,text" ---------------------------------------------------------------

MBEIR_SEPARATOR = ","
MBEIR_SPELLINGS = {TEXT: "text", IMAGE: "image", IMAGE_TEXT: "image,text"}  # what M-BEIR's files hold


def from_mbeir(value: Any, where: str) -> str:
    """The vocabulary's name of an M-BEIR modality (``"text,image"`` and spaces read as ``"image,text"``); anything
    else is a ValueError naming ``where`` and the value."""
    found = {part.strip() for part in value.split(MBEIR_SEPARATOR)} if isinstance(value, str) else set()
    modality = name(*found) if found and found <= set(PARTS) else None
    if modality not in MBEIR_SPELLINGS:
        raise ValueError(f"{where} has modality {value!r}; expected one of "
                         f"{', '.join(repr(s) for s in MBEIR_SPELLINGS.values())}.")
    return modality


def to_mbeir(modality: str) -> str:
    """M-BEIR's spelling of a vocabulary name (``"image+text"`` -> ``"image,text"``)."""
    if modality not in MBEIR_SPELLINGS:
        raise ValueError(f"M-BEIR has no modality {modality!r} (it has {', '.join(MBEIR_SPELLINGS)}).")
    return MBEIR_SPELLINGS[modality]


# -- mteb task categories (MMEB's tasks): "t", "i", "it", "vt", ... --------------------------------------------------

LETTERS = {IMAGE: "i", AUDIO: "a", VIDEO: "v", TEXT: "t"}  # mteb writes the medium first, text last ("it", "vt")


def to_letters(modality: str) -> str:
    """mteb's category letters of a vocabulary name (``"image+text"`` -> ``"it"``)."""
    held = set(parts(modality))
    return "".join(letter for part, letter in LETTERS.items() if part in held)


def from_letters(letters: str, where: str = "") -> str:
    """The vocabulary's name of one side of an mteb category (``"it"`` of ``"it2i"``)."""
    by_letter = {letter: part for part, letter in LETTERS.items()}
    if not letters or any(letter not in by_letter for letter in letters):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}unknown mteb modality letters {letters!r} (letters: {', '.join(by_letter)}).")
    return name(*(by_letter[letter] for letter in letters))


# -- saved chat templates: a recipe's prompts keyed "text" / "image" / "image_text" -------------------------------

PROMPT_KEYS = {TEXT: "text", IMAGE: "image", IMAGE_TEXT: "image_text"}  # persisted in saved models' chat templates
# The keys of a recipe's own video prompts in a saved chat template (recipes that write a video otherwise than an image)
VIDEO_PROMPT_KEYS = {VIDEO: "video", VIDEO_TEXT: "video_text"}


def prompt_key(modality: str) -> str:
    """The key of a modality's prompt in a saved chat template; a modality without one (video) is refused: the saved
    template gives a video the prompt of an image (:mod:`mm_st.templates`)."""
    if modality not in PROMPT_KEYS:
        check_known(modality)
        raise ValueError(f"No prompt for modality {modality!r}: recipes have prompts for {', '.join(PROMPT_KEYS)}.")
    return PROMPT_KEYS[modality]
