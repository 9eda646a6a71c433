"""mm_st.evaluation: MMEB / XTD / CIRR tasks, M-BEIR instructions, the mteb model wrapper, registration.

Offline: tiny local data sets in the MMEB-eval, XTD and CIRR layouts are written from the bundled
emoji images (tests/mmst_eval_data.py); models are tiny random ones from mm_st.testing, or an
oracle encoder whose scores are known in advance.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mteb
import numpy as np
import pytest
from mteb.results import BenchmarkResults, ModelResult, TaskResult
from mteb.types import PromptType

import mm_st.evaluation as E
from mm_st import build_model, templates
from mm_st.evaluation.instructions import MMEB, same_instruction
from mm_st.testing import tiny_model
from tests.mmst_eval_data import CIRR_QUERIES, OracleEncoder, write_cirr, write_mmeb, write_xtd

ROOT = Path(__file__).resolve().parents[2]
N_QUERIES, N_CANDIDATES, POOL = 3, 4, 6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    rows = write_mmeb(root / "mmeb", n_queries=N_QUERIES, n_candidates=N_CANDIDATES, pool=POOL)
    write_xtd(root / "xtd", n=12)
    write_cirr(root / "cirr")
    return {"root": root, "mmeb": root / "mmeb", "xtd": root / "xtd", "cirr": root / "cirr", "rows": rows}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny LLaVA built with the vlm2vec recipe and saved like any trained mm_st model."""
    path = tmp_path_factory.mktemp("models") / "tiny-vlm2vec"
    build_model(tiny_model("llava"), recipe="vlm2vec").save(str(path))
    return path


def _bench(*model_results):
    return BenchmarkResults(model_results=list(model_results))


def _scores(result, split="test"):
    return {tr.task_name: tr.scores[split][0] for tr in result.task_results}


# ------------------------------------------------------------------------------------------------
# MMEB
# ------------------------------------------------------------------------------------------------


def test_instruction_table_covers_mmeb_and_agrees_with_templates():
    assert len(MMEB) == 36
    counts = {m: sum(e.meta_task == m for e in MMEB.values()) for m in ("Classification", "VQA", "Retrieval", "Grounding")}
    assert counts == {"Classification": 10, "VQA": 10, "Retrieval": 12, "Grounding": 4}
    assert sum(e.distribution == "IND" for e in MMEB.values()) == 20
    # one table (mm_st.templates keeps none); punctuation as in VLM2Vec's archive/instruction_dict.py
    assert not hasattr(templates, "MMEB_INSTRUCTIONS")
    assert MMEB["VOC2007"].query == MMEB["ObjectNet"].query == ("Identify the object shown in the image",)
    assert MMEB["SUN397"].query == ("Identify the scene shown in the image.",)
    assert MMEB["ImageNet-1K"].query == ("Represent the given image for classification.",)
    assert MMEB["MSCOCO_t2i"].query == ("Find me an everyday image that matches the given caption: ",)
    assert same_instruction("Identify the object shown in the image.", MMEB["VOC2007"].query[0])
    # the row's own punctuation wins; the image placeholder goes
    assert E.split_instruction("<|image_1|>\nIdentify the object shown in the image.", MMEB["VOC2007"].query) == (
        "Identify the object shown in the image.", "")
    assert E.split_instruction('<|image_1|>\nSelect the portion of the image that isolates the object labeled as "dog"',
                               MMEB["MSCOCO"].query) == ("Select the portion of the image that isolates the object labeled as ", '"dog"')
    assert E.split_instruction("No instruction here", MMEB["VOC2007"].query) == (None, "No instruction here")


def test_mmeb_oracle_scores_one_and_reversed_scores_last(data):
    oracle = OracleEncoder(POOL)
    scores = _scores(mteb.evaluate(oracle, E.mmeb_tasks(data=data["mmeb"]), cache=None, show_progress_bar=False))
    assert len(scores) == 36
    assert all(s["main_score"] == s["precision_at_1"] == 1.0 for s in scores.values())
    reverse = OracleEncoder(POOL, reverse=True)
    scores = _scores(mteb.evaluate(reverse, E.mmeb_tasks(data=data["mmeb"]), cache=None, show_progress_bar=False))
    # the positive is last of its 4 candidates: P@1 = 0, MRR = 1/4, Recall@3 = 0
    assert {round(s["precision_at_1"], 5) for s in scores.values()} == {0.0}
    assert {round(s["mrr_at_10"], 5) for s in scores.values()} == {0.25}
    assert {round(s["recall_at_3"], 5) for s in scores.values()} == {0.0}


def test_tasks_are_declarations_that_read_nothing_until_loaded(data, monkeypatch):
    def no_io(*args, **kwargs):
        raise AssertionError("a task read its data before load_data")

    for name in ("resolve_source", "is_local", "local_dir", "fingerprint", "mmeb_files", "read_mmeb_rows"):
        monkeypatch.setattr(E.data, name, no_io)
    monkeypatch.setattr(E.data.DataSource, "resolve", no_io)
    tasks = [*E.mmeb_tasks(data=data["mmeb"]), E.XTDT2IRetrieval(data=data["xtd"]), E.CIRRComposedImageRetrieval(data=data["cirr"])]
    monkeypatch.undo()
    declared = {type(task): type(task).metadata.model_dump() for task in tasks}
    for task in tasks:
        task.load_data()
    # loading changes no task's metadata (category, prompt, revision): it is still its class's
    assert all(task.metadata is type(task).metadata for task in tasks)
    assert {type(task): type(task).metadata.model_dump() for task in tasks} == declared
    voc = tasks[list(MMEB).index("VOC2007")].metadata
    assert (voc.category, voc.prompt, voc.revision) == ("i2t", {"query": "Identify the object shown in the image"}, "main")


