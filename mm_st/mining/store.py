"""Embedding store: chunked embeddings, encoded with a resumable, checksummed on-disk cache.

:func:`encode_chunked` encodes inputs ``chunk_size`` at a time. With a ``cache_dir`` each finished
chunk is saved as ``<cache_dir>/<role>-<fingerprint>/chunk-NNNNNN.npy`` (temporary file, then
rename) and its sha256 is recorded in the folder's ``manifest.json``; a rerun memory-maps every chunk
whose file matches its recorded sha256 and re-encodes (with a warning naming it) a chunk that is
unreadable, of the wrong shape, or does not match its checksum. A chunk without a recorded checksum
(a cache written before checksums existed, or a run stopped between writing the chunk and the
manifest) is re-encoded too: it cannot be verified. The fingerprint covers the model (class, module
description, config, prompts, a strided sample of every weight), the prompts, the inputs' content
hashes in order and ``chunk_size``.

Example:
    >>> import numpy as np
    >>> from mm_st.mining.store import Embeddings
    >>> store = Embeddings.from_array(np.arange(10, dtype=np.float32).reshape(5, 2), chunk_size=2)
    >>> [start for start, _ in store.chunks()], store.gather(np.array([4, 0])).tolist()
    ([0, 2, 4], [[8.0, 9.0], [0.0, 1.0]])
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = ["CACHE_FORMAT", "ChunkCache", "Embeddings", "as_matrix", "encode_chunked", "model_fingerprint"]

CACHE_FORMAT = "mm_st.mining.embeddings/1"


class Embeddings:
    """Row blocks (in-memory arrays or memory-mapped cache files) read chunk by chunk."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(part) for part in parts])
        self.dim = int(parts[0].shape[1]) if parts else 0

    @classmethod
    def from_array(cls, array: np.ndarray, chunk_size: int) -> Embeddings:
        return cls([array[start : start + chunk_size] for start in range(0, len(array), chunk_size)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def chunks(self):
        """Yield ``(first row, block)`` per block."""
        for start, part in zip(self.offsets[:-1], self.parts):
            yield int(start), part

    def gather(self, indices: np.ndarray) -> np.ndarray:
        """The rows ``indices`` as one float32 array."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), dtype=np.float32)
        part_of = np.searchsorted(self.offsets, indices, side="right") - 1
        for part in np.unique(part_of):
            mask = part_of == part
            out[mask] = self.parts[part][indices[mask] - self.offsets[part]]
        return out


def as_matrix(value: Any, name: str) -> np.ndarray:
    """Precomputed embeddings (numpy or torch) as a float32 ``(rows, dim)`` array."""
    if isinstance(value, torch.Tensor):
        array = value.detach().to("cpu", torch.float32).numpy()
    else:
        array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, dim), got shape {tuple(array.shape)}.")
    return array


def model_fingerprint(model: Any) -> dict[str, Any]:
    """What identifies a model's embeddings: class, module description, config, prompts, weight sample."""
    info: dict[str, Any] = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    info["description"] = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(model))
    info["prompts"] = getattr(model, "prompts", None)
    info["default_prompt_name"] = getattr(model, "default_prompt_name", None)
    configs, seen = [], set()
    if isinstance(model, torch.nn.Module):
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is not None and hasattr(config, "to_json_string") and id(config) not in seen:
                seen.add(id(config))
                configs.append(config.to_json_string(use_diff=False))
        digest = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].to("cpu", torch.float64).numpy()
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode() + sample.tobytes())
        info["weights_sample_sha256"] = digest.hexdigest()
    info["configs_sha256"] = hashlib.sha256("\n".join(configs).encode()).hexdigest()
    return info


