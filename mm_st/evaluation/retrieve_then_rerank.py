"""Retrieve, then rerank, inside mteb: an embedding model's top ``k`` reranked by a cross-encoder.

mteb's own mechanism does the work: the first stage runs ``mteb.evaluate(embedder, tasks,
prediction_folder=...)``, which saves each task's ranking; ``task.convert_to_reranking(folder, top_k=k)``
then makes each query's top ``k`` its ``top_ranked`` candidate list, and the second stage evaluates the
reranker (mteb's ``CrossEncoderProtocol``) on those lists only. Both stages' scores come back; the
second stage's scores also record the first-stage model (mteb's ``previous_results_model_meta``).

Works for any mteb retrieval task, mm_st's (MMEB, XTD, CIRR) included. For CIRR the reranker also
reorders each query's image set (its ``recall_subset_at_k`` pass), which is not a top-``k`` list.

Example:
    >>> from mm_st import build_model
    >>> from mm_st.rerank import build_reranker
    >>> from mm_st.testing import tiny_model
    >>> from mm_st.evaluation import XTDT2IRetrieval
    >>> from mm_st.evaluation.retrieve_then_rerank import evaluate_retrieve_then_rerank
    >>> embedder = build_model(tiny_model("qwen2_vl"), recipe="e5v")
    >>> reranker = build_reranker(tiny_model("qwen2_vl"), "mmembed_daily_life", answers=("t", "f"))
    >>> scores = evaluate_retrieve_then_rerank(embedder, reranker, [XTDT2IRetrieval(data="/data/xtd")], k=10,
    ...                                        prediction_folder="runs/xtd-stage1")  # doctest: +SKIP
    >>> scores["XTDT2IRetrieval"]["rerank"].get_score()                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from mteb.models import ModelMeta

from mm_st.evaluation.model import MMSTEncoder, mteb_rows

logger = logging.getLogger(__name__)


class MMSTReranker:
    """mteb cross-encoder for a sentence-transformers ``CrossEncoder`` (e.g. from :func:`mm_st.rerank.build_reranker`).

    Each mteb row becomes a text, an image or a ``{"text", "image"}`` input (empty text and absent
    images dropped, as for :class:`~mm_st.evaluation.MMSTEncoder`); pairs are scored one mteb batch
    at a time.

    Args:
        model: the CrossEncoder.
        name, revision: recorded with the results.
        prompt, prompt_name: the rerank prompt (see :mod:`mm_st.rerank`); default the model's own.

    Attributes:
        scored: number of pairs scored.
    """

    def __init__(self, model: Any, *, name: str | None = None, revision: str | None = None,
                 prompt: str | None = None, prompt_name: str | None = None) -> None:
        self.model, self.prompt, self.prompt_name = model, prompt, prompt_name
        self.scored = 0
        modalities = [m for m in ("image", "text") if m == "text" or model.supports(m)]
        self.mteb_model_meta = ModelMeta.create_empty(overwrites=dict(
            name=name or "local/reranker", revision=revision or "no_revision_available", modalities=modalities,
            framework=["Sentence Transformers", "PyTorch"], n_parameters=sum(p.numel() for p in model.parameters()),
            max_tokens=model.max_seq_length, open_weights=True,
        ))

    def predict(self, inputs1, inputs2, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None,
                **kwargs: Any) -> np.ndarray:
        from tqdm.auto import tqdm

        batch_size = kwargs.get("batch_size", 32)
        out = []
        batches = zip(inputs1, inputs2, strict=True)
        for queries, documents in tqdm(batches, total=len(inputs1), desc="Reranking", disable=not kwargs.get("show_progress_bar")):
            pairs = list(zip(mteb_rows(queries), mteb_rows(documents), strict=True))
            out.append(np.asarray(self.model.predict(pairs, prompt=self.prompt, prompt_name=self.prompt_name,
                                                     batch_size=batch_size, show_progress_bar=False), dtype=np.float32))
            self.scored += len(pairs)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _as_encoder(model: Any) -> Any:
    from sentence_transformers import SentenceTransformer

    return MMSTEncoder(model) if isinstance(model, SentenceTransformer) else model


def _as_reranker(model: Any) -> Any:
    from sentence_transformers import CrossEncoder

    return MMSTReranker(model) if isinstance(model, CrossEncoder) else model


def _check_pool(task: Any, k: int) -> None:
    """Refuse a ``k`` larger than a query's candidate pool (naming the task, subset, split and query)."""
    for subset, splits in task.dataset.items():
        for split, data in splits.items():
            for query_id, candidates in (data.get("top_ranked") or {}).items():
                if len(candidates) < k:
                    raise ValueError(
                        f"{task.metadata.name} ({subset}/{split}): k={k} is larger than the candidate pool of query "
                        f"{query_id!r} ({len(candidates)} candidates ranked by the first stage); use k <= {len(candidates)}."
                    )


def evaluate_retrieve_then_rerank(
    embedder: Any,
    reranker: Any,
    tasks: list[Any],
    k: int = 10,
    *,
    prediction_folder: str | os.PathLike,
    encode_kwargs: dict[str, Any] | None = None,
    show_progress_bar: bool = False,
) -> dict[str, dict[str, Any]]:
    """Both stages on mteb retrieval tasks: ``{task name: {"retrieval": TaskResult, "rerank": TaskResult}}``.

    Args:
        embedder: a SentenceTransformer (wrapped in :class:`~mm_st.evaluation.MMSTEncoder`) or an mteb encoder.
        reranker: a CrossEncoder (wrapped in :class:`MMSTReranker`) or an mteb cross-encoder.
        tasks: mteb retrieval tasks (e.g. :func:`~mm_st.evaluation.mmeb_tasks`, ``XTDT2IRetrieval(...)``).
        k: candidates per query the reranker scores; larger than a query's pool is an error.
        prediction_folder: where the first stage's rankings are written (``<task>_predictions.json``).
        encode_kwargs: passed to both stages (e.g. ``{"batch_size": 8}``).
    """
    import mteb

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer (the number of candidates to rerank), got {k!r}.")
    folder = Path(prediction_folder)
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = dict(cache=None, encode_kwargs=encode_kwargs or {}, show_progress_bar=show_progress_bar)
    first = mteb.evaluate(_as_encoder(embedder), tasks, prediction_folder=folder, **kwargs)
    retrieval = {result.task_name: result for result in first.task_results}
    wrapped = _as_reranker(reranker)
    out = {}
    for task in tasks:
        task.convert_to_reranking(folder, top_k=k)
        _check_pool(task, k)
        second = mteb.evaluate(wrapped, task, **kwargs)
        out[task.metadata.name] = {"retrieval": retrieval[task.metadata.name], "rerank": second.task_results[0]}
    return out
