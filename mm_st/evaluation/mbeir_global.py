"""M-BEIR's union (global) pool as mteb tasks: each task's queries against every candidate of every task.

MM-Embed (arXiv 2411.02571) measures modality bias where it appears: UniIR's union candidate pool
(``cand_pool/global/mbeir_union_test_cand_pool.jsonl``, 5.6M candidates of all tasks and all modalities;
``mbeir_union_val_cand_pool.jsonl`` for the val split). ``MMST-MBEIR-global-<name>`` ranks the queries of
the local task ``MMST-MBEIR-<name>`` (:mod:`mm_st.evaluation.mbeir`: same query file, reader, checks,
Recall@k and ``wrong_modality_at_1``) against that pool. The benchmark ``M-BEIR-global`` holds one task
per query file of the root (``$MM_ST_MBEIR_DATA``), or M-BEIR's 16 when no root is set.

The document side does not go through mteb's exhaustive search (all document embeddings in memory,
once per task). :class:`UnionPoolSearch`, mteb's ``SearchProtocol``, encodes the pool ONCE per model,
pool file and document instruction into :mod:`mm_st.mining.store`'s resumable, checksummed chunk cache on
disk (``cache_dir=`` / ``$MM_ST_MBEIR_CACHE``, default ``<HF_HOME>/mm_st/mbeir-union-embeddings``), shared
by every task of the process, and ranks with :func:`mm_st.mining.search.search` one chunk at a time:
memory is ``chunk_size`` document rows plus the queries, never the pool. The pool itself is streamed once
into a memory-mapped Arrow file and id index in the same cache folder (:func:`union_pool`): mteb's corpus
and the id -> modality map hold no Python object per candidate. Scores are cosine similarities.

Example:
    >>> from mm_st.evaluation.mbeir_global import global_tasks
    >>> [t.metadata.name for t in global_tasks(["VisualNews_t2i"], data="/path/to/M-BEIR")]
    ['MMST-MBEIR-global-VisualNews_t2i']
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.types import PromptType

from mm_st.data.mbeir import MBEIRRow, candidate_rows, pool_rows, query_rows
from mm_st.evaluation import data as eval_data
from mm_st.evaluation.mbeir_files import (
    EMOJI_FILES,
    GLOBAL_PREFIX,
    MBEIR_LOCAL_FILES,
    MODALITIES,
    PREFIX,
    UNION_POOL,
    MBEIRTaskFiles,
    category_letters,
    paper_metric,
)
from mm_st.evaluation.mbeir_local import MBEIR_TASK_CLASSES, MBEIRLocalTask, local_task_names
from mm_st.evaluation.tasks import FEATURES, check_modalities, module_getattr
from mm_st.mining.search import TorchSearch, normalized, search
from mm_st.mining.store import encode_chunked, model_fingerprint

__all__ = ["MBEIR_GLOBAL_TASKS", "MBEIR_GLOBAL_TASK_CLASSES", "MBEIRGlobalTask", "UnionPoolSearch", "default_cache_dir",
           "eval_task_names", "global_task_names", "global_tasks", "has_union_pool", "ranked", "union_pool"]
CACHE_ENV = "MM_ST_MBEIR_CACHE"
DEFAULT_CHUNK_SIZE = 16384  # document rows per cache file and per search step
QUERY_CHUNK_SIZE = 1024


def default_cache_dir() -> Path:
    """``$MM_ST_MBEIR_CACHE``, else ``<HF_HOME>/mm_st/mbeir-union-embeddings``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "mm_st" / "mbeir-union-embeddings"


def has_union_pool(root: str | os.PathLike, split: str = "test") -> bool:
    return (Path(root) / UNION_POOL.format(split=split)).is_file()


def query_file(files: MBEIRTaskFiles, split: str) -> str:
    """The task's query file of ``split`` (``query/val/mbeir_<stem>_val.jsonl`` for val)."""
    return files.query_file.replace("/test/", f"/{split}/").replace("_test.jsonl", f"_{split}.jsonl")


# ----------------------------------------------------------------------------------------------
# The union pool, read once per process
# ----------------------------------------------------------------------------------------------


@dataclass
class UnionPool:
    corpus: Any  # datasets.Dataset: id, text, image (the whole pool), memory-mapped from the pool's Arrow file
    modality: PoolModality  # candidate id -> modality, memory-mapped
    fingerprint: str  # the pool file's name, size and modification time


