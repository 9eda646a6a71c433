"""Training queries held out of a recipe run, so that every run can tell whether a stage made the model worse.

Without ``--eval-data`` the MM-Embed recipe sets aside a seeded share of each M-BEIR training task's queries
(:func:`held_out_count`: ``held_out_share`` of the task, at least :data:`MIN_QUERIES`, at most :data:`MAX_QUERIES`
and never more than :data:`MAX_TASK_SHARE` of it) and writes them to ``<output_dir>/held-out/`` in M-BEIR's layout:
``query/test/mbeir_heldout_<task>_test.jsonl`` (the query rows as the data has them), one candidate pool per
dataset ``cand_pool/local/mbeir_heldout_<dataset id>_cand_pool.jsonl`` (the dataset's training pool: every listed
positive of the held-out queries plus a seeded sample, at most :data:`MAX_POOL` candidates) and ``held-out.json``
(what was held out, from what). Images stay where the data has them. The stages never train on, nor mine for, a
held-out query, and evaluate every stage on them (:func:`held_out_tasks`, read by
:class:`~mm_st.training.evaluators.MBEIREvaluator`).

Which queries are held out depends only on the seed and the query ids (the ``count`` ids whose seeded hash is
smallest): a re-run, a resumed run and a run on data with more rows hold out the same ones.

Example:
    >>> held_out_count(40, 0.05), held_out_count(1000, 0.05), held_out_count(10**6, 0.05), held_out_count(3, 0.05)
    (8, 50, 1000, 0)
    >>> choose_held_out(["1:a", "1:b", "1:c", "1:d", "1:e"], count=2, seed=0) == choose_held_out(
    ...     ["1:e", "1:d", "1:c", "1:b", "1:a"], count=2, seed=0)
    True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELD_OUT_FILE = "held-out.json"
FORMAT = 1
MIN_QUERIES = 20  # fewer queries make a top-1 score too coarse to compare stages
MAX_QUERIES = 1000  # M-BEIR's large tasks: enough for the signal, cheap to score after each stage
MAX_TASK_SHARE = 0.2  # a small task still trains on at least 80% of its queries
MAX_POOL = 10_000  # candidates per dataset the held-out queries are ranked against
MIN_TASK_ROWS = round(1 / MAX_TASK_SHARE)  # a smaller task holds nothing out


def held_out_count(rows: int, share: float) -> int:
    """How many of a task's ``rows`` queries are held out for ``share`` (0 = none)."""
    if share <= 0:
        return 0
    return min(max(round(rows * share), MIN_QUERIES), MAX_QUERIES, int(rows * MAX_TASK_SHARE))


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def choose_held_out(ids: Iterable[str], count: int, seed: int) -> list[str]:
    """The ``count`` ids whose seeded hash is smallest, sorted (the same for any order of ``ids``)."""
    return sorted(sorted(set(ids), key=lambda i: _rank(seed, i))[:count])


def is_held_out(folder: str | Path | None) -> bool:
    """Whether ``folder`` is a held-out folder written by :func:`write_held_out`."""
    return folder is not None and (Path(folder) / HELD_OUT_FILE).is_file()


def read_record(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / HELD_OUT_FILE).read_text(encoding="utf-8"))


def held_out_qids(folder: str | Path | None) -> set[str]:
    """Every held-out query id of ``folder`` (empty when it is no held-out folder)."""
    if not is_held_out(folder):
        return set()
    return {qid for task in read_record(folder)["tasks"].values() for qid in task["qids"]}


def held_out_fingerprint(folder: str | Path | None) -> str | None:
    """A short hash of the held-out query ids (None: nothing held out), for keys that depend on the training rows."""
    qids = held_out_qids(folder)
    return hashlib.sha256("\n".join(sorted(qids)).encode()).hexdigest()[:16] if qids else None


def without_held_out(ds: Any, qids: set[str]) -> Any:
    """``ds`` (with a ``qid`` column) less the rows of ``qids``."""
    keep = [i for i, qid in enumerate(ds["qid"]) if qid not in qids]
    return ds if len(keep) == len(ds) else ds.select(keep)


# -- writing ----------------------------------------------------------------------------------------------------


def held_out_key(data: str, split: str, share: float, seed: int, fingerprint: str) -> dict[str, Any]:
    """What a held-out folder depends on (``held-out.json``'s ``key``)."""
    return {"format": FORMAT, "data": fingerprint, "split": split, "share": share, "seed": seed,
            "limits": [MIN_QUERIES, MAX_QUERIES, MAX_TASK_SHARE, MAX_POOL]}


