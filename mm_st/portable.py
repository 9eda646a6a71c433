"""What a saved model must not carry from the machine that saved it: load-time flags and local paths.

Saving writes some of the arguments a model was *loaded* with back into its files: transformers keeps
``"local_files_only": true`` and ``"is_local": true`` (offline loads) in ``tokenizer_config.json``, and peft
keeps the directory the base model was read from in ``adapter_config.json``'s ``base_model_name_or_path``.
A copy of such a folder (or a Hub repo made from it) then behaves differently from the original: offline-only
loading, a base path nobody else has.

:func:`scrub_saved_model` runs at every mm_st save (``MultimodalSentenceTransformer.save``): it removes the
load-time keys (:data:`LOAD_TIME_KEYS`) from every JSON file, drops ``_name_or_path``-style keys holding a
local path, and rewrites a base model path inside the active Hugging Face cache
(``.../models--org--name/snapshots/<commit>``) to its Hub id, which loads the same files from that cache.
A base that exists only as a local directory (e.g. mm_st's embedded tiny backbone) keeps its path, so the
folder still loads on the machine that trained it; :mod:`mm_st.hub` never pushes such an adapter (it merges
the weights instead). :func:`local_state` lists what a folder still carries.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "tokenizer_config.json").write_text(json.dumps({"local_files_only": True, "is_local": True, "pad_token": "<pad>"}))
    >>> local_state(folder)
    ['tokenizer_config.json: local_files_only = True (load-time flag)', 'tokenizer_config.json: is_local = True (load-time flag)']
    >>> scrub_saved_model(folder)
    ['tokenizer_config.json: removed local_files_only', 'tokenizer_config.json: removed is_local']
    >>> json.loads((folder / "tokenizer_config.json").read_text()), local_state(folder)
    ({'pad_token': '<pad>'}, [])
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

# Arguments of from_pretrained that transformers / peft write back into a saved config (never model settings).
LOAD_TIME_KEYS = ("local_files_only", "is_local", "cache_dir", "force_download", "proxies", "token", "use_auth_token",
                  "resume_download", "_commit_hash", "trust_remote_code")
# Keys that only name where a file was loaded from: dropped when they hold a local path.
SOURCE_KEYS = ("_name_or_path", "name_or_path")
BASE_KEY = "base_model_name_or_path"  # adapter_config.json (peft)
_CACHE_SNAPSHOT = re.compile(r"(?:^|[\\/])models--(?P<org>[^\\/]+?)--(?P<name>[^\\/]+)[\\/]snapshots[\\/](?P<rev>[0-9a-f]{40})[\\/]?$")
_ABSOLUTE = re.compile(r"^(?:/|~[\\/]|[A-Za-z]:[\\/]|\\\\)")


def is_local_path(value: Any) -> bool:
    """Whether a JSON value is an absolute (or home-relative) file system path, e.g. ``/data/base``.

    >>> is_local_path("/tmp/base-model/llava"), is_local_path("llava-hf/llava-1.5-7b-hf"), is_local_path("</s>")
    (True, False, False)
    """
    if not (isinstance(value, str) and "\n" not in value and len(value) < 4096 and _ABSOLUTE.match(value)):
        return False
    parts = [part for part in re.split(r"[\\/]+", value) if part]
    return len(parts) >= 2 or (len(parts) == 1 and os.path.exists(value))


def hub_id_of_cache_path(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(repo_id, commit)`` of a Hugging Face cache snapshot directory (``.../models--org--name/snapshots/<sha>``).

    >>> hub_id_of_cache_path("~/.cache/huggingface/hub/models--llava-hf--llava-1.5-7b-hf/snapshots/" + "a" * 40)
    ('llava-hf/llava-1.5-7b-hf', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')
    >>> hub_id_of_cache_path("/data/llava") is None
    True
    """
    match = _CACHE_SNAPSHOT.search(os.fspath(path))
    return (f"{match['org']}/{match['name']}", match["rev"]) if match else None


def _in_active_cache(path: str) -> bool:
    from huggingface_hub import constants

    try:
        return Path(path).resolve().is_relative_to(Path(constants.HF_HUB_CACHE).resolve())
    except OSError:
        return False


def cache_hub_id(path: str) -> str | None:
    """The Hub id of a base path inside the active Hugging Face cache (it loads from there by id), else None."""
    found = hub_id_of_cache_path(path)
    return found[0] if found and _in_active_cache(path) else None


def json_files(folder: str | os.PathLike) -> list[Path]:
    """Every ``*.json`` file under ``folder`` (module sub-folders included), sorted."""
    return sorted(p for p in Path(folder).rglob("*.json") if p.is_file())


def _walk(value: Any, where: str = "", depth: int = 0):
    """Yield ``(key path, key, value, parent dict, depth)`` for every dict entry in a parsed JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, key, item, value, depth
            yield from _walk(item, path, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{where}[{index}]", depth + 1)


def _load_time(key: str, depth: int) -> bool:
    # top level, or one level down (a processor_config.json holds its sub-processors' configs)
    return key in LOAD_TIME_KEYS and depth <= 1


def state_of(data: Any, name: str) -> list[str]:
    """Findings in one parsed JSON document named ``name`` (see :func:`local_state`)."""
    found = []
    for path, key, value, _, depth in _walk(data):
        if _load_time(key, depth):
            found.append(f"{name}: {path} = {value!r} (load-time flag)")
        elif is_local_path(value):
            found.append(f"{name}: {path} = {value!r} (local path)")
    for index, value in enumerate(data if isinstance(data, list) else []):
        if is_local_path(value):
            found.append(f"{name}: [{index}] = {value!r} (local path)")
    return found


def local_state(folder: str | os.PathLike) -> list[str]:
    """What the JSON files of a saved model still carry from the saving machine: load-time flags, local paths."""
    folder = Path(folder)
    found = []
    for file in json_files(folder):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        found += state_of(data, file.relative_to(folder).as_posix())
    return found


def scrub_json(data: Any, name: str, base_model_id: str | None = None) -> list[str]:
    """Remove load-time state from one parsed JSON document in place; returns what changed (see the module doc)."""
    changes = []
    for path, key, value, parent, depth in list(_walk(data)):
        if _load_time(key, depth) and key in parent:
            del parent[key]
            changes.append(f"{name}: removed {path}")
        elif key == BASE_KEY and isinstance(value, str) and (base_model_id or is_local_path(value)):
            hub_id = base_model_id or cache_hub_id(value)
            if hub_id and hub_id != value:
                parent[key] = hub_id
                changes.append(f"{name}: {path} -> {hub_id!r}")
        elif key in SOURCE_KEYS and is_local_path(value) and key in parent:
            del parent[key]
            changes.append(f"{name}: removed {path} (local path)")
    return changes


def scrub_saved_model(folder: str | os.PathLike, base_model_id: str | None = None) -> list[str]:
    """Scrub every JSON file of a saved model folder in place (see the module doc); returns what changed.

    ``base_model_id`` rewrites an adapter's ``base_model_name_or_path`` to that Hub id (default: only a path
    inside the active Hugging Face cache is rewritten, to the id it was downloaded as).
    """
    folder = Path(folder)
    changes = []
    for file in json_files(folder):
        try:
            text = file.read_text(encoding="utf-8")
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        changed = scrub_json(data, file.relative_to(folder).as_posix(), base_model_id)
        if changed:
            indent = 4 if text.startswith("{\n    ") else 2  # keep the file's own layout
            file.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
            changes += changed
    return changes