class PoolModality(Mapping[str, str]):
    """``{candidate id: modality}`` of a pool written by :func:`write_pool`, without a Python object per
    candidate: ids are looked up by a 64-bit hash (sorted, memory-mapped) and confirmed in the Arrow id column."""

    def __init__(self, ids: Any, folder: Path) -> None:
        self._ids = ids  # pyarrow ChunkedArray of the pool's ids, in row order
        self._hashes, self._rows, self._codes = (np.load(folder / f, mmap_mode="r") for f in _INDEX_FILES)

    def row(self, did: str) -> int | None:
        """The pool row of ``did``, None when it is not in the pool."""
        hashes, key = self._hashes, np.uint64(_id_hash(did))
        at = int(np.searchsorted(hashes, key))
        while at < len(hashes) and hashes[at] == key:
            if self._ids[int(self._rows[at])].as_py() == did:
                return int(self._rows[at])
            at += 1
        return None

    def __getitem__(self, did: str) -> str:
        row = self.row(did) if isinstance(did, str) else None
        if row is None:
            raise KeyError(did)
        return MODALITIES[self._codes[row]]

    def __contains__(self, did: object) -> bool:
        return isinstance(did, str) and self.row(did) is not None

    def __len__(self) -> int:
        return len(self._codes)

    def __iter__(self) -> Iterator[str]:
        return _values(self._ids)

    def values(self) -> Iterator[str]:  # type: ignore[override]
        return (MODALITIES[code] for code in self._codes)


POOL_FORMAT = 1  # bump when write_pool's output changes
POOL_BATCH = 8192  # pool rows checked and written at a time
_ARROW_FILE = "pool.arrow"
_INDEX_FILES = ("id-hashes.npy", "id-rows.npy", "modality.npy")  # sorted id hashes, their rows, modality per row


def _values(column: Any) -> Iterator[Any]:
    """An Arrow column's values, one chunk at a time (not one Python list of the whole pool)."""
    for chunk in column.chunks:
        yield from chunk.to_pylist()


def _id_hash(did: str) -> int:
    return int.from_bytes(hashlib.blake2b(did.encode(), digest_size=8).digest(), "little")


def _batches(rows: Iterator[MBEIRRow], size: int) -> Iterator[list[MBEIRRow]]:
    """The rows, at most ``size`` at a time."""
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_pool(task: MBEIRLocalTask, root: Path, relative: str, images: Path, folder: Path) -> None:
    """Check the pool's rows batch by batch (read by :func:`mm_st.data.mbeir.candidate_rows`, as the local tasks
    do) and write them into ``folder``: an Arrow file (mteb's corpus, memory-mapped later) and the id index of
    :class:`PoolModality`. A repeated candidate id is refused or, for an identical copy, read once, as
    :func:`~mm_st.data.mbeir.pool_rows` does (:func:`_repeated_rows`). Memory: one batch of rows plus 9 bytes per
    candidate (id hash, modality) until the index is saved."""
    path = eval_data.mbeir_file(root, relative)
    hashes, codes = _write_rows(task, candidate_rows(path), relative, images, folder)
    repeated = _repeated_rows(path, hashes, folder)
    if repeated:  # identical copies (rare): the pool is written again without them
        rows = (row for row in candidate_rows(path) if row.index not in repeated)
        hashes, codes = _write_rows(task, rows, relative, images, folder)
    order = np.argsort(hashes, kind="stable")
    for name, array in zip(_INDEX_FILES, (hashes[order], order, codes)):
        np.save(folder / name, array)


