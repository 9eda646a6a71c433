"""Where M-BEIR's test tasks live under a root, and their names and paper metrics (no mteb needed).

The table the local-pool tasks (:mod:`mm_st.evaluation.mbeir_local`), the union-pool tasks
(:mod:`mm_st.evaluation.mbeir_global`) and the per-recipe instruction tables
(:mod:`mm_st.evaluation.instructions`) read.

Example:
    >>> from mm_st.evaluation.mbeir_files import MBEIR_LOCAL_FILES, paper_metric
    >>> [(f.name, f.query_file, paper_metric(f)) for f in MBEIR_LOCAL_FILES[:1]]
    [('VisualNews_t2i', 'query/test/mbeir_visualnews_task0_test.jsonl', 'recall_at_5')]
"""

from __future__ import annotations

from dataclasses import dataclass

from mm_st.data.emoji import EMOJI_MBEIR_DATASET, EMOJI_MBEIR_POOL_FILE, EMOJI_MBEIR_QUERY_FILE, EMOJI_MBEIR_TASKS
from mm_st.data.mbeir import mbeir_task_name
from mm_st.modality import MBEIR_SPELLINGS, from_mbeir, to_letters

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



def modality_parts(modality: str) -> set[str]:
    return set(modality.split(","))


def category_letters(modality: str) -> str:
    """mteb's category letters of an M-BEIR modality (``"image,text"`` -> ``"it"``)."""
    return to_letters(from_mbeir(modality, "M-BEIR modality"))


MBEIR_LOCAL_TASKS: dict[str, str] = {PREFIX + f.name: paper_metric(f) for f in MBEIR_LOCAL_FILES}  # name -> paper metric
EMOJI_MBEIR_TASK_NAMES: tuple[str, ...] = tuple(PREFIX + f.name for f in EMOJI_FILES)
