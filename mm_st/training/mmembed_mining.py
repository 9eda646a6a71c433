"""MM-Embed's stage 2 mining: modality-aware hard negatives mined by the stage-1 model from each task's candidate
pool, saved as parquet with ``mining.json`` (what they were mined from, and the counts per task), reused by a re-run
with the same miner, data and settings (:func:`mining_key`), and reported on the console and in ``stages.json``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import datasets

from mm_st.training import console
from mm_st.training.config import StageContext
from mm_st.training.fingerprints import mbeir_fingerprint, saved_model_fingerprint

logger = logging.getLogger("mm_st.training.mmembed.mining")  # under the recipe's logger


def listed_positives(root: Path, split: str) -> dict[str, list[str]]:
    """Each training query's ``pos_cand_list`` by qid (every listed positive is excluded from its negatives)."""
    from mm_st.data.mbeir import mbeir_query_files, query_rows

    listed: dict[str, list[str]] = {}
    for path in mbeir_query_files(root, split):
        for entry in (row.data for row in query_rows(path)):
            ids = entry.get("pos_cand_list")
            if isinstance(entry.get("qid"), str) and isinstance(ids, list):
                listed.setdefault(entry["qid"], []).extend(d for d in ids if isinstance(d, str))
    return listed



def type2_window(pool: list[dict], positive_modality: str, ranks: tuple[int, int]) -> tuple[int, int]:
    """The type-2 rank window, moved up when the pool holds fewer right-modality candidates than its last rank."""
    first, last = ranks
    available = sum(1 for entry in pool if entry.get("modality") == positive_modality) - 1
    if available >= last:
        return first, last
    width = last - first
    return max(1, available - width), max(1, available)


MINED_FORMAT = 2  # image paths relative to the M-BEIR root (format 1: absolute or working-directory-relative paths)
KEY_NAMES = {"miner": "the mining model's weights", "data": "the M-BEIR data"}


def mining_key(stage: Any, tasks: list[str], miner: bool = True) -> dict[str, Any]:
    """What a set of mined negatives depends on (``mining.json``'s ``key``); ``miner=False`` leaves out the
    mining model (in the plan, before stage 1 has written it)."""
    from mm_st.training.heldout import held_out_fingerprint

    key = {"format": MINED_FORMAT, "data": mbeir_fingerprint(stage.data, stage.data_split), "ranks": list(stage.ranks()),
           "top_k": stage.mining_top_k, "num_negatives": stage.num_negatives, "tasks": sorted(tasks),
           "max_rows_per_dataset": stage.max_rows_per_dataset, **stage.mining_filters(), "fallback": "nearest",
           "excludes": "pos_cand_list"}
    held_out = held_out_fingerprint(stage.eval_data)
    if held_out:  # the training queries mined for: the held-out ones are not among them
        key["held_out"] = held_out
    return {"miner": saved_model_fingerprint(stage.mining_model), **key} if miner else key


def shared_negatives(stage: Any) -> Path | None:
    """The folder ``--mined-negatives`` points at (read, never rewritten), None for the recipe's own folder."""
    if not stage.mined_negatives:
        return None
    folder = Path(stage.mined_negatives)
    own = Path(stage.output_dir).parent / "mined-negatives"
    return None if folder.resolve() == own.resolve() else folder


def check_shared_negatives(stage: Any, key: dict[str, Any]) -> None:
    """A ``--mined-negatives`` folder holding a set mined with other settings (those in ``key``), or files that are
    no such set, is an error naming what differs; nothing in it is changed."""
    folder = shared_negatives(stage)
    if folder is None:
        return
    record = folder / "mining.json"
    advice = ("a folder --mined-negatives points at is read, never rewritten: leave --mined-negatives out to mine into "
              "this run's own folder, or point it at a set mined with these settings")
    if record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8")).get("key", {})
        differing = {k: (saved.get(k), v) for k, v in key.items() if saved.get(k) != v}
        if differing:
            details = "; ".join(f"{KEY_NAMES.get(k, k)}: {a!r} in the folder, {b!r} for this run"
                                for k, (a, b) in differing.items())
            raise ValueError(f"mmembed stage 2: --mined-negatives {str(folder)!r} holds negatives mined with other "
                             f"settings ({details}); {advice}.")
    elif folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"mmembed stage 2: --mined-negatives {str(folder)!r} holds files but no mining.json (not a set "
                         f"of mined negatives, or one whose mining was stopped); {advice}, or an empty or new folder.")