def test_mmeb_benchmark_reports_overall_meta_task_and_ind_ood_means(data):
    bench = E.mmeb_benchmark(data=data["mmeb"])
    good = mteb.evaluate(OracleEncoder(POOL), bench.tasks, cache=None, show_progress_bar=False)
    bad = mteb.evaluate(OracleEncoder(POOL, reverse=True), bench.tasks, cache=None, show_progress_bar=False)
    classification = {f"MMEB-{n}" for n, e in MMEB.items() if e.meta_task == "Classification"}
    mixed = [tr for tr in good.task_results if tr.task_name in classification]
    mixed += [tr for tr in bad.task_results if tr.task_name not in classification]
    score = bench.get_score(_bench(ModelResult(model_name="test/mixed", model_revision="1", task_results=mixed)))["test/mixed"]
    assert score["Mean(Task)"] == pytest.approx(10 / 36)
    assert score["Meta-task::Classification"] == 1.0
    assert score["Meta-task::VQA"] == score["Meta-task::Retrieval"] == score["Meta-task::Grounding"] == 0.0
    assert score["Distribution::IND"] == pytest.approx(5 / 20)
    assert score["Distribution::OOD"] == pytest.approx(5 / 16)


def test_mmeb_candidates_are_encoded_once_per_task(tmp_path):
    # 8 queries x 12 listed candidates drawn (with repeats) from 6 labels, like the classification tasks
    rows = write_mmeb(tmp_path, ["VOC2007", "MSCOCO_t2i"], n_queries=6, n_candidates=12, pool=6, unique_lists=False)
    oracle = OracleEncoder(6)
    tasks = E.mmeb_tasks(["VOC2007", "MSCOCO_t2i"], data=tmp_path)
    scores = _scores(mteb.evaluate(oracle, tasks, cache=None, show_progress_bar=False))
    unique = sum(len({(t, p) for r in rs for t, p in zip(r["tgt_text"], r["tgt_img_path"])}) for rs in rows.values())
    listed = sum(len(r["tgt_text"]) for rs in rows.values() for r in rs)
    assert (listed, unique) == (144, 12)
    assert oracle.encoded == {"query": 12, "document": unique}
    assert all(s["precision_at_1"] == 1.0 for s in scores.values())
    assert tasks[0].candidate_counts == {"listed": 72, "unique": 6, "queries": 6}


def test_mmeb_instructions_reach_the_model_through_the_recipe(data, saved_model):
    from mteb._create_dataloaders import create_dataloader

    encoder = mteb.get_model(str(saved_model))
    assert isinstance(encoder, E.MMSTEncoder) and encoder.recipe == "vlm2vec"
    task = E.mmeb_tasks(["WebQA"], data=data["mmeb"])[0]
    task.load_data()
    split = task.dataset["default"]["test"]
    assert task.metadata.prompt == {"query": "Find a Wikipedia image that answers this question: ",
                                    "document": "Represent the given Wikipedia image with related text information: "}
    model = encoder.model
    for side, rows, manual in (
        (PromptType.query, split["queries"], lambda r: model.encode_query([r["text"]], prompt=task.metadata.prompt["query"])),
        (PromptType.document, split["corpus"], lambda r: model.encode_document(
            [{"text": r["text"], "image": r["image"]}], prompt=task.metadata.prompt["document"])),
    ):
        loader = create_dataloader(rows, task_metadata=task.metadata, prompt_type=side, batch_size=2)
        got = encoder.encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default", prompt_type=side)
        assert got.shape == (len(rows), model.get_embedding_dimension())
        np.testing.assert_allclose(got[0], manual(rows[0])[0], atol=1e-5)
        # and the instruction matters: without it the embedding differs
        plain = (model.encode_query if side == PromptType.query else model.encode_document)(
            [rows[0]["text"]] if side == PromptType.query else [{"text": rows[0]["text"], "image": rows[0]["image"]}])
        assert not np.allclose(got[0], plain[0], atol=1e-4)


def test_mmembed_instructs_queries_only_and_e5v_keeps_its_prompts(data):
    calls = []
    model = build_model(tiny_model("llava"), recipe="mmembed")
    for name in ("encode_query", "encode_document"):
        original = getattr(model, name)
        setattr(model, name, lambda x, _o=original, _n=name, **kw: calls.append((_n, kw.get("prompt"))) or _o(x, **kw))
    encoder = E.MMSTEncoder(model, name="local/mmembed")
    result = mteb.evaluate(encoder, E.mmeb_tasks(["MSCOCO_t2i"], data=data["mmeb"]), cache=None, show_progress_bar=False)
    assert 0.0 <= result.task_results[0].get_score() <= 1.0
    assert set(calls) == {("encode_query", "Find me an everyday image that matches the given caption: "),
                          ("encode_document", None)}
    e5v = E.MMSTEncoder(build_model(tiny_model("llava"), recipe="e5v"), name="local/e5v")
    assert e5v.instruction(mteb.get_task("MMEB-MSCOCO_t2i").metadata, PromptType.query) is None
    cirr = mteb.get_task("CIRRComposedImageRetrieval").metadata
    assert e5v.instruction(cirr, PromptType.query) == templates.RECIPES["e5v"].extra_prompts["cirr_query"]
    assert e5v.instruction(cirr, PromptType.document) == templates.RECIPES["e5v"].extra_prompts["cirr_candidate"]


