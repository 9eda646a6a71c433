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

Every query is ranked against its task's whole local pool. Task instructions reach the model as for
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
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mteb.abstasks.task_metadata import TaskMetadata

from mm_st.data.mbeir import mbeir_instructions, mbeir_modality, mbeir_task_name, pool_rows, query_rows
from mm_st.data.emoji import EMOJI_MBEIR_DATASET, EMOJI_MBEIR_POOL_FILE, EMOJI_MBEIR_QUERY_FILE, EMOJI_MBEIR_TASKS
from mm_st.evaluation import data as eval_data
from mm_st.evaluation.tasks import MMSTRetrievalTask, _split, check_declared_modalities
from mm_st.modality import MBEIR_SPELLINGS, from_mbeir, to_letters

logger = logging.getLogger(__name__)

WRONG_MODALITY = "wrong_modality_at_1"
PREFIX = "MMST-MBEIR-"
GLOBAL_PREFIX = PREFIX + "global-"  # the union-pool tasks (mm_st.evaluation.mbeir_global)
UNION_POOL = "cand_pool/global/mbeir_union_{split}_cand_pool.jsonl"  # UniIR's union (global) pool of a split
MODALITIES = tuple(MBEIR_SPELLINGS.values())  # M-BEIR's candidate / query modality values (mm_st.modality)
_T, _I, _IT = MODALITIES
# UniIR's task ids, query -> candidate modality (TIGER-AI-Lab/UniIR src/data/preprocessing/utils.py, MBEIR_TASK;
# 5, image -> image,text, is unused there).
UNIIR_TASKS: dict[int, tuple[str, str]] = {
    0: (_T, _I), 1: (_T, _T), 2: (_T, _IT), 3: (_I, _T), 4: (_I, _I), 6: (_IT, _T), 7: (_IT, _I), 8: (_IT, _IT),
}  # fmt: skip

UNIIR_CITATION = r"""
@article{wei2023uniir,
  author = {Wei, Cong and Chen, Yang and Chen, Haonan and Hu, Hexiang and Zhang, Ge and Fu, Jie and Ritter, Alan and Chen, Wenhu},
  journal = {arXiv preprint arXiv:2311.17136},
  title = {UniIR: Training and Benchmarking Universal Multimodal Information Retrievers},
  year = {2023},
}
"""


@dataclass(frozen=True)
class MBEIRTaskFiles:
    """Where one M-BEIR test task lives under the root, and what it is.

    ``name`` is ``load_mbeir``'s name of the task (e.g. ``"VisualNews_t2i"``); ``mteb_task`` is mteb's own
    task over the same data (its metadata and prompt are reused), None for the emoji tasks.
    """

    dataset_id: str
    task_id: int
    query_file: str
    pool_file: str
    mteb_task: str | None = None

    @property
    def modalities(self) -> tuple[str, str]:
        return UNIIR_TASKS[self.task_id]

    @property
    def name(self) -> str:
        return mbeir_task_name(self.dataset_id, *self.modalities)


def _uniir(dataset_id: str, task_id: int, stem: str, mteb_task: str, pool: str | None = None) -> MBEIRTaskFiles:
    return MBEIRTaskFiles(dataset_id, task_id, f"query/test/mbeir_{stem}_test.jsonl",
                          f"cand_pool/local/mbeir_{pool or stem}_cand_pool.jsonl", mteb_task)


# The 16 local-pool test tasks: UniIR's evaluation config (TIGER-AI-Lab/UniIR, e.g.
# src/models/uniir_clip/clip_scorefusion/configs_scripts/large/eval/inbatch/retrieval.yaml,
# test_datasets_config: datasets_name / correspond_cand_pools_name; MSCOCO has separate test pools).
MBEIR_LOCAL_FILES: tuple[MBEIRTaskFiles, ...] = (
    _uniir("0", 0, "visualnews_task0", "VisualNewsT2IRetrieval"),
    _uniir("9", 0, "mscoco_task0", "MSCOCOT2IRetrieval", pool="mscoco_task0_test"),
    _uniir("1", 0, "fashion200k_task0", "Fashion200kT2IRetrieval"),
    _uniir("2", 1, "webqa_task1", "WebQAT2TRetrieval"),
    _uniir("3", 2, "edis_task2", "EDIST2ITRetrieval"),
    _uniir("2", 2, "webqa_task2", "WebQAT2ITRetrieval"),
    _uniir("0", 3, "visualnews_task3", "VisualNewsI2TRetrieval"),
    _uniir("9", 3, "mscoco_task3", "MSCOCOI2TRetrieval", pool="mscoco_task3_test"),
    _uniir("1", 3, "fashion200k_task3", "Fashion200kI2TRetrieval"),
    _uniir("4", 4, "nights_task4", "NIGHTSI2IRetrieval"),
    _uniir("5", 6, "oven_task6", "OVENIT2TRetrieval"),
    _uniir("6", 6, "infoseek_task6", "InfoSeekIT2TRetrieval"),
    _uniir("7", 7, "fashioniq_task7", "FashionIQIT2IRetrieval"),
    _uniir("8", 7, "cirr_task7", "CIRRIT2IRetrieval"),
    _uniir("5", 8, "oven_task8", "OVENIT2ITRetrieval"),
    _uniir("6", 8, "infoseek_task8", "InfoSeekIT2ITRetrieval"),
)
EMOJI_FILES: tuple[MBEIRTaskFiles, ...] = tuple(
    MBEIRTaskFiles(EMOJI_MBEIR_DATASET[0], spec.task_id, EMOJI_MBEIR_QUERY_FILE.format(split="test", task_id=spec.task_id),
                   EMOJI_MBEIR_POOL_FILE.format(split="test"))
    for spec in EMOJI_MBEIR_TASKS.values()
)


