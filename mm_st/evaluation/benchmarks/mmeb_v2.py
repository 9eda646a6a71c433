"""MMEB-V2 (VLM2Vec-V2): the video and visual-document tasks, and the ``MMEB-V2`` benchmark (78 datasets).

Every dataset of VLM2Vec's ``experiments/public/eval/video.yaml`` (18) and ``visdoc.yaml`` (27) at commit
6e1e1d42 is an mteb task ``MMEB-<dataset>`` (``MMEB-MSR-VTT``, ``MMEB-ViDoRe_arxivqa``), read from a local mirror of
VLM2Vec's evaluation layout (``$MM_ST_MMEB_V2_DATA``, :mod:`mm_st.evaluation.mmeb_v2_files`), scored as VLM2Vec's
``eval.py`` scores it:

- candidates: ``eval_type: local`` ranks each query against its own candidates (mteb's ``top_ranked``);
  ``global`` against every candidate of the dataset (all labels of a classification dataset, all videos, all pages).
  A candidate is one corpus entry per VLM2Vec candidate name, encoded once.
- main score: Hit@1 for video (``precision_at_1``: the top candidate is a positive, the same number for one
  positive or several), nDCG@5 for visual documents (``ndcg_at_5``: pytrec_eval's linear-gain nDCG over the graded
  qrels, VLM2Vec's ``ndcg_linear@5``), the metrics of ``experiments/report_score_v2.py``.
- instructions: the parsers' strings, byte for byte (``metadata.prompt``; MomentSeeker's query instruction
  depends on the query's modality and travels per row, see :class:`MMEBV2Task`).

Benchmarks: ``MMEB-V2`` (the 36 image tasks of MMEB v1, which ``image.yaml`` scores the same way: all local,
Hit@1 = mm_st's ``precision_at_1``; the 18 video tasks; the 24 visual-document tasks of VLM2Vec's table),
``MMEB-V2-video`` and ``MMEB-V2-visdoc`` (their own modules). The overall score is ``Mean(Task)``: the unweighted
mean of the 78 datasets' main scores. No code of the pinned commit computes it (``report_score_v2.py`` prints
per-modality means only); it is derived from the score files: the mean of the 78 main scores of
``experiments/public/all_scores/v2.0.0/VLM2Vec-V2.0-Qwen2VL-2B.json`` is 58.02, the README's 58.0, and the
per-modality means 64.85 / 34.58 / 65.36 are the table's Image / Video / VisDoc columns. ``Modality::`` and
``Meta-task::`` groups are those columns and their sub-columns (the grouping of ``report_score_v2.py``'s lists).

ViDoRe and mteb: mteb has the same ViDoRe data as tasks (``VidoreArxivQARetrieval`` ... over ``mteb/`` copies of the
``vidore/*_beir`` sets; ``Vidore2*Retrieval`` over ``vidore/*_v2``), with the same metric (nDCG@5 over the same
qrels), so ``MMEB-ViDoRe_*`` does not redo what mteb does for them: it differs in what VLM2Vec changed. (1) VLM2Vec's
instructions (query "Find a document image that matches the given query:", page "Understand the content of the
provided document image."; mteb's tasks carry none). (2) ViDoRe v2: mteb scores each language as a subset and
averages; VLM2Vec's ``_multilingual`` datasets pool all languages' queries into one set and its English datasets
keep ``language == "english"``. (3) The data are read from the local mirror like the other 44 datasets. Run mteb's
own ViDoRe tasks (``mteb run -b ViDoRe(v1)``) for ViDoRe's leaderboard numbers, these for MMEB-V2's.

Example:
    >>> from mm_st.evaluation.benchmarks.mmeb_v2 import mmeb_v2_benchmark
    >>> bench = mmeb_v2_benchmark()
    >>> len(bench.tasks), [g.label for g in bench.aggregations[1].groups]
    (78, ['Image', 'Video', 'VisDoc'])
"""

from __future__ import annotations

import os
import re
from typing import Any, ClassVar

import datasets
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.benchmarks.benchmark import Benchmark, BenchmarkAggregation, CustomGroup, CustomGrouping

from mm_st.evaluation import mmeb_v2_files as files
from mm_st.evaluation.instructions import MMEB
from mm_st.evaluation.tasks import MMSTRetrievalTask, mmeb_tasks, module_getattr

DATA = files.SOURCE

VLM2VEC_V2_CITATION = r"""
@article{meng2025vlm2vecv2,
  author = {Meng, Rui and Jiang, Ziyan and Liu, Ye and Su, Mingyi and Yang, Xinyi and Fu, Yuepeng and Qin, Can
            and Chen, Zeyuan and Xu, Ran and Xiong, Caiming and Zhou, Yingbo and Chen, Wenhu and Yavuz, Semih},
  journal = {arXiv preprint arXiv:2507.04590},
  title = {VLM2Vec-V2: Advancing Multimodal Embedding for Videos, Images, and Visual Documents},
  year = {2025},
}
"""