def test_local_layout_variants_single_file_and_jsonl(tmp_path):
    write_mmeb(tmp_path / "a", ["VOC2007"], fmt="jsonl")
    (tmp_path / "b").mkdir()
    write_mmeb(tmp_path / "b", ["ChartQA"])
    shutil.move(tmp_path / "b" / "ChartQA" / "test-00000-of-00001.parquet", tmp_path / "b" / "ChartQA.parquet")
    (tmp_path / "b" / "ChartQA").rmdir()
    images = tmp_path / "b" / "eval_images"
    for data, name, extra in ((tmp_path / "a", "VOC2007", {}), (tmp_path / "b", "ChartQA", {"image_root": images})):
        scores = _scores(mteb.evaluate(OracleEncoder(6), E.mmeb_tasks([name], data=data, **extra), cache=None,
                                       show_progress_bar=False))
        assert scores[f"MMEB-{name}"]["precision_at_1"] == 1.0
    # rows holding a modality the category does not declare are refused when the task loads (mteb would
    # drop that column); the declaration itself never changes
    rows = write_mmeb(tmp_path / "c", ["OK-VQA", "VisualNews_t2i"])
    shutil.move(tmp_path / "c" / "OK-VQA", tmp_path / "c" / "VOC2007")
    task = E.mmeb_tasks(["VOC2007"], data=tmp_path / "c")[0]
    with pytest.raises(ValueError, match=re.escape(
            "MMEB-VOC2007: row 0 (query q0) holds text 'Represent the given image with the following question: What "
            "is this?', but the task's category 'i2t' declares queries with images only (mteb would drop it).")):
        task.load_data()
    assert not task.data_loaded
    assert (task.metadata.category, task.metadata.prompt) == ("i2t", {"query": "Identify the object shown in the image"})
    # rows that do not start with the dataset's instruction keep their whole text; the prompt stays declared
    shutil.move(tmp_path / "c" / "VisualNews_t2i", tmp_path / "c" / "MSCOCO_t2i")
    task = E.mmeb_tasks(["MSCOCO_t2i"], data=tmp_path / "c")[0]
    task.load_data()
    first = task.dataset["default"]["test"]["queries"][0]["text"]
    assert first == rows["VisualNews_t2i"][0]["qry_text"] and first.startswith("Retrieve an image of this news caption. ")
    assert task.metadata is type(task).metadata and task.metadata.prompt == {
        "query": "Find me an everyday image that matches the given caption: ", "document": "Represent the given image."}


# ------------------------------------------------------------------------------------------------
# XTD and CIRR
# ------------------------------------------------------------------------------------------------


def test_xtd_oracle_reversed_and_images_encoded_once(data, saved_model):
    task = E.XTDT2IRetrieval(data=data["xtd"])
    assert task.metadata.main_score == "recall_at_10" and set(E.tasks.MME5_XTD_LANGUAGES) < set(task.hf_subsets)
    oracle = OracleEncoder(12)
    result = mteb.evaluate(oracle, task, cache=None, show_progress_bar=False).task_results[0]
    assert {s["hf_subset"]: s["recall_at_10"] for s in result.scores["test"]} == dict.fromkeys(task.hf_subsets, 1.0)
    assert oracle.encoded == {"query": 12 * 8, "document": 12}  # 12 images encoded once for 8 languages
    reverse = mteb.evaluate(OracleEncoder(12, reverse=True), E.XTDT2IRetrieval(data=data["xtd"]), cache=None,
                            show_progress_bar=False).task_results[0]
    assert {s["recall_at_10"] for s in reverse.scores["test"]} == {0.0}  # positive ranked 12th of 12
    bench = E.xtd_benchmark(data=data["xtd"])
    score = bench.get_score(_bench(ModelResult(model_name="t/o", model_revision="1", task_results=[result])))["t/o"]
    assert score["Mean(Task)"] == 1.0 and score["mmE5 languages::es,it,ko,pl,ru,tr,zh"] == 1.0
    encoder = mteb.get_model(str(saved_model))
    tiny = mteb.evaluate(encoder, E.XTDT2IRetrieval(data=data["xtd"]), cache=None, show_progress_bar=False)
    assert 0.0 <= tiny.task_results[0].get_score() <= 1.0
    assert encoder.encoded == {"query": 96, "document": 12}


