"""M-BEIR's union (global) pool as mteb tasks (mm_st.evaluation.mbeir_global): brute-force equality, the
wrong-modality rate over three modalities, chunked search, one encoding of the pool for all tasks, the
benchmark through the mteb command, and the local tasks' error that points to them."""

import json
import shutil
import subprocess
from pathlib import Path

import datasets
import mteb
import numpy as np
import pytest
import torch
from mteb.results import BenchmarkResults, ModelResult, TaskResult

import mm_st.evaluation as E
from mm_st import build_model
from mm_st.data.emoji import EMOJI_MBEIR_TASKS
from mm_st.evaluation import mbeir_global as G
from mm_st.mining.search import TorchSearch
from mm_st.mining.store import Embeddings
from mm_st.testing import tiny_model
from mm_st.training.embedded import write_mbeir
from tests.mmst_eval_data import emoji
from tests.evaluation.test_evaluation import _env, _mteb_command
from tests.evaluation.test_mbeir import _inputs, _jsonl

LIMIT = 6
LOCAL_POOL = "cand_pool/local/mbeir_emoji_test_cand_pool.jsonl"
TWO = ["Emoji_t2i", "Emoji_i2t"]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_union_layout(root: Path) -> Path:
    """The embedded emoji test split (five tasks, a local pool) plus a union test pool: the local pool's
    candidates and other tasks' candidates of all three modalities (texts, images, image+text pairs)."""
    write_mbeir(root, split="test", limit=LIMIT)
    local = _jsonl(root / LOCAL_POOL)
    images = [r["img_path"] for r in local if r["modality"] == "image"]
    other = [{"did": f"0:{i}", "txt": f"news headline number {i}", "img_path": None, "modality": "text"} for i in range(5)]
    other += [{"did": f"6:{i}", "txt": f"what is shown in picture {i}?", "img_path": images[i % len(images)],
               "modality": "image,text"} for i in range(4)]
    _write_jsonl(root / E.mbeir.UNION_POOL.format(split="test"), local + other)
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_union_layout(tmp_path_factory.mktemp("mbeir-union"))


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_model("llava"), recipe="mmembed")