INSTRUCTION_COLUMN, IMAGE_COLUMN = files.INSTRUCTION_COLUMN, files.IMAGE_COLUMN
MAIN_SCORE = {"video": "precision_at_1", "visdoc": "ndcg_at_5"}  # Hit@1 / nDCG@5 (report_score_v2.py)
MODALITIES = {"v": "video", "t": "text", "i": "image"}
_LANGUAGES = ["eng-Latn", "fra-Latn", "spa-Latn", "deu-Latn"]  # ViDoRe v2 multilingual query languages


def _column(values: list, feature: Any) -> tuple[list, Any]:
    return values, feature


class MMEBV2Task(MMSTRetrievalTask):
    """One MMEB-V2 video or visual-document dataset (:data:`~mm_st.evaluation.mmeb_v2_files.DATASETS`).

    Queries and candidates are :func:`~mm_st.evaluation.mmeb_v2_files.task_inputs`: columns ``text``, ``video``
    (frame paths), ``image``. MomentSeeker's queries also carry ``mm_st_instruction`` (the instruction of the query's
    modality) and ``mm_st_image`` (the image of an image-conditioned query, which its ``vt2v`` category has no
    column for); mm_st's encoder reads both, other encoders get the text instruction of the task prompt.
    """

    entry: ClassVar[files.V2Dataset]
    data_source = files.SOURCE
    candidate_names: list[str]

    def build(self) -> dict:
        inputs = files.task_inputs(self.entry.name, self.source())
        names = list(inputs.candidates)
        ids = {name: f"c{i}" for i, name in enumerate(names)}
        self.candidate_names = names
        qids = [f"q{i}" for i in range(len(inputs.queries))]
        split = {
            "queries": self._rows(qids, inputs.queries, "query"),
            "corpus": self._rows(list(ids.values()), list(inputs.candidates.values()), "document"),
            "relevant_docs": {q: {ids[n]: s for n, s in rel.items()} for q, rel in zip(qids, inputs.relevant)},
            "top_ranked": None if inputs.ranked is None else
            {q: list(dict.fromkeys(ids[n] for n in r)) for q, r in zip(qids, inputs.ranked)},
        }
        self.candidate_counts = {"unique": len(names), "queries": len(qids)}
        return {"default": {"test": split}}

    def _rows(self, ids: list[str], items: list[files.Item], side: str) -> datasets.Dataset:
        """The split mteb reads: ``id`` plus the columns of the side's modalities (and MomentSeeker's two)."""
        letters = self.metadata.category.split("2")[0 if side == "query" else 1]
        columns: dict[str, tuple[list, Any]] = {"id": _column(ids, datasets.Value("string"))}
        if "t" in letters:
            columns["text"] = _column([i.text for i in items], datasets.Value("string"))
        if "v" in letters:
            columns["video"] = _column([list(i.video) if i.video else None for i in items],
                                       datasets.Sequence(datasets.Value("string")))
        if "i" in letters:
            columns["image"] = _column([i.image for i in items], datasets.Image())
        if side == "query" and any(i.instruction or (i.image and "i" not in letters) for i in items):
            columns[INSTRUCTION_COLUMN] = _column([i.instruction or "" for i in items], datasets.Value("string"))
            columns[IMAGE_COLUMN] = _column([i.image or "" for i in items], datasets.Value("string"))
        features = datasets.Features({k: f for k, (_, f) in columns.items()})
        return datasets.Dataset.from_dict({k: v for k, (v, _) in columns.items()}, features=features)


def _class_name(name: str) -> str:
    return "MMEBV2" + re.sub(r"[^0-9A-Za-z]", "", name)


def _description(entry: files.V2Dataset) -> str:
    pool = "its own candidates" if entry.eval_type == "local" else "every candidate of the dataset"
    metric = "Hit@1" if entry.modality == "video" else "nDCG@5"
    extra = "" if entry.in_table else " Evaluated by visdoc.yaml, not part of VLM2Vec's 78-dataset table."
    return (f"MMEB-V2 {entry.modality} {entry.group} dataset {entry.name} (VLM2Vec-V2, parser {entry.parser!r}): "
            f"each query is ranked against {pool} ({entry.eval_type}); {metric} as in VLM2Vec.{extra}")


def _task_class(entry: files.V2Dataset) -> type[MMEBV2Task]:
    letters = entry.category.replace("2", "")
    multilingual = entry.name.endswith("_multilingual")
    metadata = TaskMetadata(
        name=f"MMEB-{entry.name}",
        description=_description(entry),
        reference="https://arxiv.org/abs/2507.04590",
        dataset={"path": entry.hf[0], "revision": "main"},
        type="Any2AnyRetrieval",
        category=entry.category,
        modalities=sorted({MODALITIES[c] for c in letters} | ({"image"} if entry.parser == "momentseeker" else set())),
        eval_splits=["test"],
        eval_langs=_LANGUAGES if multilingual else ["eng-Latn"],
        main_score=MAIN_SCORE[entry.modality],
        license="not specified",
        annotations_creators="derived",
        sample_creation="found",
        bibtex_citation=VLM2VEC_V2_CITATION,
        prompt={"query": entry.query_instruction,
                **({"document": entry.document_instruction} if entry.document_instruction else {})},
    )
    return type(_class_name(entry.name), (MMEBV2Task,), {"metadata": metadata, "entry": entry, "__module__": __name__})