def test_cirr_official_metrics_on_a_hand_made_case(data):
    # Scores per image (img0..img7); the reference is excluded from both rankings.
    # q1: target img1 is 4th overall, 2nd in its set; q2: target first; q3: target last overall and in its set.
    weights = {"1": [10, 5, 6, 1, 2, 3, 7, 8], "2": [1, 2, 8, 9, 3, 4, 5, 6], "3": [1, 2, 3, 4, 9, 0.5, 5, 6]}
    names = [f"val-{i}-0-img{i}" for i in range(8)]
    vectors = {**weights, **{n: np.eye(8)[i].tolist() for i, n in enumerate(names)}}
    encoder = OracleEncoder(8, vectors=vectors, dim=8)
    task = E.CIRRComposedImageRetrieval(data=data["cirr"])
    s = mteb.evaluate(encoder, task, cache=None, show_progress_bar=False).task_results[0].scores["val"][0]
    expected = {"recall_at_1": 1 / 3, "recall_at_5": 2 / 3, "recall_at_10": 1.0, "recall_at_50": 1.0,
                "recall_subset_at_1": 1 / 3, "recall_subset_at_2": 2 / 3, "recall_subset_at_3": 2 / 3,
                "cirr_average": 0.5, "main_score": 0.5}
    assert {k: round(s[k], 4) for k in expected} == {k: round(v, 4) for k, v in expected.items()}
    assert encoder.encoded == {"query": len(CIRR_QUERIES), "document": 8}  # two scoring passes, one encoding


def test_cirr_end_to_end_with_a_tiny_model(data, saved_model):
    encoder = mteb.get_model(str(saved_model))
    s = mteb.evaluate(encoder, E.CIRRComposedImageRetrieval(data=data["cirr"]), cache=None,
                      show_progress_bar=False).task_results[0].scores["val"][0]
    assert all(0.0 <= s[k] <= 1.0 for k in ("recall_at_1", "recall_at_5", "recall_subset_at_1", "cirr_average"))
    assert s["recall_at_10"] == 1.0  # 7 candidates per query
    assert s["recall_subset_at_1"] <= s["recall_subset_at_2"] <= s["recall_subset_at_3"]
    assert encoder.encoded == {"query": 3, "document": 8}


# ------------------------------------------------------------------------------------------------
# M-BEIR
# ------------------------------------------------------------------------------------------------


def test_mbeir_instructions_follow_the_recipe():
    mmembed = E.MMSTEncoder(build_model(tiny_model("llava"), recipe="mmembed"), name="local/a")
    vlm2vec = E.MMSTEncoder(build_model(tiny_model("llava"), recipe="vlm2vec"), name="local/b")
    q, d = PromptType.query, PromptType.document
    for name, text in templates.MBEIR_INSTRUCTIONS.items():
        meta = mteb.get_task(name).metadata
        assert mmembed.instruction(meta, q) == text and mmembed.instruction(meta, d) is None
    cirr, webqa, fashion = (mteb.get_task(n).metadata for n in ("CIRRIT2IRetrieval", "WebQAT2ITRetrieval", "Fashion200kT2IRetrieval"))
    assert vlm2vec.instruction(cirr, q) == MMEB["CIRR"].query[0]
    assert vlm2vec.instruction(webqa, d) == MMEB["WebQA"].document[0]
    assert vlm2vec.instruction(fashion, q) == fashion.prompt["query"]  # no MMEB counterpart: mteb's own prompt
    assert mmembed.instruction(mteb.get_task("MSCOCOI2TRetrieval").metadata, q) == \
        mteb.get_task("MSCOCOI2TRetrieval").metadata.prompt["query"]


def test_mbeir_task_runs_on_local_data_and_reports_the_paper_recall(data):
    # mteb's own CIRRIT2IRetrieval, fed with local data in its format (its Hub data needs a network)
    task = mteb.get_task("CIRRIT2IRetrieval")
    rows = data["rows"]["CIRR"]
    cirr = E.mmeb_tasks(["CIRR"], data=data["mmeb"])[0]
    cirr.load_data()
    split = dict(cirr.dataset["default"]["test"])
    split["top_ranked"] = None
    task.dataset, task.data_loaded = {"default": {"test": split}}, True
    result = mteb.evaluate(OracleEncoder(POOL), task, cache=None, show_progress_bar=False)
    assert len(rows) == N_QUERIES and result.task_results[0].scores["test"][0]["recall_at_5"] == 1.0
    assert E.mbeir_scores(result) == {"CIRRIT2IRetrieval": 1.0}

    def fake(name, ndcg, recall5, recall10):
        return TaskResult(dataset_revision="x", task_name=name, mteb_version="2", evaluation_time=1.0, scores={"test": [
            {"hf_subset": "default", "languages": ["eng-Latn"], "main_score": ndcg, "ndcg_at_10": ndcg,
             "recall_at_5": recall5, "recall_at_10": recall10}]})

    results = [fake(n, 0.5, 0.2, 0.9) for n in E.MBEIR_TASKS]
    score = mteb.get_benchmark("M-BEIR").get_score(_bench(ModelResult(model_name="t/m", model_revision="1", task_results=results)))["t/m"]
    # 13 tasks scored at Recall@5 (0.2), the 3 Fashion200K/FashionIQ tasks at Recall@10 (0.9)
    assert sorted(n for n, m in E.MBEIR_TASKS.items() if m == "recall_at_10") == [
        "Fashion200kI2TRetrieval", "Fashion200kT2IRetrieval", "FashionIQIT2IRetrieval"]
    assert score["Mean(Task)"] == 0.5 and score[E.MBEIR_SCORE] == pytest.approx((13 * 0.2 + 3 * 0.9) / 16)
    partial = _bench(ModelResult(model_name="t/p", model_revision="1", task_results=results[1:]))
    assert mteb.get_benchmark("M-BEIR").get_score(partial)["t/p"][E.MBEIR_SCORE] is None  # a task missing