def _change_images(table: Any, change: Any) -> Any:
    """``table`` (pyarrow) with ``change(path)`` applied to the image path of every input column (the ``image``
    field, a path or datasets' ``{bytes, path}`` image struct)."""
    import pyarrow as pa

    def changed(values: Any) -> Any:
        kind = values.type
        if pa.types.is_struct(kind):
            fields = [changed(values.field(i)) if kind.field(i).name == "path" else values.field(i)
                      for i in range(kind.num_fields)]
            return pa.StructArray.from_arrays(fields, fields=list(kind), mask=values.is_null())
        return pa.array([change(path) if path else path for path in values.to_pylist()], type=kind)

    for index, column in enumerate(table.column_names):
        kind = table.schema.field(column).type
        if not (pa.types.is_struct(kind) and kind.get_field_index("image") >= 0):
            continue
        values = table.column(column).combine_chunks()
        fields = [changed(values.field(i)) if kind.field(i).name == "image" else values.field(i)
                  for i in range(kind.num_fields)]
        rebuilt = pa.StructArray.from_arrays(fields, fields=list(kind), mask=values.is_null())
        table = table.set_column(index, table.schema.field(column), rebuilt)
    return table


def save_mined(ds: datasets.Dataset, path: Path, root: Path) -> None:
    """Mined rows as parquet, image paths relative to the M-BEIR root (a set shared with another run, folder or
    machine reads its images from that run's own copy of the data, which ``mining.json``'s fingerprint matches)."""
    import pyarrow.parquet as pq

    base = root.resolve()
    pq.write_table(_change_images(ds.flatten_indices().data.table, lambda p: Path(p).relative_to(base).as_posix()),
                   str(path))


def read_mined(path: Path, root: Path) -> datasets.Dataset:
    """Mined rows saved by :func:`save_mined`, each image path resolved inside this run's M-BEIR root."""
    import pyarrow.parquet as pq

    from mm_st.io import resolve_inside

    where = f"{str(path)!r}"
    return datasets.Dataset(_change_images(pq.read_table(str(path)), lambda p: str(resolve_inside(root, p, where))))


def mined_negatives(stage: Any, named: dict[str, datasets.Dataset], context: StageContext) -> dict[str, datasets.Dataset]:
    """Each task's rows with ``num_negatives`` modality-aware negatives mined by ``stage.mining_model``, saved as
    parquet in ``stage.mined_negatives`` (the recipe's ``<output_dir>/mined-negatives/``, outside the stage's own
    folder, so that starting stage 2 over keeps them) with ``mining.json`` (what they were mined from and, per task,
    the counts: negatives by type, candidates filtered as likely false negatives, rows without a negative): a
    re-run with the same miner, data and settings reads them instead of mining again. A folder the user points at
    (``--mined-negatives DIR``) is read when it matches, mined into when it is new or empty, never rewritten."""
    from mm_st.data.mbeir import mbeir_root
    from mm_st.training.distributed import is_main_process

    folder = Path(stage.mined_negatives) if stage.mined_negatives else context.work_dir("mined-negatives")
    root = mbeir_root(stage.data)  # a local root, or the Hub snapshot
    key = mining_key(stage, list(named))
    record = folder / "mining.json"
    saved = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    if saved.get("key") == key:
        logger.info("stage 2: reusing the mined negatives in %s", folder)
        report_mining(stage, saved["counts"])
        return {name: read_mined(folder / f"{name}.parquet", root) for name in sorted(named)}
    check_shared_negatives(stage, key)
    if shared_negatives(stage) is not None and is_main_process():
        print(f"stage 2: mining into {str(folder)!r} (--mined-negatives: a new folder, shared from now on)", flush=True)
    if not is_main_process():
        raise RuntimeError(f"rank {os.environ.get('RANK')}: the main process did not save the mined negatives of this "
                           f"run in {str(folder)!r} ({record.name} is missing or records other inputs).")
    folder.mkdir(parents=True, exist_ok=True)
    record.unlink(missing_ok=True)
    miner = context.load_model(stage.mining_model)
    pools = stage.candidate_pools()
    listed = listed_positives(root, stage.data_split)
    out, counts = {}, {}
    for name, ds in named.items():
        mined, counts[name] = mine_task(stage, name, ds, pools, listed, miner, context)
        save_mined(mined, folder / f"{name}.parquet", root)
        out[name] = read_mined(folder / f"{name}.parquet", root)
    record.write_text(json.dumps({"key": key, "counts": counts}, indent=2) + "\n", encoding="utf-8")
    report_mining(stage, counts)
    return out