def _write_rows(task: MBEIRLocalTask, rows: Iterator[MBEIRRow], relative: str, images: Path,
                folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The checked rows written to the pool's Arrow file in ``folder``: (id hash, modality code) per written row."""
    from datasets.arrow_writer import ArrowWriter

    hashes, codes, where = [], [], f"{relative} row"
    with ArrowWriter(features=FEATURES, path=str(folder / _ARROW_FILE)) as writer:
        for batch in _batches(rows, POOL_BATCH):
            checked = (task._candidate(row.data, where, row.index) for row in batch)
            ids, modality, texts, paths = map(list, zip(*checked))
            files = task._files(ids, texts, paths, images, "document", where, batch[0].index)
            writer.write_batch(FEATURES.encode_batch({"id": ids, "text": texts, "image": files}))
            hashes.append(np.fromiter((_id_hash(did) for did in ids), np.uint64, len(ids)))
            codes.append(np.array([MODALITIES.index(m) for m in modality], np.uint8))
        if not hashes:
            raise ValueError(f"{task.metadata.name}: the union pool {relative} holds no candidate.")
        writer.finalize()
    return np.concatenate(hashes), np.concatenate(codes)


def _repeated_rows(path: Path, hashes: np.ndarray, folder: Path) -> set[int]:
    """The rows whose candidate an earlier row is, identical: only the rows sharing an id hash are read again,
    through :func:`~mm_st.data.mbeir.pool_rows`, which refuses an id given different content (naming both rows
    and lines) and yields the first of identical copies."""
    order = np.argsort(hashes, kind="stable")
    shared = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
    if not len(shared):
        return set()
    import datasets

    rows = set(order[np.union1d(shared, shared + 1)].tolist())
    column = datasets.Dataset.from_file(str(folder / _ARROW_FILE)).data.column("id")
    ids = {column[row].as_py() for row in rows}
    return rows - {row.index for row in pool_rows([path], keep=ids)}


_POOLS: OrderedDict[tuple, UnionPool] = OrderedDict()
_POOLS_KEPT = 2  # the val and the test pool


def union_pool(task: MBEIRGlobalTask, root: Path, images: Path, split: str) -> UnionPool:
    """The union pool of ``split``: streamed, checked and written to disk by the first task that needs it
    (``<cache folder>/pool-<hash>/``, reused while the pool file is unchanged), then memory-mapped and shared."""
    relative = UNION_POOL.format(split=split)
    path = root / relative
    if not path.is_file():
        raise eval_data.DataLayoutError(
            f"{task.metadata.name}: M-BEIR union pool missing: {str(path)!r} (UniIR's global candidate pool of the "
            f"{split} split).\n{eval_data.MBEIR_LAYOUT}")
    fingerprint = f"{relative}:{eval_data.fingerprint([path])}"
    identity = json.dumps([POOL_FORMAT, str(path.resolve()), str(images.resolve()), fingerprint])
    folder = task.cache_folder() / f"pool-{hashlib.sha256(identity.encode()).hexdigest()[:24]}"
    key = (str(folder), fingerprint)
    if key not in _POOLS or not folder.is_dir():
        if not folder.is_dir():
            _write_atomically(folder, lambda out: write_pool(task, root, relative, images, out))
        import datasets

        corpus = datasets.Dataset.from_file(str(folder / _ARROW_FILE))
        _POOLS[key] = UnionPool(corpus, PoolModality(corpus.data.column("id"), folder), fingerprint)
        while len(_POOLS) > _POOLS_KEPT:
            _POOLS.popitem(last=False)
    _POOLS.move_to_end(key)
    return _POOLS[key]


def _write_atomically(folder: Path, write: Any) -> None:
    """``write(temporary folder)``, then the folder renamed to ``folder``; on an error nothing is left."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".partial-"))
    try:
        write(partial)
        os.replace(partial, folder)
    except OSError:
        if not folder.is_dir():  # another process finished first: theirs is kept
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The search: documents encoded once into the on-disk store, ranked chunk by chunk
# ----------------------------------------------------------------------------------------------


# (cache folder, fingerprint) -> mm_st.mining.store.Embeddings (memory-mapped): later tasks of the process skip
# re-reading and re-hashing the chunk files
_STORES: OrderedDict[tuple[str, str], Any] = OrderedDict()


def forget_stores(cache_dir: str | os.PathLike) -> None:
    """Drop the process's stores kept from ``cache_dir`` (before the folder is removed)."""
    for key in [k for k in _STORES if k[0] == str(Path(cache_dir))]:
        del _STORES[key]


class _DocumentEncoder:
    """What :func:`mm_st.mining.store.encode_chunked` calls: rows of the pool (by index) through the mteb encoder."""

    def __init__(self, encoder: Any, corpus: Any, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
                 encode_kwargs: dict[str, Any]) -> None:
        self.encoder, self.corpus, self.task_metadata = encoder, corpus, task_metadata
        self.hf_split, self.hf_subset, self.encode_kwargs = hf_split, hf_subset, encode_kwargs

    def encode_document(self, indices: list[int], **_: Any) -> np.ndarray:
        rows = self.corpus.select(indices).flatten_indices(keep_in_memory=True)  # mteb's map stays in memory
        return _encode(self.encoder, rows, self.task_metadata, PromptType.document,
                       self.hf_split, self.hf_subset, self.encode_kwargs)


def _encode(encoder: Any, rows: Any, task_metadata: TaskMetadata, side: PromptType, hf_split: str, hf_subset: str,
            encode_kwargs: dict[str, Any]) -> np.ndarray:
    from mteb._create_dataloaders import create_dataloader

    loader = create_dataloader(rows, task_metadata=task_metadata, prompt_type=side, **encode_kwargs)
    out = encoder.encode(loader, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset, prompt_type=side,
                         **encode_kwargs)
    return np.asarray(out, dtype=np.float32)


def _model_identity(encoder: Any) -> dict[str, Any]:
    """What identifies the encoder's embeddings: its name, revision and :func:`mm_st.mining.store.model_fingerprint`."""
    meta = encoder.mteb_model_meta
    return {"name": meta.name, "revision": meta.revision, **model_fingerprint(getattr(encoder, "model", encoder))}


def _document_side(encoder: Any, task_metadata: TaskMetadata) -> dict[str, Any]:
    """What the encoder's document embeddings depend on besides the model: an mm_st encoder's document
    instruction (shared by tasks whose instruction is the same), else the task itself (nothing shared)."""
    if hasattr(encoder, "instruction"):
        return {"instruction": encoder.instruction(task_metadata, PromptType.document)}
    return {"task": task_metadata.name}


class UnionPoolSearch:
    """mteb ``SearchProtocol`` for the union-pool tasks: the pool encoded once into an on-disk chunk store
    (:func:`mm_st.mining.store.encode_chunked`), queries ranked chunk by chunk (:func:`mm_st.mining.search.search`).

    Args:
        encoder: an mteb encoder (e.g. :class:`~mm_st.evaluation.model.MMSTEncoder`) with cosine similarity.
        pool_fingerprint: identifies the pool file (its embeddings are reused only for the same file).
        cache_dir: where the chunk files go (default :func:`default_cache_dir`).
        chunk_size: document rows per chunk file and per search step.
    """

    def __init__(self, encoder: Any, pool_fingerprint: str, cache_dir: str | os.PathLike | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, query_chunk_size: int = QUERY_CHUNK_SIZE) -> None:
        similarity = getattr(encoder.mteb_model_meta, "similarity_fn_name", None)
        if similarity not in (None, "cosine"):
            raise ValueError(f"Model {encoder.mteb_model_meta.name!r} scores with {similarity!r}; the union-pool "
                             "search ranks by cosine similarity only.")
        self.encoder, self.pool_fingerprint = encoder, pool_fingerprint
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.chunk_size, self.query_chunk_size = chunk_size, query_chunk_size
        self.store, self.ids = None, None

    @property
    def mteb_model_meta(self) -> Any:
        return self.encoder.mteb_model_meta

    def device(self) -> torch.device:
        return torch.device(getattr(getattr(self.encoder, "model", None), "device", "cpu"))

    def index(self, corpus: Any, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
              encode_kwargs: dict[str, Any], num_proc: int | None = None, **kwargs: Any) -> None:
        info = {"pool": self.pool_fingerprint, "model": _model_identity(self.encoder),
                **_document_side(self.encoder, task_metadata)}
        key = (str(self.cache_dir),
               hashlib.sha256(json.dumps([info, self.chunk_size], sort_keys=True, default=str).encode()).hexdigest())
        self.ids = corpus.select_columns(["id"])  # looked up per result row only
        if key not in _STORES:
            documents = _DocumentEncoder(self.encoder, corpus, task_metadata, hf_split, hf_subset, encode_kwargs)
            ids = _values(self.ids.data.column("id"))
            _STORES[key] = encode_chunked(documents, range(len(corpus)), "corpus", len(corpus), ids, self.chunk_size,
                                          self.cache_dir, info, {}, encode_kwargs.get("batch_size", 32),
                                          show_progress_bar=False)
            while len(_STORES) > 2:
                _STORES.popitem(last=False)
        self.store = _STORES[key]

    def search(self, queries: Any, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str, top_k: int,
               encode_kwargs: dict[str, Any], top_ranked: Any = None, num_proc: int | None = None,
               **kwargs: Any) -> dict[str, dict[str, float]]:
        if self.store is None:
            raise ValueError("UnionPoolSearch: index() the pool before searching.")
        array = _encode(self.encoder, queries, task_metadata, PromptType.query, hf_split, hf_subset, encode_kwargs)
        device = self.device()
        Q = normalized(torch.from_numpy(array.copy()), "query", 0).to(device)
        scores, found = ranked(Q, self.store, top_k, self.query_chunk_size,
                               TorchSearch(self.query_chunk_size, self.chunk_size, device))
        ids = self.ids[found.clamp_min(0).flatten().tolist()]["id"]  # one look-up for all results
        out, width = {}, found.size(1)
        for row, (qid, row_scores, row_found) in enumerate(zip(queries[:]["id"], scores.tolist(), found.tolist())):
            names = ids[row * width : (row + 1) * width]
            out[qid] = {name: score for name, score, index in zip(names, row_scores, row_found) if index >= 0}
        return out


def ranked(Q: torch.Tensor, store: Any, top_k: int, query_chunk_size: int, searcher: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``top_k`` (cosine scores, pool rows) per query over the whole store, nothing excluded."""
    size = len(store)
    return search(Q, store, min(top_k, size), group=np.arange(size), is_duplicate=np.zeros(size, dtype=bool),
                  excluded=np.full((Q.size(0), 1), -1), query_chunk_size=query_chunk_size, searcher=searcher,
                  show_progress_bar=False)


# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------


class MBEIRGlobalTask(MBEIRLocalTask):
    """One M-BEIR task's queries against the union pool of their split (every candidate, every modality).

    Same queries, checks and scores as :class:`~mm_st.evaluation.mbeir.MBEIRLocalTask` (Recall@k at 1, 5, 10,
    20, 50, ``wrong_modality_at_1``); splits ``test`` (default) and ``val`` (``filter_eval_splits(["val"])``).

    Args:
        cache_dir: where the pool's embeddings are cached (default :func:`default_cache_dir`).
        chunk_size: pool rows per cache file and per search step.
    """

    files: ClassVar[MBEIRTaskFiles]

    def __init__(self, data: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE, **kwargs: Any) -> None:
        super().__init__(data=data, image_root=image_root, **kwargs)
        self.cache_dir, self.chunk_size = cache_dir, chunk_size
        self.pool_fingerprints: dict[str, str] = {}

    def cache_folder(self) -> Path:
        """Where the pool's Arrow file and embeddings go: ``cache_dir``, else :func:`default_cache_dir`."""
        return Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()

    def build(self) -> dict:
        root = eval_data.mbeir_dir(self.source())
        images = self.data_source.images(self.image_root, [root])
        splits, self.pool_modalities = {}, {}
        for split in self.eval_splits:
            pool = union_pool(self, root, images, split)
            rows = [row.data for row in query_rows(eval_data.mbeir_file(root, query_file(self.files, split)))]
            queries, relevant = self._queries(rows, pool.modality, images, query_file(self.files, split),
                                              UNION_POOL.format(split=split))
            self.pool_modalities[split], self.pool_fingerprints[split] = pool.modality, pool.fingerprint
            splits[split] = {"queries": queries, "corpus": pool.corpus, "relevant_docs": relevant, "top_ranked": None}
            self.candidate_counts = {"pool": len(pool.modality), "queries": len(relevant)}
        return {"default": splits}

    def evaluate(self, model, split: str = "test", subsets_to_run=None, **kwargs):
        check_modalities(model, self.metadata)
        if not self.data_loaded:
            self.load_data()
        if not hasattr(model, "search"):  # an encoder: searched through the shared on-disk store
            model = UnionPoolSearch(model, self.pool_fingerprints[split], self.cache_dir, self.chunk_size)
        return super().evaluate(model, split, subsets_to_run, **kwargs)


def _global_metadata(files: MBEIRTaskFiles) -> TaskMetadata:
    local = MBEIR_TASK_CLASSES[files.name].metadata
    pool = UNION_POOL.format(split="test")
    return local.model_copy(update=dict(
        name=GLOBAL_PREFIX + files.name,
        description=f"M-BEIR {files.name} over a local M-BEIR root: the queries of {files.query_file} ranked against "
                    f"UniIR's union pool {pool} (every task's candidates, all modalities), as MM-Embed measures "
                    "modality bias; Recall@k and the wrong-modality top-1 rate.",
        category=f"{category_letters(files.modalities[0])}2it",  # documents: the union pool (images, texts, pairs)
        modalities=["image", "text"],
        main_score=paper_metric(files) if files.mteb_task is not None else "recall_at_1",
    ))


def _global_class(files: MBEIRTaskFiles) -> type[MBEIRGlobalTask]:
    class_name = "MBEIRGlobal" + "".join(ch for ch in files.name if ch.isalnum())
    return type(class_name, (MBEIRGlobalTask,),
                {"metadata": _global_metadata(files), "files": files, "__module__": __name__})


# keyed "global-<name>", as mm_st.evaluation.mbeir.mbeir_tasks shortens "MMST-MBEIR-global-<name>"
MBEIR_GLOBAL_TASK_CLASSES: dict[str, type[MBEIRGlobalTask]] = {
    GLOBAL_PREFIX[len(PREFIX):] + f.name: _global_class(f) for f in (*MBEIR_LOCAL_FILES, *EMOJI_FILES)}
MBEIR_GLOBAL_TASKS: dict[str, str] = {GLOBAL_PREFIX + f.name: paper_metric(f) for f in MBEIR_LOCAL_FILES}  # name -> paper metric
TASK_CLASSES_BY_CLASS_NAME: dict[str, type[MBEIRGlobalTask]] = {
    cls.__name__: cls for cls in MBEIR_GLOBAL_TASK_CLASSES.values()}
__all__ += [*TASK_CLASSES_BY_CLASS_NAME]

__getattr__ = module_getattr(__name__, TASK_CLASSES_BY_CLASS_NAME)  # MBEIR...: listed in __all__


def global_task_names(root: str | os.PathLike, split: str = "test") -> list[str]:
    """``global-<name>`` of every task whose query file of ``split`` is in ``root`` (none without a union pool)."""
    if not has_union_pool(root, split):
        return []
    return [name for name, cls in MBEIR_GLOBAL_TASK_CLASSES.items() if (Path(root) / query_file(cls.files, split)).is_file()]


def eval_task_names(root: str | os.PathLike) -> list[str] | None:
    """For a training recipe's held-out evaluation: every local and union-pool task of ``root`` when it has a
    union test pool, else None (the local tasks, the default)."""
    if not has_union_pool(root):
        return None
    return local_task_names(Path(root)) + global_task_names(root)


def _key(name: str) -> str:
    """``"global-<name>"`` of a task name, a ``load_mbeir`` name or a key."""
    short = name.removeprefix(PREFIX)
    return short if short.startswith("global-") else "global-" + short


def global_tasks(names: list[str] | None = None, data: str | os.PathLike | None = None,
                 image_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[MBEIRGlobalTask]:
    """Union-pool task instances: ``names`` as ``load_mbeir`` names them (``"VisualNews_t2i"``) or task names;
    default every task of the root ``data`` (``$MM_ST_MBEIR_DATA``) that has a query file."""
    if names is None:
        root = eval_data.mbeir_dir(eval_data.SOURCES["mbeir"].resolve(data))
        keys = global_task_names(root)
        if not keys:
            raise eval_data.DataLayoutError(
                f"No M-BEIR union-pool task in {str(root)!r}: it needs {UNION_POOL.format(split='test')} and a "
                f"query/test/mbeir_*_test.jsonl file that a known task reads.\n{eval_data.MBEIR_LAYOUT}")
    else:
        keys = [_key(n) for n in names]
    unknown = [n for n, k in zip(names or keys, keys) if k not in MBEIR_GLOBAL_TASK_CLASSES]
    if unknown:
        raise ValueError(f"Unknown M-BEIR union-pool task(s) {unknown}. Known: "
                         f"{', '.join(GLOBAL_PREFIX + c.files.name for c in MBEIR_GLOBAL_TASK_CLASSES.values())}.")
    return [MBEIR_GLOBAL_TASK_CLASSES[k](data=data, image_root=image_root, cache_dir=cache_dir, chunk_size=chunk_size)
            for k in keys]
