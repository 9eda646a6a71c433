"""M-BEIR retrieval over a local M-BEIR root, with the wrong-modality top-1 rate as an mteb metric.

MM-Embed (arXiv 2411.02571) shows that retrievers built on multimodal LLMs tend to return the wrong
modality from a pool that mixes them (a text when an image is asked for). mteb's own 16 M-BEIR tasks
read Hub copies of each local pool and report no such figure. These tasks read a local M-BEIR root
(the layout :func:`mm_st.data.load_mbeir` reads and ``mm_st.training.embedded.write_mbeir`` writes;
``data=`` or ``$MM_ST_MBEIR_DATA``, images under ``image_root=`` / ``$MM_ST_MBEIR_IMAGES``, default the
root) and add, next to mteb's Recall@k / nDCG@k / MRR ...:

``wrong_modality_at_1``
    the share of queries whose top-1 candidate has a modality (the pool row's ``modality``: ``text``,
    ``image`` or ``image,text``) that none of the query's positives has. Only where the task's pool
    mixes modalities; a task whose pool holds one modality has no such key in its scores (nothing
    can be wrong). Ties at the top go to the first candidate in mteb's ranking.

Tasks are named ``MMST-MBEIR-<name>``, ``<name>`` being what ``load_mbeir`` calls the training set of
the same task (dataset, query -> candidate modality):

- the 16 M-BEIR local-pool test tasks (``MMST-MBEIR-VisualNews_t2i`` ... ``MMST-MBEIR-InfoSeek_it2it``),
  query and pool files as in UniIR's evaluation config (:data:`MBEIR_LOCAL_FILES`); metadata and
  prompt from mteb's task over the same data; main score the paper metric (Recall@5, Recall@10 for
  Fashion200K and FashionIQ). Their categories are mteb's for the same data, one candidate kind per
  pool (a candidate of an undeclared kind is refused, naming the row), so they report the rate only
  where an ``image,text`` pool also holds plain images or texts;
- the five embedded emoji tasks (``MMST-MBEIR-Emoji_t2i``, ``_i2t``, ``_t2t``, ``_i2i``, ``_it2t``) over
  one pool that mixes images and texts; instructions from :data:`mm_st.data.emoji.EMOJI_MBEIR_TASKS`
  (the table the writer puts in the layout's ``query_instructions.tsv``); main score Recall@1.

The task classes live in :mod:`mm_st.evaluation.mbeir_local` (local pools) and :mod:`mm_st.evaluation.mbeir_global`
(the union pool), the file table in :mod:`mm_st.evaluation.mbeir_files`; this module runs them and re-exports their
names. Every query is ranked against its task's whole local pool. Task instructions reach the model as for
mm_st's other tasks (:class:`~mm_st.evaluation.model.MMSTEncoder`: the recipe's own wording where it has
one, e.g. MM-Embed's M-BEIR instructions on queries only, else the task prompt).

For training recipes: :func:`evaluate_mbeir` (per task Recall@k and the wrong-modality rate),
:func:`mbeir_chance` (the same for a random ranking) and :func:`mbeir_table` (both side by side).

Example:
    >>> from mm_st.evaluation import mbeir_tasks
    >>> [t.metadata.name for t in mbeir_tasks(["Emoji_t2i", "VisualNews_t2i"], data="/path/to/M-BEIR")]
    ['MMST-MBEIR-Emoji_t2i', 'MMST-MBEIR-VisualNews_t2i']
    >>> mbeir_tasks(["NIGHTS_i2i"], data="/m")[0].metadata.main_score
    'recall_at_5'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import mteb
from mteb.types import PromptType

from mm_st.evaluation import data as eval_data
from mm_st.evaluation.mbeir_files import (  # noqa: F401  (re-exported: mm_st.evaluation.mbeir is where users import)
    EMOJI_FILES,
    EMOJI_MBEIR_TASK_NAMES,
    GLOBAL_PREFIX,
    MBEIR_LOCAL_FILES,
    MBEIR_LOCAL_TASKS,
    MODALITIES,
    PREFIX,
    UNIIR_CITATION,
    UNIIR_TASKS,
    UNION_POOL,
    WRONG_MODALITY,
    MBEIRTaskFiles,
    category_letters,
    paper_metric,
)
from mm_st.evaluation.mbeir_global import (
    MBEIR_GLOBAL_TASK_CLASSES,
    MBEIRGlobalTask,
    default_cache_dir,
    forget_stores,
    global_task_names,
)
from mm_st.evaluation.mbeir_local import MBEIR_TASK_CLASSES, MBEIRLocalTask, local_task_names, wrong_modality_at_1
from mm_st.evaluation.model import MMSTEncoder



def _short(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def mbeir_tasks(names: Sequence[str] | None = None, data: str | os.PathLike | None = None,
                image_root: str | os.PathLike | None = None, *, with_global: bool = False,
                cache_dir: str | os.PathLike | None = None) -> list[MBEIRLocalTask]:
    """Task instances reading the M-BEIR root ``data`` (default ``$MM_ST_MBEIR_DATA``).

    Args:
        names: ``load_mbeir`` names (``"Emoji_t2i"``) or task names (``"MMST-MBEIR-Emoji_t2i"``), union-pool tasks
            as ``"global-Emoji_t2i"`` / ``"MMST-MBEIR-global-Emoji_t2i"``; default: every task whose query file is
            in the root (the five emoji tasks on the embedded data, the 16 local-pool tasks on M-BEIR), and with
            ``with_global`` also their union-pool tasks when the root has a union test pool
            (:mod:`mm_st.evaluation.mbeir_global`).
        cache_dir: where union-pool tasks cache the pool's embeddings.
    """
    if names is None:
        root = eval_data.mbeir_dir(eval_data.SOURCES["mbeir"].resolve(data))
        names = local_task_names(root) + (global_task_names(root) if with_global else [])
    short = [_short(n) for n in names]
    known = {**MBEIR_TASK_CLASSES, **MBEIR_GLOBAL_TASK_CLASSES}
    unknown = [n for n, s in zip(names, short) if s not in known]
    if unknown:
        raise ValueError(f"Unknown M-BEIR task(s) {unknown}. Known: {', '.join(known)}.")
    return [known[s](data=data, image_root=image_root, **({"cache_dir": cache_dir} if s in MBEIR_GLOBAL_TASK_CLASSES else {}))
            for s in short]


# ----------------------------------------------------------------------------------------------
# For training recipes: scores, chance, a table
# ----------------------------------------------------------------------------------------------

TABLE_METRICS = ("recall_at_1", "recall_at_5", WRONG_MODALITY)


def _tasks(tasks, data, image_root) -> list[MBEIRLocalTask]:
    if tasks is not None and all(isinstance(t, MBEIRLocalTask) for t in tasks):
        return list(tasks)
    return mbeir_tasks(tasks, data=data, image_root=image_root)


def _pool_sharing_encoder(model: Any, **encoder_kwargs: Any) -> Any:
    """An :class:`MMSTEncoder` that encodes a candidate pool once for all tasks ranking against it.

    Document embeddings are reused when the ids, the document modalities and the document instruction the
    model gets (:meth:`MMSTEncoder.instruction`) are the same: the five emoji tasks share one pool.
    """
    class PoolSharingEncoder(MMSTEncoder):
        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
            dataset = getattr(inputs, "dataset", None)
            if (prompt_type != PromptType.document or dataset is None or "id" not in dataset.column_names
                    or task_metadata.name.startswith(GLOBAL_PREFIX)):  # the union pool: shared on disk, in chunks
                return super().encode(inputs, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset,
                                      prompt_type=prompt_type, **kwargs)
            key = (self.instruction(task_metadata, prompt_type), tuple(task_metadata.get_modalities(prompt_type)),
                   tuple(dataset["id"]))
            if key not in self.pools:
                self.pools[key] = super().encode(inputs, task_metadata=task_metadata, hf_split=hf_split,
                                                 hf_subset=hf_subset, prompt_type=prompt_type, **kwargs)
            return self.pools[key]

    encoder = PoolSharingEncoder(model, **encoder_kwargs)
    encoder.pools = {}
    return encoder


def evaluate_mbeir(model: Any, tasks: Sequence[str | MBEIRLocalTask] | None = None, data: str | os.PathLike | None = None,
                   image_root: str | os.PathLike | None = None, *, metrics: Sequence[str] = TABLE_METRICS,
                   encode_kwargs: dict[str, Any] | None = None, results_dir: str | os.PathLike | None = None,
                   model_name: str | None = None, revision: str | None = None,
                   cache_dir: str | os.PathLike | None = None) -> dict[str, dict[str, float | None]]:
    """Score ``model`` on M-BEIR tasks with mteb: ``{task: {metric: value}}``, tasks named as ``load_mbeir`` does.

    Args:
        model: a SentenceTransformer built or trained with mm_st (wrapped in
            :class:`~mm_st.evaluation.model.MMSTEncoder`, so task instructions follow its recipe), or an mteb encoder.
        tasks: names or instances (default: every task in ``data``, see :func:`mbeir_tasks`).
        metrics: keys of mteb's scores to return; ``wrong_modality_at_1`` is None where the pool has one modality.
        encode_kwargs: passed to mteb (default ``{"batch_size": 32}``).
        results_dir: also write mteb's result files there (``mteb.ResultCache``), under ``model_name`` and
            ``revision`` (e.g. a training stage's ``model/eval/``, which model cards read); default: none.
        cache_dir: where union-pool tasks (``global-<name>``) cache the pool's embeddings; default: a temporary
            folder under :func:`mm_st.evaluation.mbeir_global.default_cache_dir`, removed when done.

    Example (the embedded data and a tiny model)::

        root = write_mbeir("data/mbeir-eval", split="test")      # mm_st.training.embedded
        evaluate_mbeir(model, data=root)
        # {'Emoji_t2i': {'recall_at_1': 0.02, 'recall_at_5': 0.07, 'wrong_modality_at_1': 0.72}, ...}
    """
    named = {k: v for k, v in (("name", model_name), ("revision", revision)) if v is not None}
    encoder = (_pool_sharing_encoder(model, **named) if hasattr(model, "encode_query") and not hasattr(model, "mteb_model_meta")
               else model)
    cache = mteb.ResultCache(results_dir) if results_dir is not None else None
    instances = _tasks(tasks, data, image_root)
    quiet = not datasets.utils.are_progress_bars_disabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        with union_pool_cache(instances, cache_dir):
            result = mteb.evaluate(encoder, instances, cache=cache, show_progress_bar=False,
                                   encode_kwargs=encode_kwargs or {"batch_size": 32, "show_progress_bar": False},
                                   **({"overwrite_strategy": "always"} if cache is not None else {}))
    finally:
        if quiet:
            datasets.enable_progress_bars()
    out = {}
    for task_result in result.task_results:
        scores = task_result.scores["test"][0]
        out[_short(task_result.task_name)] = {m: scores.get(m) for m in metrics}
    return out


@contextlib.contextmanager
def union_pool_cache(tasks: Sequence[MBEIRLocalTask], cache_dir: str | os.PathLike | None):
    """Give the union-pool tasks without a cache folder ``cache_dir``, else one temporary folder (the pool is
    encoded once for all of them; the folder is removed afterwards)."""
    unset = [t for t in tasks if isinstance(t, MBEIRGlobalTask) and t.cache_dir is None]
    if cache_dir is not None or not unset:
        for task in unset:
            task.cache_dir = cache_dir
        yield
        return
    default_cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=default_cache_dir(), prefix="evaluate-") as folder:
        for task in unset:
            task.cache_dir = folder
        try:
            yield
        finally:
            forget_stores(folder)
            for task in unset:
                task.cache_dir = None


def mbeir_chance(tasks: Sequence[str | MBEIRLocalTask] | None = None, data: str | os.PathLike | None = None,
                 image_root: str | os.PathLike | None = None) -> dict[str, dict[str, float | None]]:
    """What a random ranking scores on each task (expected values), keyed like :func:`evaluate_mbeir`.

    ``recall_at_k`` = min(k, N) / N for a pool of N candidates (any number of positives);
    ``wrong_modality_at_1`` = the mean over queries of the pool's share of candidates whose modality none
    of the query's positives has (None where the pool holds one modality).
    """
    out = {}
    for task in _tasks(tasks, data, image_root):
        task.load_data()
        split = task.dataset["default"]["test"]
        modality = task.pool_modalities["test"]
        size = len(modality)
        scores: dict[str, float | None] = {f"recall_at_{k}": min(k, size) / size for k in task.k_values}
        scores[WRONG_MODALITY] = None
        if len(set(modality.values())) > 1:
            counts: dict[str, int] = {}
            for m in modality.values():
                counts[m] = counts.get(m, 0) + 1
            shares = [1 - sum(counts[m] for m in {modality[d] for d in positives}) / size
                      for positives in split["relevant_docs"].values()]
            scores[WRONG_MODALITY] = sum(shares) / len(shares)
        out[_short(task.metadata.name)] = scores
    return out


def mbeir_table(columns: Mapping[str, Mapping[str, Mapping[str, float | None]]],
                metrics: Sequence[str] = TABLE_METRICS) -> str:
    """A plain-text table: one line per task and metric, one column per entry of ``columns``.

    >>> print(mbeir_table({"chance": {"Emoji_t2i": {"recall_at_1": 0.001, "wrong_modality_at_1": 0.67}},
    ...                    "stage 1": {"Emoji_t2i": {"recall_at_1": 0.5, "wrong_modality_at_1": None}}},
    ...                   metrics=("recall_at_1", "wrong_modality_at_1")))
    task       metric                chance  stage 1
    Emoji_t2i  recall_at_1            0.001    0.500
               wrong_modality_at_1    0.670        -
    """
    labels = list(columns)
    known = list(MBEIR_TASK_CLASSES)  # every table lists the tasks in one order: M-BEIR's, then the emoji tasks
    tasks = sorted(dict.fromkeys(t for column in columns.values() for t in column),
                   key=lambda t: (known.index(t), "") if t in known else (len(known), t))
    head = ["task", "metric", *labels]
    lines = []
    for task in tasks:
        for j, metric in enumerate(metrics):
            cells = []
            for label in labels:
                value = columns[label].get(task, {}).get(metric)
                cells.append("-" if value is None else f"{value:.3f}")
            lines.append([task if j == 0 else "", metric, *cells])
    widths = [max(len(str(row[i])) for row in [head, *lines]) for i in range(len(head))]
    text = []
    for row in [head, *lines]:
        left = [str(row[i]).ljust(widths[i]) for i in range(2)]
        right = [str(row[i]).rjust(max(widths[i], 7)) for i in range(2, len(row))]
        text.append("  ".join(left + right).rstrip())
    return "\n".join(text)