def write_held_out(folder: Path, root: Path, split: str, named: dict[str, Any], pools: dict[str, list[dict]],
                   key: dict[str, Any], seed: int) -> dict[str, Any]:
    """Write the held-out queries of each task of ``named`` (datasets with ``qid`` and ``positive_id``) and their
    pools (``pools``: the training pools by dataset id, as :func:`~mm_st.data.converters.mbeir_candidate_pools`
    gives them) under ``folder`` (emptied first); the record (also in ``held-out.json``)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from mm_st.data.mbeir import mbeir_instructions, mbeir_modality, mbeir_query_files, query_rows

    rows = {row.data.get("qid"): row.data for path in mbeir_query_files(root, split) for row in query_rows(path)}
    instructions = mbeir_instructions(root)
    tasks, wanted = {}, {}
    for name, ds in sorted(named.items()):
        dataset_id = ds[0]["qid"].split(":")[0]
        in_pool = {e["did"] for e in pools.get(dataset_id, [])}
        eligible = [q for q, p in zip(ds["qid"], ds["positive_id"]) if p in in_pool]
        qids = choose_held_out(eligible, held_out_count(len(ds), key["share"]), seed)
        if not qids:
            continue
        positive = dict(zip(ds["qid"], ds["positive_id"]))[qids[0]]
        tasks[name] = {"dataset_id": dataset_id,
                       "query_modality": mbeir_modality(rows[qids[0]].get("query_modality"), f"query {qids[0]}"),
                       "candidate_modality": next(e["modality"] for e in pools[dataset_id] if e["did"] == positive),
                       "query_file": f"query/test/mbeir_heldout_{name}_test.jsonl",
                       "pool_file": f"cand_pool/local/mbeir_heldout_{dataset_id}_cand_pool.jsonl",
                       "instruction": instructions.get(name), "of": len(ds), "qids": qids}
        wanted.setdefault(dataset_id, set()).update(p for q in qids for p in rows[q]["pos_cand_list"])
    for dataset_id, listed in wanted.items():
        pool = _held_out_pool(pools[dataset_id], listed, seed)
        _write_jsonl(folder / f"cand_pool/local/mbeir_heldout_{dataset_id}_cand_pool.jsonl", pool)
        ids = {e["did"] for e in pool}
        for name, task in tasks.items():
            if task["dataset_id"] == dataset_id:
                _write_jsonl(folder / task["query_file"], [
                    {**rows[q], "pos_cand_list": [p for p in rows[q]["pos_cand_list"] if p in ids]} for q in task["qids"]])
    record = {"key": key, "source": str(root.resolve()), "tasks": tasks}
    (folder / HELD_OUT_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return record


def _held_out_pool(pool: list[dict], listed: set[str], seed: int) -> list[dict]:
    """The listed positives and a seeded sample of the other candidates, at most :data:`MAX_POOL` (the positives
    first), in the pool's order, without the resolved ``image`` the pools carry."""
    others = choose_held_out((e["did"] for e in pool if e["did"] not in listed), max(MAX_POOL - len(listed), 0), seed)
    keep = listed | set(others)
    return [{k: v for k, v in e.items() if k != "image"} for e in pool if e["did"] in keep]


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def plan_line(folder: str | Path, max_score_drop: float) -> str:
    """What the plan says about the held-out queries of ``folder``."""
    record = read_record(folder)
    counts = ", ".join(f"{name} {len(t['qids'])} of {t['of']}" for name, t in record["tasks"].items()) or "none"
    return (f"held-out comparison: no --eval-data, so {record['key']['share']:.0%} of each task's training queries "
            f"(at least {MIN_QUERIES}, at most {MAX_QUERIES} and a fifth of the task; --held-out-share 0 = none) are "
            f"held out, never trained on or mined: {counts}, in {folder}; after each stage each task is scored on them "
            f"against the model the stage started from and the earlier stages; a top-1 drop above {max_score_drop:g} "
            "is a warning")


# -- evaluating -------------------------------------------------------------------------------------------------


def held_out_tasks(folder: str | Path) -> list[Any]:
    """One mteb task per held-out task of ``folder`` (``MMST-MBEIR-heldout-<task>``: its queries against its
    dataset's held-out pool, images under the data's root)."""
    record = read_record(folder)
    return [_task_class(name, task)(data=str(folder), image_root=record["source"])
            for name, task in record["tasks"].items()]


def _task_class(name: str, task: dict[str, Any]) -> type:
    from mm_st.evaluation.mbeir import MBEIRLocalTask, MBEIRTaskFiles

    @dataclass(frozen=True)
    class HeldOutFiles(MBEIRTaskFiles):
        query_modality: str = ""
        candidate_modality: str = ""

        @property
        def modalities(self) -> tuple[str, str]:
            return self.query_modality, self.candidate_modality

    files = HeldOutFiles(task["dataset_id"], -1, task["query_file"], task["pool_file"], None,
                         task["query_modality"], task["candidate_modality"])
    return type("MBEIRHeldOut" + "".join(c for c in name if c.isalnum()), (MBEIRLocalTask,),
                {"metadata": _metadata(name, task), "files": files, "__module__": __name__})


def _metadata(name: str, task: dict[str, Any]) -> Any:
    """The emoji M-BEIR tasks' declaration (mixed pool, Recall@1, UniIR's citation) for held-out task ``name``."""
    from mm_st.evaluation.mbeir import EMOJI_FILES, MBEIR_TASK_CLASSES, PREFIX, category_letters

    return MBEIR_TASK_CLASSES[EMOJI_FILES[0].name].metadata.model_copy(update=dict(
        name=f"{PREFIX}heldout-{name}",
        description=f"Training queries of M-BEIR task {name} held out of a recipe run (never trained on), ranked "
                    "against their dataset's training pool (mm_st.training.heldout).",
        dataset={"path": "local/mm_st-held-out", "revision": "held-out"},
        category=f"{category_letters(task['query_modality'])}2it",  # the pool may mix images and texts
        sample_creation="found",
        prompt={"query": task["instruction"]} if task.get("instruction") else None,
    ))