# ------------------------------------------------------------------------------------------------
# Registration, mteb CLI, result cache
# ------------------------------------------------------------------------------------------------


def test_registration_in_process(saved_model):
    assert mteb.get_task("MMEB-VOC2007").metadata.main_score == "precision_at_1"
    assert mteb.get_task("XTDT2IRetrieval").metadata.main_score == "recall_at_10"
    assert len(mteb.get_benchmark("MMEB").tasks) == 36 and mteb.get_benchmark("MMEB(v1)").name == "MMEB"
    assert "MMEB-OK-VQA" in {t.metadata.name for t in mteb.get_tasks(categories=["it2t"])}
    meta = mteb.get_model_meta(str(saved_model))
    assert (meta.name, sorted(meta.modalities), meta.revision.startswith("local-")) == ("local/tiny-vlm2vec", ["image", "text"], True)
    assert meta.loader_kwargs == {"model_path": str(saved_model.resolve())}
    paper = mteb.get_model_meta("mm_st/mmE5-mllama-11b-instruct")
    assert paper.loader_kwargs == {"model_path": "intfloat/mmE5-mllama-11b-instruct", "recipe": "mme5"}
    assert mteb.get_model_meta("royokong/e5-v").loader.__name__ != "load_mm_st_model"  # mteb's own entry untouched
    with pytest.raises(KeyError):
        mteb.get_model_meta("no-such-org/no-such-model")


def test_mteb_internals_contract(monkeypatch):
    """Registration and CIRR's second ranking rely on mteb internals (mteb has no plugin API): this fails,
    never warns, when the installed mteb changes one of them."""
    from mm_st.evaluation import registry
    from mm_st.evaluation.tasks import CIRRComposedImageRetrieval, MMEB_TASK_CLASSES, XTDT2IRetrieval

    assert registry.mteb_internals_problems() == []
    look = registry._lookup
    # ... and mteb's public lookups read what registration wrote into them
    voc = MMEB_TASK_CLASSES["VOC2007"]
    assert look("mteb.get_tasks._TASKS_REGISTRY")["MMEB-VOC2007"] is voc and type(mteb.get_task("MMEB-VOC2007")) is voc
    assert {XTDT2IRetrieval, CIRRComposedImageRetrieval} <= set(look("mteb.get_tasks.TASK_LIST"))
    assert [type(t) for t in mteb.get_tasks(tasks=["XTDT2IRetrieval", "MMEB-VOC2007"])] == [XTDT2IRetrieval, voc]
    assert look("mteb.benchmarks.benchmarks").MM_ST_MMEB is mteb.get_benchmark("MMEB") is mteb.get_benchmark("MMEB(v1)")
    assert "mm_st/mmE5-mllama-11b-instruct" in look("mteb.models.model_implementations.MODEL_REGISTRY")
    assert mteb.get_model_meta is look("mteb.models.get_model_meta.get_model_meta") and mteb.get_model_meta._mm_st

    # a changed internal is named, and registration refuses to run
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    gmm = importlib.import_module("mteb.models.get_model_meta")
    monkeypatch.setattr(gmm, "get_model_meta", lambda model_name, revision=None, fetch_from_hf=False, new=None: None)
    monkeypatch.delattr(look("mteb.benchmarks.get_benchmark"), "_build_aliases_registry")
    monkeypatch.setattr(AbsTaskRetrieval, "_evaluate_subset", lambda self, model, split, **kwargs: None)
    problems = registry.mteb_internals_problems()
    assert [p.split(" ", 1)[0] for p in problems] == [
        "mteb.benchmarks.get_benchmark._build_aliases_registry",
        "mteb.models.get_model_meta.get_model_meta",
        "mteb.abstasks.retrieval.AbsTaskRetrieval._evaluate_subset",
    ]
    assert problems[0].startswith("mteb.benchmarks.get_benchmark._build_aliases_registry is gone (AttributeError(")
    assert problems[1] == ("mteb.models.get_model_meta.get_model_meta changed; expected a function('model_name', "
                           "'revision', 'fetch_from_hf', 'fill_missing', 'experiment_kwargs') that mteb.get_model calls "
                           "(mm_st models by path)")
    monkeypatch.setitem(registry._state, "done", False)
    with pytest.raises(RuntimeError, match=r"mm_st cannot register with mteb 2\.[\d.]+: internals it relies on changed"):
        registry.register()


def _mteb_command(site_dir: Path) -> list[str]:
    """The ``mteb`` command: the installed one when mm_st's start-up hook is installed, else the same
    entry point with the hook's .pth processed from a temporary site directory."""
    if importlib.util.find_spec("_mm_st_mteb_hook") is not None:
        return [str(Path(sys.executable).with_name("mteb"))]
    site_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "mm_st" / "evaluation" / "_hook.py", site_dir / "_mm_st_mteb_hook.py")
    shutil.copy(ROOT / "mm_st" / "evaluation" / "mm_st_mteb.pth", site_dir / "mm_st_mteb.pth")
    runner = ("import site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = 'mteb'; "
              "from mteb.cli import main; sys.exit(main())")
    return [sys.executable, "-c", runner, str(site_dir)]