def paper_metric(files: MBEIRTaskFiles) -> str:
    """UniIR's reported metric of a task: Recall@10 for Fashion200K / FashionIQ, else Recall@5."""
    return "recall_at_10" if files.dataset_id in ("1", "7") else "recall_at_5"


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


def _parts(modality: str) -> set[str]:
    return set(modality.split(","))


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
    kind = "mbeir"
    k_values: Sequence[int] = (1, 5, 10, 20, 50)

    def build(self) -> dict:
        root = eval_data.mbeir_dir(self.source())
        images = eval_data.image_root("mbeir", self.image_root, [root])
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
        return _split(ids, texts, self._files(ids, texts, paths, images, "document", where)), modality

    def _candidate(self, row: dict, where: str, index: int) -> tuple[str, str, str, str | None]:
        """One pool row checked: (id, modality, text or "", image path or None)."""
        did = row.get("did")
        if not isinstance(did, str) or not did:
            raise ValueError(f"{self.metadata.name}: {where} {index} has no string 'did'.")
        what = f"{where} {index} (candidate {did})"
        modality = self._modality(row.get("modality"), what)
        parts = _parts(modality)
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
            parts = _parts(query_modality)
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
        return _split(ids, texts, self._files(ids, texts, paths, images, "query", where)), relevant

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
        import mteb

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
    query = _letters(files.modalities[0])
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


def _letters(modality: str) -> str:
    """mteb's category letters of an M-BEIR modality (``"image,text"`` -> ``"it"``)."""
    return to_letters(from_mbeir(modality, "M-BEIR modality"))


def _task_class(files: MBEIRTaskFiles) -> type[MBEIRLocalTask]:
    class_name = "MBEIR" + "".join(ch for ch in files.name if ch.isalnum())
    return type(class_name, (MBEIRLocalTask,), {"metadata": _metadata(files), "files": files, "__module__": __name__})


MBEIR_TASK_CLASSES: dict[str, type[MBEIRLocalTask]] = {f.name: _task_class(f) for f in (*MBEIR_LOCAL_FILES, *EMOJI_FILES)}
globals().update({cls.__name__: cls for cls in MBEIR_TASK_CLASSES.values()})
MBEIR_LOCAL_TASKS: dict[str, str] = {PREFIX + f.name: paper_metric(f) for f in MBEIR_LOCAL_FILES}  # name -> paper metric
EMOJI_MBEIR_TASK_NAMES: tuple[str, ...] = tuple(PREFIX + f.name for f in EMOJI_FILES)


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
    from mm_st.evaluation.mbeir_global import MBEIR_GLOBAL_TASK_CLASSES, global_task_names

    if names is None:
        root = eval_data.mbeir_dir(eval_data.resolve_source("mbeir", data, None))
        names = [n for n, cls in MBEIR_TASK_CLASSES.items() if (root / cls.files.query_file).is_file()]
        if not names:
            raise eval_data.DataLayoutError(f"No M-BEIR test task found in {str(root)!r}: no query/test/mbeir_*_test.jsonl "
                                            f"file that a known task reads.\n{eval_data.MBEIR_LAYOUT}")
        names += global_task_names(root) if with_global else []
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
    from mteb.types import PromptType

    from mm_st.evaluation.model import MMSTEncoder

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
    import datasets
    import mteb

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
    from mm_st.evaluation.mbeir_global import MBEIRGlobalTask, default_cache_dir, forget_stores

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
