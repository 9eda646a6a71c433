"""M-BEIR's local-pool test tasks (and the five embedded emoji tasks) as mteb tasks over a local root.

Each task ranks its queries against its whole local pool and reports ``wrong_modality_at_1`` where the pool
mixes modalities (see :mod:`mm_st.evaluation.mbeir`, which documents them and holds the functions to run them).
The task classes are made from :data:`~mm_st.evaluation.mbeir_files.MBEIR_LOCAL_FILES` and
:data:`~mm_st.evaluation.mbeir_files.EMOJI_FILES`: :data:`MBEIR_TASK_CLASSES` by ``load_mbeir`` name, and as module
attributes by class name (``MBEIRVisualNewst2i``, listed in ``__all__``).

Example:
    >>> from mm_st.evaluation.mbeir_local import MBEIR_TASK_CLASSES
    >>> MBEIR_TASK_CLASSES["Emoji_t2i"].metadata.name
    'MMST-MBEIR-Emoji_t2i'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import mteb
from mteb.abstasks.task_metadata import TaskMetadata

from mm_st.data.emoji import EMOJI_MBEIR_TASKS
from mm_st.data.mbeir import mbeir_instructions, mbeir_modality, mbeir_task_name, pool_rows, query_rows
from mm_st.evaluation import data as eval_data
from mm_st.evaluation.mbeir_files import (
    EMOJI_FILES,
    GLOBAL_PREFIX,
    MBEIR_LOCAL_FILES,
    PREFIX,
    UNIIR_CITATION,
    UNION_POOL,
    WRONG_MODALITY,
    MBEIRTaskFiles,
    category_letters,
    modality_parts,
    paper_metric,
)
from mm_st.evaluation.tasks import MMSTRetrievalTask, check_declared_modalities, split_rows, module_getattr

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# The metric
# ----------------------------------------------------------------------------------------------


def wrong_modality_at_1(relevant_docs: Mapping[str, Mapping[str, int]], results: Mapping[str, Mapping[str, float]],
                        modality: Mapping[str, str]) -> float:
    """Share of queries whose top-1 candidate's modality is none of their positives' modalities.

    Args:
        relevant_docs: ``{query id: {candidate id: relevance}}`` (relevance > 0: a positive).
        results: ``{query id: {candidate id: score}}``, mteb's retrieval results (highest score first wins;
            among equal scores the first listed).
        modality: ``{candidate id: modality}`` of the pool.

    >>> wrong_modality_at_1({"q1": {"i1": 1}, "q2": {"t2": 1}}, {"q1": {"t1": 0.9, "i1": 0.5}, "q2": {"t2": 0.8}},
    ...                     {"i1": "image", "t1": "text", "t2": "text"})
    0.5
    """
    wrong = 0
    for qid, positives in relevant_docs.items():
        ranked = results.get(qid)
        if not ranked:
            raise ValueError(f"No retrieval results for query {qid!r}.")
        top = max(ranked, key=ranked.__getitem__)
        wrong += modality[top] not in {modality[did] for did, relevance in positives.items() if relevance > 0}
    return wrong / len(relevant_docs)


# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------


class MBEIRLocalTask(MMSTRetrievalTask):
    """One M-BEIR test task over a local root: each query against the task's whole local pool.

    Scores: mteb's retrieval metrics at k = 1, 5, 10, 20, 50, plus ``wrong_modality_at_1`` when the
    pool mixes modalities. Rows must fit the declaration: a query whose (dataset, query modality,
    positive's modality) names another task, a positive absent from the pool, a modality outside
    ``text`` / ``image`` / ``image,text`` or a missing text or image for it are refused, naming the row. The files
    are read by :mod:`mm_st.data.mbeir`, as training reads them: a candidate id that two rows give different content
    or an image path leaving the root is refused naming the file, row and line (the same candidate twice is read once).

    Attributes (after loading):
        pool_modalities: ``{split: {candidate id: modality}}``.
    """

    files: ClassVar[MBEIRTaskFiles]
    data_source = eval_data.SOURCES["mbeir"]
    k_values: Sequence[int] = (1, 5, 10, 20, 50)

    def build(self) -> dict:
        root = eval_data.mbeir_dir(self.source())
        images = self.data_source.images(self.image_root, [root])
        query_path, pool_path = (eval_data.mbeir_file(root, f) for f in (self.files.query_file, self.files.pool_file))
        pool = [row.data for row in pool_rows([pool_path])]
        queries = [row.data for row in query_rows(query_path)]
        corpus, modality = self._pool(pool, images)
        queries, relevant = self._queries(queries, modality, images)
        self.pool_modalities = {"test": modality}
        self.candidate_counts = {"pool": len(modality), "queries": len(relevant)}
        self._check_instruction(root)
        return {"default": {"test": {"queries": queries, "corpus": corpus, "relevant_docs": relevant, "top_ranked": None}}}

    def _field(self, value: Any, what: str, field: str) -> str:
        """A text or image path that the row's modality requires: a non-empty string."""
        if not isinstance(value, str) or not value:
            raise ValueError(f"{self.metadata.name}: {what}: its modality needs {field!r}, got {value!r:.60}.")
        return value

    def _modality(self, value: Any, what: str) -> str:
        """The row's modality, spelled as M-BEIR's code does (``"text,image"`` -> ``"image,text"``)."""
        return mbeir_modality(value, f"{self.metadata.name}: {what}")  # as training reads it

    def _pool(self, rows: list[dict], images: Path, pool_file: str | None = None) -> tuple[Any, dict[str, str]]:
        where = f"{pool_file or self.files.pool_file} row"
        ids, texts, paths, modality = [], [], [], {}
        for index, row in enumerate(rows):
            did, modality_of_row, text, path = self._candidate(row, where, index)
            if did in modality:
                raise ValueError(f"{self.metadata.name}: {where} {index}: candidate id {did!r} appears twice in the pool.")
            modality[did] = modality_of_row
            ids.append(did)
            texts.append(text)
            paths.append(path)
        return split_rows(ids, texts, self._files(ids, texts, paths, images, "document", where)), modality

    def _candidate(self, row: dict, where: str, index: int) -> tuple[str, str, str, str | None]:
        """One pool row checked: (id, modality, text or "", image path or None)."""
        did = row.get("did")
        if not isinstance(did, str) or not did:
            raise ValueError(f"{self.metadata.name}: {where} {index} has no string 'did'.")
        what = f"{where} {index} (candidate {did})"
        modality = self._modality(row.get("modality"), what)
        parts = modality_parts(modality)
        text = self._field(row.get("txt"), what, "txt") if "text" in parts else ""
        return did, modality, text, self._field(row.get("img_path"), what, "img_path") if "image" in parts else None

    def _files(self, ids: list[str], texts: list[str], paths: list[str | None], images: Path, side: str, where: str,
               start: int = 0):
        """The image files of one side (rows ``start``, ``start + 1``, ...), after checking the rows against the
        task's declared category."""
        name, category = self.metadata.name, self.metadata.category
        kind = "query" if side == "query" else "candidate"
        check_declared_modalities(name, category, side, texts, paths, lambda i: f"{where} {start + i} ({kind} {ids[i]})",
                                  hint=self._mixed_pool_hint() if side == "document" else None)
        return [eval_data.image_file(images, p, f"{name}: {where} {start + i} ({kind} {ids[i]})", eval_data.MBEIR_LAYOUT)
                if p else None for i, p in enumerate(paths)]

    def _mixed_pool_hint(self) -> str:
        """Where a pool that mixes modalities for this task is evaluated: the union-pool task."""
        return (f"A pool that mixes modalities is what the union-pool task {GLOBAL_PREFIX}{self.files.name} ranks "
                f"against: put it into {UNION_POOL.format(split='test')} (all candidates, any modality) and run that "
                "task or the M-BEIR-global benchmark; else check the data.")

    def _queries(self, rows: list[dict], modality: Mapping[str, str], images: Path, query_file: str | None = None,
                 pool_file: str | None = None) -> tuple[Any, dict]:
        where = f"{query_file or self.files.query_file} row"
        ids, texts, paths, relevant = [], [], [], {}
        for index, row in enumerate(rows):
            qid = row.get("qid")
            if not isinstance(qid, str) or not qid:
                raise ValueError(f"{self.metadata.name}: {where} {index} has no string 'qid'.")
            what = f"{where} {index} (query {qid})"
            positives = row.get("pos_cand_list")
            if not isinstance(positives, list) or not positives or not all(isinstance(p, str) for p in positives):
                raise ValueError(f"{self.metadata.name}: {what}: pos_cand_list must be a non-empty list of candidate ids, "
                                 f"got {positives!r:.80}.")
            missing = [p for p in positives if p not in modality]
            if missing:
                raise ValueError(f"{self.metadata.name}: {what}: positive {missing[0]!r} is not in the task's pool "
                                 f"{pool_file or self.files.pool_file}.")
            query_modality = self._modality(row.get("query_modality"), what)
            parts = modality_parts(query_modality)
            task = mbeir_task_name(qid.split(":")[0], query_modality, modality[positives[0]])
            if task != self.files.name:
                raise ValueError(f"{self.metadata.name}: {what} is a {task} query (dataset id, query modality, "
                                 f"positive's modality), not {self.files.name}.")
            if qid in relevant:
                raise ValueError(f"{self.metadata.name}: {what}: query id {qid!r} appears twice.")
            ids.append(qid)
            texts.append(self._field(row.get("query_txt"), what, "query_txt") if "text" in parts else "")
            paths.append(self._field(row.get("query_img_path"), what, "query_img_path") if "image" in parts else None)
            relevant[qid] = {did: 1 for did in positives}
        return split_rows(ids, texts, self._files(ids, texts, paths, images, "query", where)), relevant

    def _check_instruction(self, root: Path) -> None:
        """Warn when the layout's instruction for an emoji task is not the task's declared prompt."""
        tsv = root / "instructions" / "query_instructions.tsv"
        if self.files.mteb_task is not None or not tsv.is_file():
            return
        theirs, ours = mbeir_instructions(root).get(self.files.name), (self.metadata.prompt or {}).get("query")
        if theirs is not None and theirs != ours:
            logger.warning("%s: the layout's instruction %r differs from the task's prompt %r; the model gets the "
                           "task's prompt (mm_st.data.emoji.EMOJI_MBEIR_TASKS).", self.metadata.name, theirs, ours)

    def task_specific_scores(self, scores, qrels, results, hf_split: str, hf_subset: str) -> dict[str, float]:
        """``wrong_modality_at_1`` where the pool mixes modalities (mteb's hook for task-specific metrics)."""
        modality = self.pool_modalities[hf_split]
        if len(set(modality.values())) < 2:
            return {}
        return {WRONG_MODALITY: wrong_modality_at_1(qrels, results, modality)}


def _metadata(files: MBEIRTaskFiles) -> TaskMetadata:
    if files.mteb_task is not None:
        theirs = mteb.get_task(files.mteb_task).metadata
        return theirs.model_copy(update=dict(
            name=PREFIX + files.name,
            description=f"M-BEIR {files.name} over a local M-BEIR root ({files.query_file} against the local pool "
                        f"{files.pool_file}); mteb's metrics plus the wrong-modality top-1 rate where the pool mixes "
                        f"modalities. Same data as mteb's {files.mteb_task}.",
            dataset={"path": "TIGER-Lab/M-BEIR", "revision": "main"},
            main_score=paper_metric(files),
            eval_splits=["test"],
            adapted_from=[files.mteb_task],
        ))
    spec = EMOJI_MBEIR_TASKS[files.name]
    query = category_letters(files.modalities[0])
    return TaskMetadata(
        name=PREFIX + files.name,
        description=f"mm_st's bundled emoji (unseen test split) as M-BEIR task {files.name}, ranked against one pool "
                    "that mixes the split's images and texts (names, keyword paraphrases, group names): Recall@k and "
                    "the wrong-modality top-1 rate (MM-Embed's modality bias). Written by "
                    "mm_st.training.embedded.write_mbeir.",
        reference="https://arxiv.org/abs/2411.02571",
        dataset={"path": "mm_st/emoji-mbeir", "revision": "bundled"},
        type="Any2AnyRetrieval",
        category=f"{query}2it",  # documents: the mixed pool (images and texts)
        modalities=["image", "text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="recall_at_1",
        license="multiple",
        annotations_creators="derived",
        sample_creation="rendered",
        bibtex_citation=UNIIR_CITATION,
        prompt={"query": spec.instruction},
    )


def _task_class(files: MBEIRTaskFiles) -> type[MBEIRLocalTask]:
    class_name = "MBEIR" + "".join(ch for ch in files.name if ch.isalnum())
    return type(class_name, (MBEIRLocalTask,), {"metadata": _metadata(files), "files": files, "__module__": __name__})


MBEIR_TASK_CLASSES: dict[str, type[MBEIRLocalTask]] = {f.name: _task_class(f) for f in (*MBEIR_LOCAL_FILES, *EMOJI_FILES)}

TASK_CLASSES_BY_CLASS_NAME: dict[str, type[MBEIRLocalTask]] = {cls.__name__: cls for cls in MBEIR_TASK_CLASSES.values()}
__all__ = ["MBEIRLocalTask", "MBEIR_TASK_CLASSES", "local_task_names", "wrong_modality_at_1",
           *TASK_CLASSES_BY_CLASS_NAME]

__getattr__ = module_getattr(__name__, TASK_CLASSES_BY_CLASS_NAME)  # MBEIR...: listed in __all__


def local_task_names(root: Path) -> list[str]:
    """``load_mbeir`` names of the local-pool tasks whose query file is in ``root``; none is a
    :class:`~mm_st.evaluation.data.DataLayoutError`."""
    names = [n for n, cls in MBEIR_TASK_CLASSES.items() if (root / cls.files.query_file).is_file()]
    if not names:
        raise eval_data.DataLayoutError(f"No M-BEIR test task found in {str(root)!r}: no query/test/mbeir_*_test.jsonl "
                                        f"file that a known task reads.\n{eval_data.MBEIR_LAYOUT}")
    return names