def _env(**extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
    env.pop("MM_ST_MTEB_PLUGIN", None)
    return env


def mteb_command_here(argv: list[str], monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """``mteb <argv>`` through the command's own entry point (``mteb.cli.main``: argument parsing, model and task
    lookup by name, evaluation, the result folder) in this process, with ``env`` set. For the tests where what a
    separate process adds (mm_st's start-up hook, the command's error printing) is not what they pin: those run real
    ``mteb`` processes; this saves an interpreter start-up (~6-8 s of CPU: mteb, torch, transformers, mm_st)."""
    import logging

    from mteb.cli import main

    for name, value in {**env, "TOKENIZERS_PARALLELISM": "false"}.items():  # the command sets the last one itself
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["mteb", *argv])
    mteb_logger, root = logging.getLogger("mteb"), logging.getLogger()
    level, handlers = mteb_logger.level, list(root.handlers)
    try:
        main()  # raises on a failure, as the command does
    finally:  # `-v` sets mteb's log level; basicConfig may give the root logger a handler
        mteb_logger.setLevel(level)
        root.handlers[:] = handlers


@pytest.mark.slow
def test_start_up_hook_is_lazy_and_registers_on_import_of_mteb(tmp_path):
    command = _mteb_command(tmp_path / "site")
    site = command[3] if len(command) > 1 else None
    code = ("import sys{0}; assert 'mteb' not in sys.modules and 'torch' not in sys.modules and 'mm_st' not in sys.modules; "
            "import mteb; print(mteb.get_task('MMEB-VOC2007').metadata.name, 'torch' in sys.modules, "
            "'mteb.benchmarks.benchmarks' in sys.modules); print(mteb.get_benchmark('MMEB-V2').name)").format(
        f"; import site; site.addsitedir({site!r})" if site else "")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "MMEB-VOC2007"
    # mteb's benchmarks (a second of CPU to build) are built at the first benchmark lookup, which finds mm_st's too
    assert out.stdout.split()[2:] == ["False", "MMEB-V2"]
    off = subprocess.run([sys.executable, "-c", code], env={**_env(), "MM_ST_MTEB_PLUGIN": "0"}, capture_output=True,
                         text=True, timeout=120)
    assert off.returncode != 0 and "MMEB-VOC2007" in off.stderr  # not registered: KeyError from mteb


@pytest.mark.slow
def test_start_up_hook_waits_for_the_mm_st_module_that_imported_mteb(tmp_path):
    """Importing a module of mm_st.evaluation first (it imports mteb half-way through its own import) registers
    once that import has finished: no half-imported module, no warning, every task there."""
    command = _mteb_command(tmp_path / "site")
    site = command[3] if len(command) > 1 else None
    code = ("import sys{0}; import mm_st.evaluation.mbeir_global; import mteb; "
            "print(mteb.get_task('MMST-MBEIR-global-Emoji_t2i').metadata.name, mteb.get_benchmark('MMEB').name)").format(
        f"; import site; site.addsitedir({site!r})" if site else "")
    out = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["MMST-MBEIR-global-Emoji_t2i", "MMEB"]


@pytest.mark.slow
def test_mteb_command_runs_a_task_and_the_benchmark_and_results_read_back(data, saved_model, tmp_path,
                                                                           monkeypatch):
    command, results = _mteb_command(tmp_path / "site"), tmp_path / "results"
    env = _env(MM_ST_MMEB_DATA=str(data["mmeb"]))
    common = ["-m", str(saved_model), "--output-folder", str(results), "-v", "1", "--batch-size", "8"]
    # the single task through the command's entry point in this process, the benchmark in a real `mteb` process
    mteb_command_here(["run", "-t", "MMEB-VOC2007", *common], monkeypatch, MM_ST_MMEB_DATA=str(data["mmeb"]))
    revision = mteb.get_model_meta(str(saved_model)).revision
    folder = results / "results" / "local__tiny-vlm2vec" / revision
    single = json.loads((folder / "MMEB-VOC2007.json").read_text())
    run = subprocess.run(command + ["run", "-b", "MMEB", *common], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list(folder.glob("MMEB-*.json"))) == 36

    bench = mteb.get_benchmark("MMEB")
    loaded = mteb.ResultCache(results).load_results(models=["local/tiny-vlm2vec"], tasks=bench, include_remote=False)
    score = bench.get_score(loaded)["local/tiny-vlm2vec"]
    assert {"Mean(Task)", "Meta-task::VQA", "Distribution::OOD"} <= set(score)
    assert all(0.0 <= score[k] <= 1.0 for k in score if k != "Rank")
    # the deprecated top-level mteb.load_results reads the same cache through $MTEB_CACHE
    old = os.environ.get("MTEB_CACHE")
    os.environ["MTEB_CACHE"] = str(results)
    try:
        with pytest.warns(DeprecationWarning, match="load_results"):
            legacy = mteb.load_results(download_latest=False, models=["local/tiny-vlm2vec"], tasks=["MMEB-VOC2007"])
    finally:
        os.environ.pop("MTEB_CACHE") if old is None else os.environ.__setitem__("MTEB_CACHE", old)
    voc = legacy.model_results[0].task_results[0]
    assert voc.get_score() == single["scores"]["test"][0]["main_score"]
    # same score in-process (the CLI used the same model, data and instructions)
    here = mteb.evaluate(mteb.get_model(str(saved_model)), E.mmeb_tasks(["VOC2007"], data=data["mmeb"]), cache=None,
                         show_progress_bar=False, encode_kwargs={"batch_size": 8})
    assert here.task_results[0].get_score() == pytest.approx(voc.get_score(), abs=1e-6)


def _latent_attention_model(folder: Path) -> Path:
    build_model(tiny_model("qwen2_vl"), recipe="mmembed", pooling="latent_attention", attention="bidirectional",
                pooling_kwargs={"num_latents": 8}).save(str(folder))
    return folder


def test_mteb_command_loads_a_latent_attention_model_and_prints_a_data_error_without_traceback(data, saved_model,
                                                                                               tmp_path, monkeypatch):
    """`mteb run -m <latent-attention model>` runs (its module file is mm_st's own code, so no trust_remote_code is
    needed); a data error (variable unset) ends the command with the error alone, as mteb's last traceback line."""
    command, results = _mteb_command(tmp_path / "site"), tmp_path / "results"
    latent = _latent_attention_model(tmp_path / "latent")
    common = ["-t", "XTDT2IRetrieval", "-l", "eng", "--output-folder", str(results), "--no-co2-tracker", "-v", "1"]
    env = _env(MM_ST_XTD_DATA=str(data["xtd"]))
    unset = {k: v for k, v in env.items() if k != "MM_ST_XTD_DATA"}
    # the data error in a real `mteb` process (its printing is the command's); meanwhile the latent-attention model
    # through the command's entry point in this process
    unset_run = subprocess.Popen(command + ["run", "-m", str(saved_model), *common], env=unset, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        mteb_command_here(["run", "-m", str(latent), *common], monkeypatch, MM_ST_XTD_DATA=str(data["xtd"]))
    finally:
        _, unset_err = unset_run.communicate(timeout=600)
    (result,) = results.rglob("XTDT2IRetrieval.json")
    assert 0.0 <= json.loads(result.read_text())["scores"]["test"][0]["recall_at_10"] <= 1.0
    assert unset_run.returncode == 1 and "Traceback" not in unset_err, unset_err[-3000:]
    message = "mm_st.evaluation.data.DataLayoutError: No XTD data configured: pass data=... or set $MM_ST_XTD_DATA"
    assert unset_err[unset_err.index(message):].rstrip().endswith("(e.g. the MSCOCO train2014 folder)")


def test_mm_st_input_errors_print_without_traceback_only_in_the_mteb_command(data, tmp_path, capsys):
    from mm_st.evaluation import registry

    assert registry._is_mteb_command(["/venv/bin/mteb", "run"]) and registry._is_mteb_command(["/x/mteb/__main__.py"])
    assert not registry._is_mteb_command(["/venv/bin/pytest"]) and not registry._is_mteb_command([])
    others = []
    hook = registry.cli_excepthook(lambda *exc: others.append(exc[0]))
    (tmp_path / "not-xtd").mkdir()
    for root in (tmp_path / "missing", tmp_path / "not-xtd"):  # missing root, wrong root
        with pytest.raises(E.DataLayoutError) as error:
            E.XTDT2IRetrieval(data=str(root)).load_data()
        hook(error.type, error.value, error.tb)
        assert capsys.readouterr().err == f"mm_st.evaluation.data.DataLayoutError: {error.value}\n"
    # a latent-attention model whose module file is not mm_st's own: refused, one line, never run
    folder = _latent_attention_model(tmp_path / "latent")
    (folder / "latent_attention.py").write_text((folder / "latent_attention.py").read_text() + "\nprint('ran')\n")
    capsys.readouterr()
    with pytest.raises(E.model.UntrustedModelCode, match="latent_attention.py' \\(module LatentAttentionPooling\\) is not "
                       "mm_st's own code file.*mteb's command does not run a model's own code") as error:
        E.load_mm_st_model(str(folder))
    hook(error.type, error.value, error.tb)
    assert capsys.readouterr().err == f"mm_st.evaluation.model.UntrustedModelCode: {error.value}\n"
    hook(ValueError, ValueError("other"), None)
    assert others == [ValueError]


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def _evaluate(task, model=None):
    return mteb.evaluate(model or OracleEncoder(POOL), task, cache=None, show_progress_bar=False)


def test_missing_or_incomplete_data_names_the_layout_and_first_missing_file(data, tmp_path, monkeypatch):
    monkeypatch.delenv("MM_ST_XTD_DATA", raising=False)
    with pytest.raises(E.DataLayoutError, match="(?s)MMEB data directory not found.*Expected layout") as err:
        _evaluate(E.mmeb_tasks(["VOC2007"], data=tmp_path / "nowhere")[0])
    assert "<data>/<Dataset>/test-00000-of-00001.parquet" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(E.DataLayoutError, match=r"first missing file '.*/empty/VOC2007/test-00000-of-00001.parquet'"):
        _evaluate(E.mmeb_tasks(["VOC2007"], data=tmp_path / "empty")[0])
    broken = tmp_path / "broken"
    shutil.copytree(data["mmeb"] / "VOC2007", broken / "VOC2007")
    shutil.copytree(data["mmeb"] / "eval_images", broken / "eval_images")
    (broken / "eval_images" / "emoji" / "0.png").unlink()
    with pytest.raises(E.DataLayoutError, match=r"image file not found: '.*/eval_images/emoji/0.png' \(first missing image\)"):
        _evaluate(E.mmeb_tasks(["VOC2007"], data=broken)[0])
    with pytest.raises(E.DataLayoutError, match="resolves outside the image root"):
        E.data.image_file(broken / "eval_images", "../VOC2007/test-00000-of-00001.parquet", "x", "")
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "cols" / "VOC2007").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"qry_text": "a", "qry_img_path": ""}]), tmp_path / "cols" / "VOC2007" / "test.parquet")
    with pytest.raises(E.DataLayoutError, match=r"lacks column\(s\) \['tgt_text', 'tgt_img_path'\]"):
        _evaluate(E.mmeb_tasks(["VOC2007"], data=tmp_path / "cols")[0])
    xtd = tmp_path / "xtd"
    shutil.copytree(data["xtd"], xtd)
    (xtd / "test_1kcaptions_ko.txt").unlink()
    with pytest.raises(E.DataLayoutError, match=r"first missing file '.*test_1kcaptions_ko.txt'.*\n.*XTD10"):
        _evaluate(E.XTDT2IRetrieval(data=xtd))
    cirr = tmp_path / "cirr"
    shutil.copytree(data["cirr"], cirr)
    (cirr / "image_splits" / "split.rc2.val.json").unlink()
    with pytest.raises(E.DataLayoutError, match=r"first missing file '.*image_splits/split.rc2.val.json'"):
        _evaluate(E.CIRRComposedImageRetrieval(data=cirr))
    with pytest.raises(E.DataLayoutError, match=r"No XTD data configured.*\$MM_ST_XTD_DATA"):
        E.XTDT2IRetrieval().load_data()