def _brute_force(root: Path, model, task: str) -> dict[str, float]:
    """Recall@1, Recall@5 and the wrong-modality top-1 rate of ``task``'s queries against the whole union pool."""
    pool = _jsonl(root / E.mbeir.UNION_POOL.format(split="test"))
    docs = model.encode_document(_inputs(root, pool, "txt", "img_path"), batch_size=8, convert_to_numpy=True)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    spec = EMOJI_MBEIR_TASKS[task]
    rows = _jsonl(root / f"query/test/mbeir_emoji_task{spec.task_id}_test.jsonl")
    queries = model.encode_query(_inputs(root, rows, "query_txt", "query_img_path"), prompt=spec.instruction,
                                 batch_size=8, convert_to_numpy=True)
    order = np.argsort(-(queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ docs.T, axis=1, kind="stable")
    ids = [[pool[j]["did"] for j in ranking] for ranking in order]
    positive_modality = {pool_row["did"]: pool_row["modality"] for pool_row in pool}
    out = {}
    for k in (1, 5):
        out[f"recall_at_{k}"] = np.mean([len(set(r[:k]) & set(q["pos_cand_list"])) / len(q["pos_cand_list"])
                                         for r, q in zip(ids, rows)])
    out["wrong_modality_at_1"] = np.mean([positive_modality[r[0]] != spec.candidate_modality for r in ids])
    return out


# ------------------------------------------------------------------------------------------------


def test_union_scores_equal_a_brute_force_ranking_and_the_pool_is_encoded_once(root, model, tmp_path):
    pool_size = len(_jsonl(root / E.mbeir.UNION_POOL.format(split="test")))
    assert pool_size > len(_jsonl(root / LOCAL_POOL))
    encoder = E.MMSTEncoder(model, name="local/tiny")
    tasks = G.global_tasks(TWO, data=root, cache_dir=tmp_path / "cache", chunk_size=4)  # chunks smaller than the pool
    result = mteb.evaluate(encoder, tasks, cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 8})
    assert encoder.encoded["document"] == pool_size  # once for both tasks
    assert encoder.encoded["query"] == 2 * LIMIT
    for task, task_result in zip(TWO, result.task_results):
        scores = task_result.scores["test"][0]
        assert task_result.task_name == f"MMST-MBEIR-global-{task}"
        expected = _brute_force(root, model, task)
        for metric, value in expected.items():
            assert scores[metric] == pytest.approx(value, abs=1e-5), (task, metric)  # mteb rounds to 5 places
        assert {"recall_at_10", "ndcg_at_10", "mrr_at_10"} <= set(scores)
    # the chunk files stay on disk: a new process (the kept stores forgotten) reuses them, encoding nothing
    G.forget_stores(tmp_path / "cache")
    again = E.MMSTEncoder(model, name="local/tiny")
    rerun = mteb.evaluate(again, G.global_tasks(TWO, data=root, cache_dir=tmp_path / "cache", chunk_size=4), cache=None,
                          show_progress_bar=False, encode_kwargs={"batch_size": 8})
    assert again.encoded["document"] == 0 and again.encoded["query"] == 2 * LIMIT
    assert [r.scores for r in rerun.task_results] == [r.scores for r in result.task_results]
    assert len(list((tmp_path / "cache").glob("corpus-*/chunk-*.npy"))) == -(-pool_size // 4)


def test_evaluate_mbeir_runs_local_and_union_tasks_and_removes_its_temporary_cache(root, model, tmp_path, monkeypatch):
    monkeypatch.setenv(G.CACHE_ENV, str(tmp_path / "default-cache"))
    names = G.eval_task_names(root)
    assert names == [*EMOJI_MBEIR_TASKS, *(f"global-{t}" for t in EMOJI_MBEIR_TASKS)]
    scores = E.evaluate_mbeir(model, ["Emoji_t2i", "global-Emoji_t2i"], data=root, encode_kwargs={"batch_size": 8})
    assert scores["global-Emoji_t2i"] == pytest.approx(_brute_force(root, model, "Emoji_t2i"), abs=1e-5)
    assert scores["global-Emoji_t2i"]["recall_at_1"] <= scores["Emoji_t2i"]["recall_at_1"] + 1e-9  # a superset pool
    assert list((tmp_path / "default-cache").iterdir()) == []  # its temporary folder is gone
    chance = E.mbeir_chance(["global-Emoji_t2i"], data=root)["global-Emoji_t2i"]
    pool = _jsonl(root / E.mbeir.UNION_POOL.format(split="test"))
    assert chance["recall_at_1"] == pytest.approx(1 / len(pool))
    assert chance["wrong_modality_at_1"] == pytest.approx(1 - sum(r["modality"] == "image" for r in pool) / len(pool))
    assert G.eval_task_names(write_mbeir(tmp_path / "no-union", split="test", limit=2)) is None


def test_chunked_search_equals_the_unchunked_and_a_brute_force_top_k():
    generator = torch.Generator().manual_seed(0)
    docs = torch.randn(103, 16, generator=generator).numpy()
    queries = torch.nn.functional.normalize(torch.randn(9, 16, generator=generator), dim=1)
    expected = (queries @ torch.nn.functional.normalize(torch.from_numpy(docs), dim=1).T).topk(10, dim=1)
    for chunk, query_chunk in ((103, 9), (7, 4), (1, 1)):
        scores, found = G.ranked(queries, Embeddings.from_array(docs, chunk), 10, query_chunk,
                                 TorchSearch(query_chunk, chunk, torch.device("cpu")))
        assert torch.equal(found, expected.indices), chunk
        assert torch.allclose(scores, expected.values, atol=1e-6)
    scores, found = G.ranked(queries[:2], Embeddings.from_array(docs[:3], 2), 10, 2, TorchSearch(2, 2, torch.device("cpu")))
    assert found.shape == (2, 3)  # a pool smaller than k: every candidate, once


def test_wrong_modality_counts_any_other_modality_over_the_union_pool(root, tmp_path):
    task = G.global_tasks(["Emoji_t2i"], data=root)[0]
    task.load_data()
    modality = task.pool_modalities["test"]
    assert set(modality.values()) == {"text", "image", "image,text"}
    relevant = task.dataset["default"]["test"]["relevant_docs"]
    qids = list(relevant)[:4]
    positive = {q: next(iter(relevant[q])) for q in qids}
    image = next(d for d, m in modality.items() if m == "image" and d not in positive.values())
    pair = next(d for d, m in modality.items() if m == "image,text")
    text = next(d for d, m in modality.items() if m == "text")
    results = {qids[0]: {pair: 0.9, positive[qids[0]]: 0.8},      # an image+text pair on top: wrong
               qids[1]: {image: 0.9, positive[qids[1]]: 0.8},     # another image: right modality, not wrong
               qids[2]: {positive[qids[2]]: 0.9, text: 0.1},      # the positive
               qids[3]: {text: 0.95, positive[qids[3]]: 0.5}}     # a text: wrong
    scores = task.task_specific_scores({}, {q: relevant[q] for q in qids}, results, "test", "default")
    assert scores == {"wrong_modality_at_1": 0.5}
    # the val split reads query/val and the union val pool
    val = tmp_path / "val-root"
    shutil.copytree(root, val)
    _write_jsonl(val / "query/val/mbeir_emoji_task0_val.jsonl", _jsonl(val / "query/test/mbeir_emoji_task0_test.jsonl"))
    union = _jsonl(val / E.mbeir.UNION_POOL.format(split="test"))
    _write_jsonl(val / E.mbeir.UNION_POOL.format(split="val"), union[:-2])
    task = G.global_tasks(["Emoji_t2i"], data=val)[0].filter_eval_splits(["val"])
    task.load_data()
    assert len(task.pool_modalities["val"]) == len(union) - 2 and "test" not in task.pool_modalities


def test_a_missing_union_pool_and_a_mixed_local_pool_name_the_union_task(root, tmp_path):
    bare = write_mbeir(tmp_path / "bare", split="test", limit=2)
    with pytest.raises(E.DataLayoutError, match=r"union pool missing: '.*cand_pool/global/mbeir_union_test_cand_pool"):
        G.global_tasks(["Emoji_t2i"], data=bare)[0].load_data()
    with pytest.raises(E.DataLayoutError, match="No M-BEIR union-pool task"):
        G.global_tasks(data=bare)
    # a local NIGHTS (image -> image) pool holding a text candidate: refused, pointing to the union-pool task
    images, _ = emoji(2)
    nights = tmp_path / "nights"
    (nights / "mbeir_images").mkdir(parents=True)
    for i, image in enumerate(images):
        image.save(nights / f"mbeir_images/{i}.png")
    pool = [{"did": f"4:{i}", "txt": None, "img_path": f"mbeir_images/{i}.png", "modality": "image"} for i in range(2)]
    pool.append({"did": "4:9", "txt": "a caption", "img_path": None, "modality": "text"})
    _write_jsonl(nights / "cand_pool/local/mbeir_nights_task4_cand_pool.jsonl", pool)
    _write_jsonl(nights / "query/test/mbeir_nights_task4_test.jsonl", [
        {"qid": "4:0", "query_txt": None, "query_img_path": "mbeir_images/0.png", "query_modality": "image",
         "pos_cand_list": ["4:0"]}])
    with pytest.raises(ValueError, match=r"row 2 \(candidate 4:9\) holds text 'a caption'.*mteb would drop it\)\. A pool "
                                         r"that mixes modalities is what the union-pool task MMST-MBEIR-global-NIGHTS_i2i "
                                         r"ranks against: put it into cand_pool/global/mbeir_union_test_cand_pool.jsonl"):
        E.mbeir_tasks(["NIGHTS_i2i"], data=nights)[0].load_data()
    # the same data as a union pool: it loads, and every kind of candidate is ranked
    _write_jsonl(nights / E.mbeir.UNION_POOL.format(split="test"), pool)
    task = G.global_tasks(data=nights)[0]
    task.load_data()
    assert task.metadata.name == "MMST-MBEIR-global-NIGHTS_i2i" and task.metadata.category == "i2it"
    assert task.metadata.main_score == "recall_at_5" and len(task.pool_modalities["test"]) == 3


def test_registration_and_the_benchmark_of_a_root(root, monkeypatch):
    assert mteb.get_task("MMST-MBEIR-global-VisualNews_t2i").metadata.main_score == "recall_at_5"
    assert mteb.get_task("MMST-MBEIR-global-Fashion200K_i2t").metadata.main_score == "recall_at_10"
    assert isinstance(mteb.get_benchmark("M-BEIR-global"), type(E.mbeir_global_benchmark(data=root)))
    monkeypatch.delenv("MM_ST_MBEIR_DATA", raising=False)
    default = E.mbeir_global_benchmark()  # no root configured: M-BEIR's 16
    assert sorted(t.metadata.name for t in default.tasks) == sorted(G.MBEIR_GLOBAL_TASKS)
    here = E.mbeir_global_benchmark(data=root)
    assert [t.metadata.name for t in here.tasks] == [f"MMST-MBEIR-global-{t}" for t in EMOJI_MBEIR_TASKS]
    from mm_st.evaluation.instructions import recipe_task_prompts

    mmembed = recipe_task_prompts()["mmembed"]
    assert mmembed["MMST-MBEIR-global-WebQA_t2t"] == mmembed["MMST-MBEIR-WebQA_t2t"]
    # the benchmark's scores: mteb's mean, the paper metric's mean and the mean wrong-modality rate
    results = [TaskResult(dataset_revision="x", task_name=name, mteb_version="2", evaluation_time=1.0, scores={"test": [
        {"hf_subset": "default", "languages": ["eng-Latn"], "main_score": 0.5, "recall_at_5": 0.2, "recall_at_10": 0.9,
         "wrong_modality_at_1": i / 16}]}) for i, name in enumerate(sorted(G.MBEIR_GLOBAL_TASKS))]
    score = default.get_score(BenchmarkResults(model_results=[
        ModelResult(model_name="t/m", model_revision="1", task_results=results)]))["t/m"]
    assert score[E.MBEIR_SCORE] == pytest.approx((13 * 0.2 + 3 * 0.9) / 16)
    assert score[E.WRONG_MODALITY_SCORE] == pytest.approx(sum(range(16)) / 16 / 16)


@pytest.mark.slow
def test_mteb_run_of_the_global_benchmark_reports_recall_and_the_wrong_modality_rate(root, model, tmp_path):
    saved, results = tmp_path / "tiny-mmembed", tmp_path / "results"
    model.save(str(saved))
    run = subprocess.run(
        _mteb_command(tmp_path / "site") + ["run", "-m", str(saved), "-b", "M-BEIR-global", "--output-folder",
                                            str(results), "-v", "1", "--batch-size", "8"],
        env=_env(MM_ST_MBEIR_DATA=str(root), MM_ST_MBEIR_CACHE=str(tmp_path / "cache")),
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    written = {p.stem: json.loads(p.read_text())["scores"]["test"][0] for p in results.rglob("MMST-MBEIR-global-*.json")}
    assert sorted(written) == sorted(f"MMST-MBEIR-global-{t}" for t in EMOJI_MBEIR_TASKS)
    for scores in written.values():
        assert 0 <= scores["wrong_modality_at_1"] <= 1 and 0 <= scores["recall_at_5"] <= 1
    assert len(list((tmp_path / "cache").glob("corpus-*"))) == 1  # one encoding of the pool for the five tasks
    expected = _brute_force(root, model, "Emoji_t2i")
    assert written["MMST-MBEIR-global-Emoji_t2i"]["wrong_modality_at_1"] == pytest.approx(expected["wrong_modality_at_1"])


def test_the_mmembed_recipe_evaluates_the_union_tasks_when_its_eval_root_has_a_union_pool(root, tmp_path):
    from mm_st.training.data import Sources
    from mm_st.training.mmembed import RandomNegativesStage

    stage = RandomNegativesStage()
    with_union = stage.evaluator(Sources(None, None, str(root)), tmp_path / "eval")
    assert with_union.tasks == [*EMOJI_MBEIR_TASKS, *(f"global-{t}" for t in EMOJI_MBEIR_TASKS)]
    without = stage.evaluator(Sources(None, None, str(write_mbeir(tmp_path / "plain", split="test", limit=2))), tmp_path)
    assert without.tasks is None  # every local task, as before
    chosen = RandomNegativesStage(eval_tasks=["Emoji_t2i"]).evaluator(Sources(None, None, str(root)), tmp_path)
    assert chosen.tasks == ["Emoji_t2i"]


# -- the union pool streamed to disk (bounded memory) ------------------------------------------------


def _loaded_pool(root: Path, cache: Path):
    task = G.global_tasks(["Emoji_t2i"], data=root, cache_dir=cache)[0]
    task.load_data()
    return task, task.dataset["default"]["test"]["corpus"], task.pool_modalities["test"]


def test_the_union_pool_is_a_memory_mapped_arrow_file_with_an_id_index_reused_across_processes(root, tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setattr(G, "POOL_BATCH", 4)  # several batches: row numbers and ids continue across them
    pool = _jsonl(root / E.mbeir.UNION_POOL.format(split="test"))
    task, corpus, modality = _loaded_pool(root, tmp_path / "cache")
    [arrow] = [Path(f["filename"]) for f in corpus.cache_files]  # on disk, not an in-memory table
    assert arrow.parent.parent == tmp_path / "cache" and arrow.parent.name.startswith("pool-")
    assert corpus["id"] == [r["did"] for r in pool] and corpus["text"] == [r["txt"] or "" for r in pool]
    assert [img is not None for img in corpus.select_columns(["image"]).cast_column(
        "image", datasets.Image(decode=False))["image"]] == ["image" in r["modality"] for r in pool]
    assert dict(modality.items()) == {r["did"]: r["modality"] for r in pool}
    assert len(modality) == len(pool) and "no-such-id" not in modality and set(modality.values()) == {
        "text", "image", "image,text"}
    with pytest.raises(KeyError):
        modality["no-such-id"]
    # a new process (the kept pools forgotten) maps the same file: nothing is read or written again
    written = arrow.stat().st_mtime_ns
    G._POOLS.clear()
    monkeypatch.setattr(G, "write_pool", None)
    again = _loaded_pool(root, tmp_path / "cache")[1]
    assert again.cache_files == corpus.cache_files and arrow.stat().st_mtime_ns == written
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [arrow.parent.name]


def test_colliding_id_hashes_still_find_every_candidate_and_the_duplicate(root, tmp_path, monkeypatch):
    monkeypatch.setattr(G, "_id_hash", lambda did: len(did))  # many ids share a hash
    pool = _jsonl(root / E.mbeir.UNION_POOL.format(split="test"))
    modality = _loaded_pool(root, tmp_path / "cache")[2]
    assert all(modality[r["did"]] == r["modality"] for r in pool) and "0:99" not in modality
    G._POOLS.clear()
    copy = tmp_path / "dup"
    shutil.copytree(root, copy)
    _write_jsonl(copy / E.mbeir.UNION_POOL.format(split="test"), [*pool[:3], {**pool[5], "did": "0:1"}, *pool[3:]])
    with pytest.raises(ValueError, match=r"candidate id '0:1' is in mbeir_union_test_cand_pool.jsonl row 3 and in "
                                         r"mbeir_union_test_cand_pool.jsonl row \d+ with other content \(lines 4 and \d+\)"):
        _loaded_pool(copy, tmp_path / "cache2")


def test_a_bad_union_pool_row_is_named_across_batches_and_leaves_no_cache(root, tmp_path, monkeypatch):
    monkeypatch.setattr(G, "POOL_BATCH", 4)
    pool = _jsonl(root / E.mbeir.UNION_POOL.format(split="test"))
    copy = tmp_path / "bad"
    shutil.copytree(root, copy)
    duplicate = {**pool[1], "modality": "text", "txt": "again"}
    _write_jsonl(copy / E.mbeir.UNION_POOL.format(split="test"), [*pool[:9], duplicate])
    with pytest.raises(ValueError, match=rf"candidate id {pool[1]['did']!r} is in mbeir_union_test_cand_pool.jsonl row 1 "
                                         r"and in mbeir_union_test_cand_pool.jsonl row 9 with other content \(lines 2 and 10\)"):
        _loaded_pool(copy, tmp_path / "cache")
    _write_jsonl(copy / E.mbeir.UNION_POOL.format(split="test"), [*pool[:6], {**pool[6], "txt": None, "modality": "text"}])
    with pytest.raises(ValueError, match=rf"mbeir_union_test_cand_pool.jsonl row 6 \(candidate {pool[6]['did']}\): its "
                                         "modality needs 'txt'"):
        _loaded_pool(copy, tmp_path / "cache")
    _write_jsonl(copy / E.mbeir.UNION_POOL.format(split="test"), [*pool[:5], {**pool[0], "did": "0:77",
                                                                             "img_path": "mbeir_images/none.png"}])
    with pytest.raises(E.DataLayoutError, match=r"row 5 \(candidate 0:77\): image file not found"):
        _loaded_pool(copy, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # no pool folder, no partial one