def encode_chunked(model: Any, items: Any, role: str, num: int, keys: list[Any], chunk_size: int,
                   cache_dir: Any, model_info: dict | None, prompts: dict, batch_size: int,
                   show_progress_bar: bool) -> Embeddings:
    """Encode ``items[:num]`` chunk by chunk (normalised); with ``cache_dir``, save / reuse each finished chunk.

    ``role`` is ``"query"`` (``model.encode_query``) or ``"corpus"`` (``model.encode_document``);
    ``keys`` are the inputs' content hashes, in order, for the cache fingerprint.
    """
    encode = getattr(model, "encode_query" if role == "query" else "encode_document", None) or model.encode
    cache = None
    if cache_dir is not None:
        content = hashlib.sha256()
        for key in keys:
            content.update(f"{key};".encode())
        cache = ChunkCache.open(cache_dir, {
            "format": CACHE_FORMAT, "role": role, "model": model_info, "prompts": prompts, "normalized": True,
            "num_inputs": num, "chunk_size": chunk_size, "content_sha256": content.hexdigest()})
    parts, reused, dim = [], 0, None
    with tqdm(total=num, desc=f"Encoding {role}", unit="input", disable=not show_progress_bar) as bar:
        for number, start in enumerate(range(0, num, chunk_size)):
            end = min(start + chunk_size, num)
            array = cache.load(number, end - start, dim) if cache is not None else None
            if array is None:
                array = np.asarray(encode([items[index] for index in range(start, end)], batch_size=batch_size,
                                          normalize_embeddings=True, convert_to_numpy=True,
                                          show_progress_bar=False, **prompts), dtype=np.float32)
                if array.ndim != 2 or array.shape[0] != end - start:
                    raise ValueError(f"The model returned embeddings of shape {array.shape} for {end - start} {role} inputs.")
                if cache is not None:
                    array = cache.save(number, array)
            else:
                reused += 1
            dim = array.shape[1]
            parts.append(array)
            bar.update(end - start)
    if cache is not None:
        logger.info("%s embeddings: %d chunk(s) reused from %s, %d encoded.", role, reused, cache.folder,
                    len(parts) - reused)
    return Embeddings(parts)


class ChunkCache:
    """One cache folder: ``chunk-NNNNNN.npy`` files and a ``manifest.json`` (fingerprint, per-chunk sha256)."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, fingerprint: dict[str, Any]) -> ChunkCache:
        """The folder of ``fingerprint`` (created with its manifest if new)."""
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
        folder = Path(cache_dir) / f"{fingerprint['role']}-{digest[:24]}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "manifest.json"
        if path.exists():
            manifest = json.loads(path.read_text())
            if manifest.get("fingerprint_sha256") != digest:
                raise ValueError(f"Cache folder {folder} holds embeddings of other inputs or another model; remove it.")
        else:
            num_chunks = -(-fingerprint["num_inputs"] // fingerprint["chunk_size"])
            manifest = {**fingerprint, "fingerprint_sha256": digest, "num_chunks": num_chunks, "chunk_sha256": {}}
            _atomic_write(path, json.dumps(manifest, indent=1, default=str).encode())
        return cls(folder, manifest)

    def path(self, number: int) -> Path:
        return self.folder / f"chunk-{number:06d}.npy"

    def load(self, number: int, rows: int, dim: int | None) -> np.ndarray | None:
        """Chunk ``number`` memory-mapped, or None (absent, or to be re-encoded: a warning says why)."""
        path = self.path(number)
        if not path.exists():
            return None
        expected = self.manifest.get("chunk_sha256", {}).get(path.name)
        if expected is None:
            logger.warning("Re-encoding cache chunk %s: the manifest records no checksum for it (a cache from "
                           "before checksums, or a run stopped before recording it).", path)
            return None
        actual = _file_sha256(path)
        if actual != expected:
            logger.warning("Re-encoding cache chunk %s: its sha256 %s does not match the manifest's %s "
                           "(the file was changed or damaged).", path, actual[:16], expected[:16])
            return None
        try:
            array = np.load(path, mmap_mode="r")
        except Exception as exc:  # a damaged file is re-encoded
            logger.warning("Re-encoding unreadable cache chunk %s (%s).", path, exc)
            return None
        if array.ndim != 2 or array.shape[0] != rows or array.dtype != np.float32 or (dim is not None and array.shape[1] != dim):
            logger.warning("Re-encoding cache chunk %s: shape %s, expected %d rows.", path, array.shape, rows)
            return None
        return array

    def save(self, number: int, array: np.ndarray) -> np.ndarray:
        """Write chunk ``number``, then record its sha256 in the manifest; return it memory-mapped."""
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.float32))
        data = buffer.getvalue()
        path = self.path(number)
        _atomic_write(path, data)
        manifest_path = self.folder / "manifest.json"
        checksums = json.loads(manifest_path.read_text()).get("chunk_sha256", {})  # as on disk: another run may
        checksums[path.name] = hashlib.sha256(data).hexdigest()  # have recorded chunks since open()
        self.manifest = {**self.manifest, "chunk_sha256": dict(sorted(checksums.items()))}
        _atomic_write(manifest_path, json.dumps(self.manifest, indent=1, default=str).encode())
        return np.load(path, mmap_mode="r")


def _file_sha256(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