MMEB_V2_TASK_CLASSES: dict[str, type[MMEBV2Task]] = {n: _task_class(e) for n, e in files.DATASETS.items()}
TASK_CLASSES_BY_CLASS_NAME = {cls.__name__: cls for cls in MMEB_V2_TASK_CLASSES.values()}
__getattr__ = module_getattr(__name__, TASK_CLASSES_BY_CLASS_NAME)  # MMEBV2MSRVTT, ...

IMAGE_GROUPS = {"Classification": "CLS", "VQA": "QA", "Retrieval": "RET", "Grounding": "GD"}  # v1 meta-task -> V2


def mmeb_v2_tasks(names: list[str] | None = None, data: str | os.PathLike | None = None) -> list[MMEBV2Task]:
    """Video / visual-document task instances (default: all 45) reading the root ``data`` (``$MM_ST_MMEB_V2_DATA``)."""
    names = list(names) if names is not None else list(MMEB_V2_TASK_CLASSES)
    unknown = [n for n in names if n not in MMEB_V2_TASK_CLASSES]
    if unknown:
        raise ValueError(f"Unknown MMEB-V2 dataset(s) {unknown}. Known: {', '.join(MMEB_V2_TASK_CLASSES)}.")
    return [MMEB_V2_TASK_CLASSES[n](data=data) for n in names]


def table_names(modality: str) -> list[str]:
    """The datasets of VLM2Vec's table for ``video`` / ``visdoc``, in its order."""
    return [n for n, e in files.DATASETS.items() if e.modality == modality and e.in_table]


def _groups(tasks: list, labels: list[tuple[str, list[str]]]) -> tuple[CustomGroup, ...]:
    by_name = {t.metadata.name: t for t in tasks}
    return tuple(CustomGroup(label=label, tasks=[by_name[n] for n in names]) for label, names in labels)


def _meta_task_groups(modality: str) -> list[tuple[str, list[str]]]:
    """``(label, task names)`` of one modality's sub-columns of VLM2Vec's table."""
    if modality == "image":
        return [(f"Image {short}", [f"MMEB-{n}" for n, e in MMEB.items() if e.meta_task == meta])
                for meta, short in IMAGE_GROUPS.items()]
    groups = files.VIDEO_GROUPS if modality == "video" else files.VISDOC_GROUPS
    label = "Video" if modality == "video" else "VisDoc"
    return [(f"{label} {g}", [f"MMEB-{n}" for n in table_names(modality) if files.DATASETS[n].group == g])
            for g in groups]


def v2_benchmark(name: str, modalities: tuple[str, ...], data: str | os.PathLike | None = None,
                 mmeb_data: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None) -> Benchmark:
    """An MMEB-V2 benchmark over ``modalities`` (of image, video, visdoc): Mean(Task) (VLM2Vec's overall),
    one ``Modality::`` group per modality when there are several, the ``Meta-task::`` groups."""
    tasks: list = mmeb_tasks(data=mmeb_data, image_root=image_root) if "image" in modalities else []
    for modality in ("video", "visdoc"):
        if modality in modalities:
            tasks += mmeb_v2_tasks(table_names(modality), data=data)
    meta = [g for m in modalities for g in _meta_task_groups(m)]
    labels = {"image": "Image", "video": "Video", "visdoc": "VisDoc"}
    by_modality = [(labels[m], [n for _, names in _meta_task_groups(m) for n in names]) for m in modalities]
    aggregations = [BenchmarkAggregation.MEAN_TASK]
    if len(modalities) > 1:
        aggregations.append(CustomGrouping(name="Modality", groups=_groups(tasks, by_modality)))
    aggregations.append(CustomGrouping(name="Meta-task", groups=_groups(tasks, meta)))
    return Benchmark(
        name=name,
        tasks=tasks,
        description=f"MMEB-V2 (VLM2Vec-V2), {' + '.join(labels[m] for m in modalities)}: {len(tasks)} datasets; Hit@1 "
        "(image, video) and nDCG@5 (visual documents). Mean(Task) is the table's overall score (the unweighted mean "
        "over datasets), with per-modality and meta-task means.",
        reference="https://arxiv.org/abs/2507.04590",
        citation=VLM2VEC_V2_CITATION,
        aggregations=tuple(aggregations),
    )


def mmeb_v2_benchmark(data=None, mmeb_data=None, image_root=None) -> Benchmark:
    """``MMEB-V2``: 36 image (MMEB v1, ``$MM_ST_MMEB_DATA``) + 18 video + 24 visual-document tasks
    (``$MM_ST_MMEB_V2_DATA``)."""
    return v2_benchmark("MMEB-V2", ("image", "video", "visdoc"), data, mmeb_data, image_root)


TASKS = tuple(MMEB_V2_TASK_CLASSES.values())
BENCHMARK = mmeb_v2_benchmark
__all__ = ["MMEBV2Task", "MMEB_V2_TASK_CLASSES", "mmeb_v2_benchmark", "mmeb_v2_tasks", "v2_benchmark",
           *TASK_CLASSES_BY_CLASS_NAME]