def _tiny_text_only_model(path: Path):
    """A tiny text-only causal LM (Llama) with the LLaVA tiny tokenizer, built with the vlm2vec recipe."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("llava"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    settings = json.loads((path / "tokenizer_config.json").read_text())
    settings.pop("processor_class", None)
    settings.pop("chat_template", None)
    (path / "tokenizer_config.json").write_text(json.dumps(settings))
    (path / "chat_template.jinja").unlink(missing_ok=True)
    return build_model(str(path), recipe="vlm2vec")


def test_model_lacking_a_modality_fails_before_encoding(data, tmp_path):
    encoder = E.MMSTEncoder(_tiny_text_only_model(tmp_path / "text-lm"), name="local/text-lm")
    assert encoder.mteb_model_meta.modalities == ["text"]
    # OK-VQA queries are image + question: mteb itself would only warn and drop the images
    with pytest.raises(ValueError, match=r"supports modalities \['text'\].*MMEB-OK-VQA.*missing \['image'\]"):
        _evaluate(E.mmeb_tasks(["OK-VQA"], data=data["mmeb"])[0], encoder)
    # mteb's own tasks: the wrapper refuses before the first batch
    from mteb._create_dataloaders import create_dataloader

    task = E.mmeb_tasks(["WebQA"], data=data["mmeb"])[0]
    task.load_data()
    loader = create_dataloader(task.dataset["default"]["test"]["corpus"], task_metadata=task.metadata,
                               prompt_type=PromptType.document)
    with pytest.raises(ValueError, match=r"documents of task 'MMEB-WebQA' need \['image', 'text'\] \(missing \['image'\]\)"):
        encoder.encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default", prompt_type=PromptType.document)
    assert sum(encoder.encoded.values()) == 0
    # text-only tasks still run
    assert encoder.instruction(mteb.get_task("WebQAT2TRetrieval").metadata, PromptType.query) == \
        mteb.get_task("WebQAT2TRetrieval").metadata.prompt["query"]


def test_vlm2vec_mmeb_text_is_what_vlm2vec_eval_feeds(emoji_images):
    """Issue 11 item 6: TIGER-AI-Lab/VLM2Vec src/data/eval_dataset/image_*.py (HEAD 6e1e1d4), as rendered text."""
    model = build_model(tiny_model("llava_next"), recipe="vlm2vec")
    encoder = E.MMSTEncoder(model, name="local/vlm2vec")
    tokenizer = model[0].tokenizer

    def fed(task, side, item):
        prompt = encoder.instruction(mteb.get_task(task).metadata, side)
        features = model.preprocess([item], prompt=prompt, task=side.value)
        text = tokenizer.decode(features["input_ids"][0][features["attention_mask"][0].bool()])
        return re.sub(r"(<image>)+", "<image>", text).removeprefix(tokenizer.bos_token)  # one <image> per image

    image = emoji_images[0]
    assert fed("MMEB-VisDial", PromptType.query, "Q: is it red? A: yes") == (
        "Represent the given dialogue about an image, which is used for image retrieval: Q: is it red? A: yes\n\n")
    assert fed("MMEB-VisDial", PromptType.document, image) == "<image>\nRepresent the given image.\n"
    assert fed("MMEB-MSCOCO_t2i", PromptType.query, "A dog.") == "Find me an everyday image that matches the given caption: A dog.\n"
    assert fed("MMEB-MSCOCO", PromptType.document, image) == "<image>\nRepresent the given cropped image of the object"
    assert fed("MMEB-RefCOCO", PromptType.document, image) == "<image>\nRepresent the given cropped image of the object"
    assert fed("MMEB-OK-VQA", PromptType.query, {"text": "Why?", "image": image}) == (
        "<image>\nRepresent the given image with the following question: Why?\n")
    assert fed("MMEB-VOC2007", PromptType.query, image) == "<image>\nIdentify the object shown in the image\n"
    assert fed("MMEB-VOC2007", PromptType.document, "dog") == "dog"