def mine_task(stage: Any, name: str, ds: datasets.Dataset, pools: dict[str, list[dict]],
               listed: dict[str, list[str]], miner: Any, context: StageContext) -> tuple[datasets.Dataset, dict[str, Any]]:
    """One task's mined rows and its counts for ``mining.json``."""
    from mm_st.mining import mine_hard_negatives

    dataset_id = ds[0]["qid"].split(":")[0]
    pool = pools.get(dataset_id)
    if not pool:
        from mm_st.data.mbeir import mbeir_root

        raise ValueError(f"mmembed stage 2: task {name} has no candidate pool for dataset id {dataset_id!r} in the "
                         f"pool files of split {stage.data_split!r} under {str(mbeir_root(stage.data) / 'cand_pool')!r} "
                         "(the plan's 'mined pools' line names them).")
    corpus = [{"text": e.get("txt") or None, "image": e["image"]} for e in pool]  # images checked inside the root
    pool_ids = {e["did"] for e in pool}
    others = [[d for d in listed.get(qid, []) if d in pool_ids and d != first]
              for qid, first in zip(ds["qid"], ds["positive_id"])]
    positive_modality = next(e.get("modality") for e in pool if e["did"] == ds[0]["positive_id"])
    ranks = type2_window(pool, positive_modality, stage.ranks())
    mined, report = mine_hard_negatives(
        miner, list(ds["anchor"]), corpus, list(ds["positive_id"]), other_positives=others,
        corpus_ids=[e["did"] for e in pool], strategy="modality_aware", ranks=ranks, top_k=stage.mining_top_k,
        num_negatives=stage.num_negatives, fallback="nearest", **stage.mining_filters(),
        cache_dir=context.work_dir("mining-cache"), return_report=True,  # one cache: the shared pool is encoded once
        show_progress_bar=console.library_bars())
    kinds = [kind for row in report.negative_type for kind in row]
    counts = {"rows": len(mined), "of": len(ds), "type1": kinds.count("type1"), "type2": kinds.count("type2"),
              "fallback": kinds.count("fallback"), "fallback_rows": len(report.fallback_queries),
              "fallback_rows_filtered": sum(1 for q in report.fallback_queries if report.filtered[q]),
              "dropped": len(report.dropped_queries), "filtered_false_negatives": report.margin_removed,
              "queries_with_filtered": sum(1 for f in report.filtered if f), "type2_ranks": list(ranks)}
    return mined, {**counts, "fallback_note": fallback_note(stage, name, counts)}


def fallback_note(stage: Any, name: str, c: dict[str, Any]) -> str | None:
    """A line for a task where more than ``max_unmined_share`` of the rows found no candidate in the type-2
    window and took the nearest one above it (kept, but not the negative the window asks for), with the reason."""
    share = c["fallback_rows"] / max(c["of"], 1)
    if share <= stage.max_unmined_share:
        return None
    low, high = c["type2_ranks"]
    reasons = [f"for {c['fallback_rows_filtered']} of them the false-negative filter ({stage.filter_line(short=True)}) "
               "removed the window's candidates" if c["fallback_rows_filtered"] else "",
               f"{c['fallback_rows'] - c['fallback_rows_filtered']} had too few right-modality candidates besides their "
               f"positives in the top {stage.mining_top_k}" if c["fallback_rows"] > c["fallback_rows_filtered"] else ""]
    return (f"stage 2, {name}: {c['fallback_rows']} of {c['of']} rows ({share:.0%}) had no candidate at ranks "
            f"{low}-{high} and took the nearest one above them: " + "; ".join(r for r in reasons if r))


def unmined_warnings(stage: Any, counts: dict[str, dict[str, Any]]) -> list[str]:
    """A warning per task whose mining left more than ``max_unmined_share`` of its rows without a negative."""
    out = []
    for name, c in counts.items():
        share = c["dropped"] / max(c["of"], 1)
        if share > stage.max_unmined_share:
            out.append(f"warning: stage 2 lost {share:.0%} of task {name}'s rows ({c['dropped']} of {c['of']}; more "
                       f"than max_unmined_share {stage.max_unmined_share:g}): no negative is left in its pool "
                       "after the exclusions and the filter; lower --mining-relative-margin or add candidates")
    return out



def report_mining(stage: Any, counts: dict[str, dict[str, Any]]) -> list[str]:
    """Print each task's mining line, and a warning for every task that lost rows; the warnings (also in
    ``stages.json`` through :meth:`MMEmbedRun.record`)."""
    from mm_st.training.distributed import is_main_process

    lines = []
    for name, c in counts.items():
        lines.append(f"stage 2, {name}: {c['rows']} of {c['of']} rows mined ({c['type1']} type-1, {c['type2']} type-2 "
                     f"at ranks {c['type2_ranks'][0]}-{c['type2_ranks'][1]}, {c['fallback']} nearest-the-window "
                     f"fallback); {c['filtered_false_negatives']:,} candidates filtered as likely false negatives")
        if c["dropped"]:
            lines.append(f"stage 2, {name}: {c['dropped']} of {c['of']} rows dropped: no candidate besides the "
                         "positives, their duplicates and the filtered ones is left in the task's pool")
        if c.get("fallback_note"):  # mining.json of older runs has none
            lines.append(c["fallback_note"])
    warnings = unmined_warnings(stage, counts)
    if is_main_process():
        print("\n".join(lines + warnings), flush=True)
    return warnings


def mining_line(folder: Path) -> str:
    """One line on stage 2's mined negatives (``mining.json``'s counts, summed over tasks)."""
    counts = json.loads((folder / "mining.json").read_text(encoding="utf-8"))["counts"].values()
    total = {key: sum(c[key] for c in counts) for key in ("rows", "of", "type1", "type2", "fallback")}
    return (f"mined negatives: {total['rows']:,} of {total['of']:,} queries have a mined negative ({total['type1']:,} type-1, "
            f"{total['type2']:,} type-2, {total['fallback']:,} fallback), saved in {folder}")
