"""Fingerprints of the files a multi-stage run reads: a stage's data and the saved model that mines its negatives.

They decide what a re-run reuses (``stages.json``'s ``data``, ``mining.json``'s ``key``): a changed fingerprint means
the stage's inputs changed. They hash file bytes, so a copy of the same data or model elsewhere has the same
fingerprint. :func:`saved_model_fingerprint` identifies a saved model *folder* by its safetensors files, before it
is loaded (the mining model in ``mining.json``'s key: a set of mined negatives is reused without loading the model
that mined it); :func:`mm_st.mining.store.model_fingerprint` identifies a *loaded* model (class, configs, prompts, a
weight sample) for the embedding cache. Both are kept, with their values: each keys caches already written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def files_fingerprint(paths: list[Path]) -> str:
    """sha256 of files' names and bytes (data a stage read), 16 hex digits."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def mbeir_fingerprint(root: str, split: str) -> str:
    """What an M-BEIR root's ``split`` holds (query files, the split's pool files and instructions), or the Hub id."""
    from mm_st.data.mbeir import mbeir_pool_files, mbeir_query_files
    from mm_st.io import is_local

    if not is_local(root):
        return f"hub:{root}"
    base = Path(root)
    files = [*mbeir_query_files(base, split), *mbeir_pool_files(base, split),
             *(base / "instructions").glob("*.tsv")]
    return files_fingerprint(files)


def saved_model_fingerprint(folder: str) -> str:
    """What a saved model folder's weights are (safetensors files)."""
    files = list(Path(folder).glob("*.safetensors"))
    return files_fingerprint(files) if files else f"model:{folder}"
