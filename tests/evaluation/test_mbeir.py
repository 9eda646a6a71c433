"""The embedded M-BEIR data (mm_st.training.embedded.write_mbeir) and the local M-BEIR mteb tasks with the
wrong-modality top-1 rate (mm_st.evaluation.mbeir)."""

import json
import shutil
from collections import Counter
from pathlib import Path

import mteb
import numpy as np
import pytest
from mteb.results import BenchmarkResults, ModelResult, TaskResult
from mteb.types import PromptType
from PIL import Image

import mm_st.evaluation as E
from mm_st import build_model, templates
from mm_st.data import load_emoji, load_mbeir, mbeir_instructions
from mm_st.data.converters import mbeir_task_name
from mm_st.data.emoji import EMOJI_MBEIR_TASKS
from mm_st.evaluation.mbeir import MBEIR_TASK_CLASSES, _pool_sharing_encoder
from mm_st.testing import tiny_model
from mm_st.training.embedded import MBEIR_QUESTION, mbeir_paraphrase, write_mbeir
from tests.mmst_eval_data import OracleEncoder, emoji
from tests.evaluation.test_evaluation import mteb_command_here

TASKS = ["Emoji_i2i", "Emoji_i2t", "Emoji_it2t", "Emoji_t2i", "Emoji_t2t"]
LIMIT = 12
POOL = "cand_pool/local/mbeir_emoji_{}_cand_pool.jsonl"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _queries(root: Path, split: str) -> dict[str, list[dict]]:
    return {task: _jsonl(root / f"query/{split}/mbeir_emoji_task{spec.task_id}_{split}.jsonl")
            for task, spec in EMOJI_MBEIR_TASKS.items()}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The whole test split (both kinds of duplicates occur in it) plus a small train split, in one root."""
    root = tmp_path_factory.mktemp("mbeir-full")
    write_mbeir(root, split="test")
    write_mbeir(root, split="train", limit=LIMIT)
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_mbeir(tmp_path_factory.mktemp("mbeir-small"), split="test", limit=LIMIT)


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_model("llava"), recipe="mmembed")


# ------------------------------------------------------------------------------------------------
# The data (write_mbeir)
# ------------------------------------------------------------------------------------------------


def test_layout_reads_back_with_tasks_rows_modalities_and_instructions(full):
    test, train = load_emoji("test"), load_emoji("train")
    no_keywords = sum(mbeir_paraphrase(n, k) == n for n, k in zip(test["name_en"], test["keywords_en"]))
    assert no_keywords == 9  # CLDR keywords add nothing to these names: no text->text query
    for split, count, skipped in (("test", len(test), no_keywords), ("train", LIMIT, 0)):
        plain = load_mbeir(full, split=split, instructions="none")
        assert sorted(plain) == TASKS
        assert {t: len(d) for t, d in plain.items()} == {**{t: count for t in TASKS}, "Emoji_t2t": count - skipped}
        for task, spec in EMOJI_MBEIR_TASKS.items():
            row = plain[task][0]
            has = {"text": row["anchor"]["text"] is not None, "image": row["anchor"]["image"] is not None}
            assert {m for m, present in has.items() if present} == set(spec.query_modality.split(","))
            assert (row["positive"]["image"] is not None) == (spec.candidate_modality == "image")
            assert (row["positive"]["text"] is not None) == (spec.candidate_modality == "text")
    plain = load_mbeir(full, split="test", instructions="none")
    assert plain["Emoji_t2i"][0]["anchor"]["text"] == test[0]["name_en"]
    assert plain["Emoji_t2t"][0]["positive"]["text"] == mbeir_paraphrase(test[0]["name_en"], test[0]["keywords_en"])
    assert test[0]["name_en"] in plain["Emoji_t2t"][0]["positive"]["text"]
    assert plain["Emoji_it2t"][0] == {**plain["Emoji_it2t"][0], "positive": {"text": test[0]["group"], "image": None}}
    assert plain["Emoji_it2t"][0]["anchor"]["text"] == MBEIR_QUESTION
    # instructions: one per task, the table's, inline in UniIR's format
    assert mbeir_instructions(full) == {t: spec.instruction for t, spec in EMOJI_MBEIR_TASKS.items()}
    inline = load_mbeir(full, split="test", instructions="inline")
    assert inline["Emoji_t2i"][0]["anchor"]["text"] == f"{EMOJI_MBEIR_TASKS['Emoji_t2i'].instruction} {test[0]['name_en']}"
    assert inline["Emoji_i2i"][0]["anchor"]["text"] == EMOJI_MBEIR_TASKS["Emoji_i2i"].instruction
    assert mbeir_task_name("10", "image,text", "text") == "Emoji_it2t"


def test_one_pool_per_split_mixes_modalities_and_holds_each_positive_once(full):
    test = load_emoji("test")
    for split in ("test", "train"):
        pool = _jsonl(full / POOL.format(split))
        by_id = {row["did"]: row for row in pool}
        assert len(by_id) == len(pool)
        texts = [row["txt"] for row in pool if row["modality"] == "text"]
        images = [row["img_path"] for row in pool if row["modality"] == "image"]
        assert len(texts) == len(set(texts)) and len(texts) + len(images) == len(pool) and images and texts
        pixels = [Image.open(full / p).convert("RGB").tobytes() for p in images]
        assert len(set(pixels)) == len(pixels)  # no picture under two ids
        queries = _queries(full, split)
        assert len({q["qid"] for rows in queries.values() for q in rows}) == sum(map(len, queries.values()))
        for task, rows in queries.items():
            wanted = EMOJI_MBEIR_TASKS[task].candidate_modality
            assert all(did in by_id and by_id[did]["modality"] == wanted for q in rows for did in q["pos_cand_list"])
            assert {q["task_id"] for q in rows} == {EMOJI_MBEIR_TASKS[task].task_id}
    assert not {r["did"] for r in _jsonl(full / POOL.format("test"))} & {r["did"] for r in _jsonl(full / POOL.format("train"))}
    # test split: every image, every distinct name / paraphrase / group name
    pool = _jsonl(full / POOL.format("test"))
    counts = Counter(row["modality"] for row in pool)
    distinct = {*test["name_en"], *test["group"], *(mbeir_paraphrase(n, k) for n, k in zip(test["name_en"], test["keywords_en"]))}
    assert counts == {"image": len(test) - 2, "text": len(distinct)}  # two pairs of flags share a picture
    assert sum(row["txt"] in set(test["group"]) for row in pool) == len(set(test["group"])) == 9
    # emoji with the same picture share the image candidate; their image->text queries list both names
    norway = test["name_en"].index("flag: Norway")
    queries = _queries(full, "test")
    t2i = {q["query_txt"]: q["pos_cand_list"] for q in queries["Emoji_t2i"]}
    assert t2i["flag: Norway"] == t2i["flag: Svalbard & Jan Mayen"]
    names = {row["did"]: row["txt"] for row in pool if row["modality"] == "text"}
    i2t = queries["Emoji_i2t"][norway]
    assert [names[d] for d in i2t["pos_cand_list"]] == ["flag: Norway", "flag: Svalbard & Jan Mayen"]


def test_writing_is_deterministic_given_the_seed_and_writes_each_image_once(small, tmp_path):
    again = write_mbeir(tmp_path / "again", split="test", limit=LIMIT)
    other = write_mbeir(tmp_path / "other", split="test", limit=LIMIT, seed=1)
    files = sorted(p.relative_to(small) for p in small.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((small / f).read_bytes() == (again / f).read_bytes() for f in files)
    altered = sorted((small / "mbeir_images/emoji_images/test/altered-seed0").glob("*.png"))
    assert len(altered) == LIMIT
    assert all(not (other / "mbeir_images/emoji_images/test/altered-seed1" / p.name).read_bytes() == p.read_bytes()
               for p in altered)
    stamps = {f: (again / f).stat().st_mtime_ns for f in files if f.suffix == ".png"}
    write_mbeir(again, split="test", limit=LIMIT)
    assert {f: (again / f).stat().st_mtime_ns for f in stamps} == stamps
    # the i2i query is the emoji moved, scaled and recoloured, not a copy
    first = Image.open(small / "mbeir_images/emoji_images/test/0.png")
    query = Image.open(altered[0])
    assert query.size == first.size and query.tobytes() != first.tobytes() and query.getpixel((0, 0)) != (255, 255, 255)
    with pytest.raises(ValueError, match="splits train, test, not 'val'"):
        write_mbeir(tmp_path / "bad", split="val")


# ------------------------------------------------------------------------------------------------
# The tasks and the metric
# ------------------------------------------------------------------------------------------------


def _inputs(root: Path, rows: list[dict], text: str, image: str) -> list:
    out = []
    for row in rows:
        picture = Image.open(root / row[image]).convert("RGB") if row.get(image) else None
        out.append({"text": row[text], "image": picture} if row.get(text) and picture else picture or row[text])
    return out


def test_scores_carry_the_wrong_modality_rate_equal_to_a_hand_computation(small, model):
    encoder = E.MMSTEncoder(model, name="local/tiny")
    tasks = E.mbeir_tasks(data=small)
    assert [t.metadata.name for t in tasks] == [f"MMST-MBEIR-{t}" for t in EMOJI_MBEIR_TASKS]
    result = mteb.evaluate(encoder, tasks, cache=None, show_progress_bar=False, encode_kwargs={"batch_size": 8})
    pool = _jsonl(small / POOL.format("test"))
    docs = model.encode_document(_inputs(small, pool, "txt", "img_path"), batch_size=8, convert_to_numpy=True)
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    modality = [row["modality"] for row in pool]
    index = {row["did"]: i for i, row in enumerate(pool)}
    rates = {}
    by_name = {r.task_name: r.scores["test"][0] for r in result.task_results}
    for meta, (task, rows) in zip((t.metadata for t in tasks), _queries(small, "test").items()):
        scores = by_name[meta.name]
        assert {"recall_at_1", "recall_at_5", "recall_at_10", "ndcg_at_10", "wrong_modality_at_1"} <= set(scores)
        instruction = EMOJI_MBEIR_TASKS[task].instruction
        assert encoder.instruction(meta, PromptType.query) == instruction and meta.name == f"MMST-MBEIR-{task}"
        queries = model.encode_query(_inputs(small, rows, "query_txt", "query_img_path"), prompt=instruction,
                                     batch_size=8, convert_to_numpy=True)
        top = (queries / np.linalg.norm(queries, axis=1, keepdims=True) @ docs.T).argmax(axis=1)
        wrong = [modality[t] != EMOJI_MBEIR_TASKS[task].candidate_modality for t in top]
        hits = [pool[t]["did"] in row["pos_cand_list"] for t, row in zip(top, rows)]
        assert scores["wrong_modality_at_1"] == pytest.approx(sum(wrong) / len(rows))
        assert scores["recall_at_1"] == pytest.approx(sum(hits) / len(rows), abs=1e-5)  # mteb rounds to 5 places
        assert all(index[d] < len(pool) for row in rows for d in row["pos_cand_list"])
        rates[task] = scores["wrong_modality_at_1"]
    assert len(set(rates.values())) > 1  # not a constant
    # the helper the recipes call: same values, the pool encoded once for the five tasks
    sharing = _pool_sharing_encoder(model)
    again = mteb.evaluate(sharing, E.mbeir_tasks(data=small), cache=None, show_progress_bar=False,
                          encode_kwargs={"batch_size": 8})
    assert sharing.encoded["document"] == len(pool)
    for shared, alone in zip(again.task_results, result.task_results):
        for metric in ("recall_at_1", "recall_at_5", "ndcg_at_10", "wrong_modality_at_1"):
            assert shared.scores["test"][0][metric] == pytest.approx(alone.scores["test"][0][metric])
    table = E.evaluate_mbeir(model, data=small, encode_kwargs={"batch_size": 8})
    assert list(table) == list(EMOJI_MBEIR_TASKS)
    assert {t: v["wrong_modality_at_1"] for t, v in table.items()} == pytest.approx(rates)


def test_chance_values_and_the_table(small):
    chance = E.mbeir_chance(data=small)
    pool = _jsonl(small / POOL.format("test"))
    share = Counter(row["modality"] for row in pool)
    for task, spec in EMOJI_MBEIR_TASKS.items():
        assert chance[task]["recall_at_1"] == pytest.approx(1 / len(pool))
        assert chance[task]["recall_at_5"] == pytest.approx(5 / len(pool))
        assert chance[task]["wrong_modality_at_1"] == pytest.approx(1 - share[spec.candidate_modality] / len(pool))
    text = E.mbeir_table({"chance": chance, "model": {"Emoji_t2i": {"recall_at_1": 0.25}}})
    lines = text.splitlines()
    assert lines[0].split() == ["task", "metric", "chance", "model"] and len(lines) == 1 + 3 * len(EMOJI_MBEIR_TASKS)
    assert lines[1].split() == ["Emoji_t2i", "recall_at_1", f"{1 / len(pool):.3f}", "0.250"]
    assert lines[3].split()[-1] == "-"  # a value the column lacks


def test_a_single_modality_pool_reports_no_wrong_modality_rate(small, model, tmp_path):
    root = tmp_path / "images-only"
    shutil.copytree(small, root)
    pool = root / POOL.format("test")
    pool.write_text("".join(json.dumps(r) + "\n" for r in _jsonl(pool) if r["modality"] == "image"), encoding="utf-8")
    task = E.mbeir_tasks(["Emoji_t2i"], data=root)
    result = mteb.evaluate(E.MMSTEncoder(model), task, cache=None, show_progress_bar=False)
    assert "wrong_modality_at_1" not in result.task_results[0].scores["test"][0]
    assert result.task_results[0].scores["test"][0]["recall_at_1"] is not None
    assert E.evaluate_mbeir(model, ["Emoji_t2i"], data=root)["Emoji_t2i"]["wrong_modality_at_1"] is None
    assert E.mbeir_chance(["Emoji_t2i"], data=root)["Emoji_t2i"]["wrong_modality_at_1"] is None
    # a task whose positives are texts cannot load from an image-only pool: the missing positive is named
    with pytest.raises(ValueError, match=r"MMST-MBEIR-Emoji_i2t: .* positive '10:\d+' is not in the task's pool"):
        E.mbeir_tasks(["Emoji_i2t"], data=root)[0].load_data()


def test_a_real_mbeir_task_on_a_local_root(tmp_path):
    """NIGHTS (image -> image), laid out as in M-BEIR: oracle scores 1, a one-modality pool has no wrong-modality key."""
    images, _ = emoji(6)
    root = tmp_path / "M-BEIR"
    (root / "mbeir_images" / "nights_images").mkdir(parents=True)
    for i, image in enumerate(images):
        image.save(root / f"mbeir_images/nights_images/{i}.png")
    (root / "cand_pool/local").mkdir(parents=True)
    (root / "query/test").mkdir(parents=True)
    pool = [{"did": f"4:{i}", "txt": None, "img_path": f"mbeir_images/nights_images/{i}.png", "modality": "image"}
            for i in range(6)]
    queries = [{"qid": f"4:{i}", "query_txt": None, "query_img_path": f"mbeir_images/nights_images/{i}.png",
                "query_modality": "image", "pos_cand_list": [f"4:{i}"], "neg_cand_list": []} for i in range(3)]
    (root / "cand_pool/local/mbeir_nights_task4_cand_pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (root / "query/test/mbeir_nights_task4_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    tasks = E.mbeir_tasks(data=root)
    assert [t.metadata.name for t in tasks] == ["MMST-MBEIR-NIGHTS_i2i"]
    scores = mteb.evaluate(OracleEncoder(6), tasks, cache=None, show_progress_bar=False).task_results[0].scores["test"][0]
    assert scores["main_score"] == scores["recall_at_5"] == 1.0 and "wrong_modality_at_1" not in scores
    # a row of another task in the file is refused, naming it
    (root / "query/test/mbeir_nights_task4_test.jsonl").write_text(json.dumps(
        {**queries[0], "qid": "9:1"}) + "\n")
    with pytest.raises(ValueError, match=r"mbeir_nights_task4_test.jsonl row 0 \(query 9:1\) is a MSCOCO_i2i query"):
        E.mbeir_tasks(["NIGHTS_i2i"], data=root)[0].load_data()


def test_instructions_reach_the_model_through_the_recipe(model):
    mmembed = E.MMSTEncoder(model, name="local/a")
    vlm2vec = E.MMSTEncoder(build_model(tiny_model("llava"), recipe="vlm2vec"), name="local/b")
    q, d = PromptType.query, PromptType.document
    cirr = mteb.get_task("MMST-MBEIR-CIRR_it2i").metadata
    assert mmembed.instruction(cirr, q) == templates.MBEIR_INSTRUCTIONS["CIRRIT2IRetrieval"]
    assert mmembed.instruction(cirr, d) is None
    assert vlm2vec.instruction(cirr, q) == vlm2vec.instruction(mteb.get_task("CIRRIT2IRetrieval").metadata, q)
    fashion = mteb.get_task("MMST-MBEIR-Fashion200K_i2t").metadata  # no MM-Embed wording: mteb's task prompt
    assert mmembed.instruction(fashion, q) == mteb.get_task("Fashion200kI2TRetrieval").metadata.prompt["query"]
    for task, spec in EMOJI_MBEIR_TASKS.items():
        meta = mteb.get_task(f"MMST-MBEIR-{task}").metadata
        assert mmembed.instruction(meta, q) == vlm2vec.instruction(meta, q) == spec.instruction
        assert meta.category.endswith("2it")  # documents: the mixed pool


def test_registration_benchmarks_and_paper_metric():
    assert len(MBEIR_TASK_CLASSES) == 21
    local = mteb.get_benchmark("M-BEIR-local")
    assert sorted(t.metadata.name for t in local.tasks) == sorted(E.mbeir.MBEIR_LOCAL_TASKS)
    assert {t.metadata.name for t in local.tasks}.isdisjoint(E.MBEIR_TASKS)  # no clash with mteb's own
    assert all(mteb.get_task(n).metadata.main_score == m for n, m in E.mbeir.MBEIR_LOCAL_TASKS.items())
    emoji_bench = mteb.get_benchmark("MMST-Emoji-MBEIR")
    assert [t.metadata.name for t in emoji_bench.tasks] == [f"MMST-MBEIR-{t}" for t in EMOJI_MBEIR_TASKS]

    def fake(name, value, wrong):
        extra = {} if wrong is None else {"wrong_modality_at_1": wrong}
        return TaskResult(dataset_revision="x", task_name=name, mteb_version="2", evaluation_time=1.0, scores={"test": [
            {"hf_subset": "default", "languages": ["eng-Latn"], "main_score": value, "recall_at_1": value, **extra}]})

    results = [fake(f"MMST-MBEIR-{t}", 0.5, w) for t, w in zip(EMOJI_MBEIR_TASKS, (0.1, 0.2, 0.3, 0.4, 0.5))]
    bench = BenchmarkResults(model_results=[ModelResult(model_name="t/m", model_revision="1", task_results=results)])
    score = emoji_bench.get_score(bench)["t/m"]
    assert score["Mean(Task)"] == 0.5 and score[E.WRONG_MODALITY_SCORE] == pytest.approx(0.3)
    partial = BenchmarkResults(model_results=[ModelResult(model_name="t/p", model_revision="1",
                                                          task_results=results[:4] + [fake("MMST-MBEIR-Emoji_it2t", 0.5, None)])])
    assert emoji_bench.get_score(partial)["t/p"][E.WRONG_MODALITY_SCORE] is None
    paper = [TaskResult(dataset_revision="x", task_name=n, mteb_version="2", evaluation_time=1.0, scores={"test": [
        {"hf_subset": "default", "languages": ["eng-Latn"], "main_score": 0.2, "recall_at_5": 0.2, "recall_at_10": 0.9}]})
        for n in E.mbeir.MBEIR_LOCAL_TASKS]
    local_score = local.get_score(BenchmarkResults(model_results=[
        ModelResult(model_name="t/l", model_revision="1", task_results=paper)]))["t/l"]
    assert local_score[E.MBEIR_SCORE] == pytest.approx((13 * 0.2 + 3 * 0.9) / 16)


def test_missing_or_incomplete_layout_names_it_and_the_first_missing_file(small, tmp_path, monkeypatch):
    monkeypatch.delenv("MM_ST_MBEIR_DATA", raising=False)
    with pytest.raises(E.DataLayoutError, match=r"(?s)No MBEIR data configured.*\$MM_ST_MBEIR_DATA.*query/test/mbeir_"):
        E.mbeir_tasks()
    with pytest.raises(E.DataLayoutError, match="(?s)M-BEIR data directory not found.*Expected layout of a local M-BEIR root"):
        E.mbeir_tasks(["Emoji_t2i"], data=tmp_path / "nowhere")[0].load_data()
    (tmp_path / "empty").mkdir()
    with pytest.raises(E.DataLayoutError, match=r"first missing file '.*/empty/query/test/mbeir_emoji_task0_test.jsonl'"):
        E.mbeir_tasks(["Emoji_t2i"], data=tmp_path / "empty")[0].load_data()
    with pytest.raises(E.DataLayoutError, match="No M-BEIR test task found"):
        E.mbeir_tasks(data=tmp_path / "empty")
    partial = tmp_path / "partial"
    shutil.copytree(small, partial)
    (partial / POOL.format("test")).unlink()
    with pytest.raises(E.DataLayoutError, match=r"first missing file '.*/cand_pool/local/mbeir_emoji_test_cand_pool.jsonl'"):
        E.mbeir_tasks(["Emoji_t2i"], data=partial)[0].load_data()
    shutil.copytree(small, tmp_path / "noimage")
    (tmp_path / "noimage/mbeir_images/emoji_images/test/3.png").unlink()
    with pytest.raises(E.DataLayoutError, match=r"image file not found: '.*/test/3.png'"):
        E.mbeir_tasks(["Emoji_t2i"], data=tmp_path / "noimage")[0].load_data()
    with pytest.raises(E.DataLayoutError, match="reads a local root"):
        E.mbeir_tasks(["Emoji_t2i"], data="TIGER-Lab/M-BEIR")[0].load_data()
    with pytest.raises(ValueError, match="Unknown M-BEIR task"):
        E.mbeir_tasks(["Emoji_x2y"], data=small)


@pytest.mark.slow
def test_environment_variable_and_the_mteb_command(small, tmp_path, monkeypatch):
    monkeypatch.setenv("MM_ST_MBEIR_DATA", str(small))
    task = mteb.get_task("MMST-MBEIR-Emoji_t2i")
    task.load_data()
    assert len(task.dataset["default"]["test"]["queries"]) == LIMIT
    assert [t.metadata.name for t in E.mbeir_tasks()] == [f"MMST-MBEIR-{t}" for t in EMOJI_MBEIR_TASKS]

    saved, results = tmp_path / "tiny-mmembed", tmp_path / "results"
    build_model(tiny_model("llava"), recipe="mmembed").save(str(saved))
    # the command's entry point in this process (the `mteb` processes of tests/test_evaluation.py pin the command's
    # start-up); the variable is set for it as for the command
    mteb_command_here(["run", "-m", str(saved), "-t", "MMST-MBEIR-Emoji_t2i", "--output-folder", str(results), "-v", "1",
                       "--batch-size", "8"], monkeypatch, MM_ST_MBEIR_DATA=str(small))
    written = json.loads(next(results.rglob("MMST-MBEIR-Emoji_t2i.json")).read_text())["scores"]["test"][0]
    here = E.evaluate_mbeir(mteb.get_model(str(saved)), ["Emoji_t2i"], data=small, metrics=("recall_at_1", "wrong_modality_at_1"),
                            encode_kwargs={"batch_size": 8})["Emoji_t2i"]
    assert 0.0 <= written["wrong_modality_at_1"] <= 1.0
    assert written["wrong_modality_at_1"] == pytest.approx(here["wrong_modality_at_1"])
    assert written["recall_at_1"] == pytest.approx(here["recall_at_1"])
