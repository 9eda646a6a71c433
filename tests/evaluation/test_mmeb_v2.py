"""MMEB-V2's video and visual-document tasks (mm_st/evaluation/benchmarks/mmeb_v2.py, mmeb_v2_files.py) over the
generated layout of tests/mmeb_v2_layout.py; sources quoted are TIGER-AI-Lab/VLM2Vec at commit 6e1e1d42."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mteb
import numpy as np
import pytest
import torch
from mteb.results import BenchmarkResults, ModelResult, TaskResult
from PIL import Image

from mm_st import build_model
from mm_st.evaluation import mmeb_v2_files as F
from mm_st.evaluation.benchmarks import mmeb_v2 as V2
from mm_st.evaluation.data import DataLayoutError
from mm_st.evaluation.instructions import MMEB
from mm_st.evaluation.model import MMSTEncoder, mteb_rows, video_frames
from mm_st.evaluation.registry import register
from mm_st.testing import tiny_model
from tests.evaluation.test_evaluation import mteb_command_here
from mm_st.io import PathOutsideRoot
from tests.mmeb_v2_layout import WRITTEN, KeyEncoder, write_frames, write_hf, write_layout

register()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_layout(tmp_path_factory.mktemp("mmeb_v2"))


@pytest.fixture(scope="module")
def inputs(root):
    return {name: F.task_inputs(name, root) for name in WRITTEN}


# ------------------------------------------------------------------------------------------------
# The declaration: datasets, instructions, benchmarks
# ------------------------------------------------------------------------------------------------

QA = ("Given a video and a question, select the most accurate answer from the provided candidates. Return only the "
      "exact text of your chosen answer. Question: ")  # videomme_dataset.py:18, nextqa_dataset.py:18,
# egoschema_dataset.py:18, mvbench_dataset.py:101, activitynetqa_dataset.py:23 (TASK_PROMPT)
VIDEO = "Understand the content of the provided video."  # msrvtt/msvd/didemo/youcook2/vatex_dataset.py:11,
# moment_retrieval_datasets.py:11 (TASK_INST_TGT)
PAGE = ("Find a document image that matches the given query:",  # vidore_dataset.py:9, visrag_dataset.py:10
        "Understand the content of the provided document image.")  # vidore_dataset.py:10, visrag_dataset.py:11
INSTRUCTIONS = {  # dataset: (query, document), quoted from src/data/eval_dataset/<file>:<line>
    "K700": ("Recognize the category of the video content.", None),  # video_classification_utils.py:17
    "SmthSmthV2": ("What actions or object interactions are being performed by the person in the video?", None),  # :18
    "UCF101": ("What activities or sports are being performed by the person in the video?", None),  # :19
    "HMDB51": ("What actions or objects interactions are the person in the video doing?", None),  # :20
    "Breakfast": ("Recognize the breakfast type that the person is cooking in the video. ", None),  # :21
    "MSR-VTT": ("Find a video that contains the following visual content:", VIDEO),  # msrvtt_dataset.py:10
    "MSVD": ("Find the video snippet that corresponds to the given summary:", VIDEO),  # msvd_dataset.py:10
    "DiDeMo": ("Find a video that includes the following described scenes:", VIDEO),  # didemo_dataset.py:10
    "YouCook2": ("Find a video that demonstrates the following action while making a recipe:", VIDEO),  # youcook2:10
    "VATEX": ("Select a video that fits the description provided:", VIDEO),  # vatex_dataset.py:10
    "QVHighlight": ("Find the clip that corresponds to the described scene in the given video:", VIDEO),  # moment_retrieval_datasets.py:10
    "Charades-STA": ("Find the clip that corresponds to the described scene in the given video:", VIDEO),
    "MomentSeeker": ("Find the clip that corresponds to the given text:",  # momentseeker_dataset.py:12
                     "Understand the content of the provided video clip."),  # momentseeker_dataset.py:15
    **dict.fromkeys(("Video-MME", "NExTQA", "EgoSchema", "MVBench", "ActivityNetQA"), (QA, None)),
}
MOMENTSEEKER = {"image": "Select the video clip that aligns with the given text and image:",  # momentseeker:13
                "video": "Find the clip that corresponds to the given sentence and video segment:"}  # momentseeker:14


def test_every_dataset_of_the_configs_is_a_task_with_vlm2vecs_instructions():
    video = [n for n, e in F.DATASETS.items() if e.modality == "video"]
    visdoc = [n for n, e in F.DATASETS.items() if e.modality == "visdoc"]
    assert (len(video), len(visdoc)) == (18, 27)  # video.yaml, visdoc.yaml
    for name, (query, document) in INSTRUCTIONS.items():
        prompt = mteb.get_task(f"MMEB-{name}").metadata.prompt
        assert prompt == {"query": query, **({"document": document} if document else {})}, name
    for name in visdoc:
        assert mteb.get_task(f"MMEB-{name}").metadata.prompt == {"query": PAGE[0], "document": PAGE[1]}
    assert {k: F.MOMENTSEEKER_QUERY[k] for k in MOMENTSEEKER} == MOMENTSEEKER
    # eval_type of the configs: local for SmthSmthV2, moment retrieval and QA; global for the rest
    local = {n for n, e in F.DATASETS.items() if e.eval_type == "local"}
    assert local == {"SmthSmthV2", "QVHighlight", "Charades-STA", "MomentSeeker", "Video-MME", "NExTQA", "EgoSchema",
                     "MVBench", "ActivityNetQA"}
    assert F.DATASETS["K700"].hf == ("VLM2Vec/Kinetics-700", None, "test")  # dataset_hf_path.py:22
    assert F.DATASETS["YouCook2"].hf == ("lmms-lab/YouCook2", None, "val")  # dataset_hf_path.py:9
    assert F.DATASETS["Charades-STA"].frame_root == "video-tasks/frames/video_mret/Charades_STA"  # video.yaml
    labels = F.VIDEO_CLASSIFICATION_LABELS
    assert {k: (len(v), v[0], v[-1]) for k, v in labels.items()} == {  # video_classification_utils.py VIDEOCLS_LABEL_MAPPING
        "Kinetics-700": (700, "waiting_in_line", "clay_pottery_making"), "UCF101": (101, "Kayaking", "Fencing"),
        "HMDB51": (51, "ride_bike", "fall_floor"), "Breakfast": (10, "pancake", "salad")}
    metrics = {mteb.get_task(f"MMEB-{n}").metadata.main_score for n in video}, \
        {mteb.get_task(f"MMEB-{n}").metadata.main_score for n in visdoc}
    assert metrics == ({"precision_at_1"}, {"ndcg_at_5"})


def test_benchmarks_list_vlm2vecs_table():
    full, video, visdoc = (mteb.get_benchmark(n) for n in ("MMEB-V2", "MMEB-V2-video", "MMEB-V2-visdoc"))
    names = [t.metadata.name for t in full.tasks]
    assert len(names) == len(set(names)) == 78
    assert names[:36] == [f"MMEB-{n}" for n in MMEB]  # the image tasks are MMEB v1's
    assert [t.metadata.name for t in video.tasks] == names[36:54]
    assert [t.metadata.name for t in visdoc.tasks] == names[54:]
    # report_score_v2.py's visdoc list: the English-only ViDoRe v2 subsets are evaluated but not in the table
    assert not {"MMEB-ViDoRe_biomedical_lectures_v2", "MMEB-ViDoRe_economics_reports_v2",
                "MMEB-ViDoRe_esg_reports_v2"} & set(names)
    groups = {g.label: len(g.tasks) for a in full.aggregations[1:] for g in a.groups}
    assert groups == {"Image": 36, "Video": 18, "VisDoc": 24, "Image CLS": 10, "Image QA": 10, "Image RET": 12,
                      "Image GD": 4, "Video CLS": 5, "Video QA": 5, "Video RET": 5, "Video MRET": 3, "VisDoc VDRv1": 10,
                      "VisDoc VDRv2": 4, "VisDoc VR": 6, "VisDoc OOD": 4}


def _result(task, score):
    return TaskResult(dataset_revision="1", task_name=task.metadata.name, mteb_version="2", evaluation_time=1.0,
                      scores={"test": [{"main_score": score, "hf_subset": "default", "languages": ["eng-Latn"]}]})


def test_overall_score_is_vlm2vecs_mean_over_the_78_datasets():
    bench = mteb.get_benchmark("MMEB-V2")
    by_modality = {"Image": 0.5, "Video": 0.2, "VisDoc": 0.8}
    group_of = {t.metadata.name: g.label for g in bench.aggregations[1].groups for t in g.tasks}
    results = [_result(t, by_modality[group_of[t.metadata.name]]) for t in bench.tasks]
    score = bench.get_score(BenchmarkResults(model_results=[ModelResult(model_name="t/x", model_revision="1",
                                                                         task_results=results)]))["t/x"]
    # VLM2Vec's overall: sum of the 78 main scores / 78 = (36*.5 + 18*.2 + 24*.8) / 78, not the mean of the columns
    assert score["Mean(Task)"] == pytest.approx((36 * 0.5 + 18 * 0.2 + 24 * 0.8) / 78) != pytest.approx(0.5)
    assert (score["Modality::Image"], score["Modality::Video"], score["Modality::VisDoc"]) == pytest.approx((0.5, 0.2, 0.8))
    assert score["Meta-task::Video MRET"] == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------------
# The inputs: VLM2Vec's parsers over the local layout
# ------------------------------------------------------------------------------------------------


def test_frames_are_sampled_as_process_video_frames(root):
    frames = F.task_inputs("MSR-VTT", root).candidates["video7020"].video  # 10 frames, 8 sampled
    assert [Path(f).name for f in frames] == [f"frame_{i}.png" for i in (0, 1, 2, 3, 5, 6, 7, 9)]  # linspace(0, 9, 8)
    assert F.sample_frames([f"f{i}" for i in range(5)], 8) == [f"f{i}" for i in range(5)]  # fewer: all


def test_task_inputs_follow_vlm2vecs_parsers(inputs, root):
    breakfast = inputs["Breakfast"]  # global: every label (generate_cand_dataset: the rows' labels first, then the rest)
    labels = F.VIDEO_CLASSIFICATION_LABELS["Breakfast"]
    assert breakfast.ranked is None and list(breakfast.candidates) == ["coffee", "tea", "juice"] + [
        x for x in labels if x not in ("coffee", "tea", "juice")]
    assert breakfast.queries[0].text == "" and len(breakfast.queries[0].video) == 8 and breakfast.relevant[0] == {"coffee": 1}
    ssv2 = inputs["SmthSmthV2"]  # local: the row's neg_text (which holds the positive), candidates shared by name
    assert ssv2.ranked == [["key0 a", "key2 pushing", "key5 b"], ["key3 pulling", "key4 c"]] and len(ssv2.candidates) == 5
    assert len(ssv2.queries[0].video) == 5  # 5 frames saved: all kept
    mme, nextqa, ego, anet = (inputs[n] for n in ("Video-MME", "NExTQA", "EgoSchema", "ActivityNetQA"))
    assert mme.queries[0].text == "What is shown?\nA. key0 cat\nB. key1 dog\nC. key2 car\nD. key3 cup"
    assert mme.ranked[0] == ["A. key0 cat", "B. key1 dog", "C. key2 car", "D. key3 cup"]
    assert mme.candidates["C. key2 car"].text == "key2 car" and mme.relevant[0] == {"C. key2 car": 1}
    assert nextqa.queries[0].text == "why\nOptions:\n" + "\n".join(f"({chr(65 + i)}) key{i} option {i}" for i in range(5))
    assert nextqa.relevant[0] == {"key1 option 1": 1}
    assert ego.queries[0].text == "What did c do?A. key0 did 0 B. key1 did 1 C. key2 did 2 D. key3 did 3 E. key4 did 4"
    assert ego.candidates["D. key3 did 3"].text == "key3 did 3" and ego.relevant[0] == {"D. key3 did 3": 1}
    assert anet.queries[1].text == "is it red? (A) yes; (B) no." and anet.relevant[1] == {"no": 1}
    mvbench = inputs["MVBench"]
    assert len(mvbench.queries) == 20 and mvbench.ranked[0][0] == "(A) key0 ans" and mvbench.relevant[1] == {"(B) key1 ans": 1}
    qv = inputs["QVHighlight"]  # the clip folders beside query/, named by their path; the positive_* one relevant
    folder = root / F.DATASETS["QVHighlight"].frame_root / "vidA_60.0_210.0"
    assert qv.ranked[0] == [str(folder / c) for c in ("negative_0", "negative_1", "positive_0")]
    assert qv.relevant[0] == {str(folder / "positive_0"): 1} and qv.queries[0].video[0].endswith("query/frame_0.png")
    seeker = inputs["MomentSeeker"]
    assert [q.instruction for q in seeker.queries] == [F.MOMENTSEEKER_QUERY[k] for k in ("text", "video", "image")]
    assert seeker.queries[2].image.endswith("query_img7.jpg") and len(seeker.queries[1].video) == 6  # load_frames: all
    pages = inputs["ViDoRe_arxivqa"]  # global over the corpus; a zero-score qrels row is dropped
    assert pages.ranked is None and len(pages.candidates) == 5 and pages.relevant[0] == {"11": 2}
    english, everyone = inputs["ViDoRe_esg_reports_v2"], inputs["ViDoRe_esg_reports_v2_multilingual"]
    assert (len(english.queries), len(everyone.queries)) == (2, 4)  # language == "english" vs all languages


def test_oracle_scores_every_dataset_and_nothing_reversed(root, monkeypatch):
    monkeypatch.setenv("MM_ST_MMEB_V2_DATA", str(root))
    tasks = V2.mmeb_v2_tasks(list(WRITTEN))
    good = mteb.evaluate(KeyEncoder(), tasks, cache=None, show_progress_bar=False)
    bad = mteb.evaluate(KeyEncoder(reverse=True), V2.mmeb_v2_tasks(list(WRITTEN)), cache=None, show_progress_bar=False)
    assert {r.task_name: r.get_score() for r in good.task_results} == {f"MMEB-{n}": 1.0 for n in WRITTEN}
    reversed_scores = {r.task_name: r.get_score() for r in bad.task_results}
    # reversed, a page's one positive (relevance 2) ranks 5th of 5: nDCG@5 = (2 / log2(6)) / (2 / log2(2)) (mteb
    # rounds to 5 decimals)
    pages = {f"MMEB-{n}" for n in WRITTEN if F.DATASETS[n].modality == "visdoc"}
    assert reversed_scores == {n: pytest.approx(1 / np.log2(6), abs=1e-5) if n in pages else 0.0 for n in reversed_scores}


def test_data_errors_name_the_dataset_and_the_file(root, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(root / "VLM2Vec" / "MSR-VTT", copy / "VLM2Vec" / "MSR-VTT")
    with pytest.raises(DataLayoutError, match=r"MSR-VTT: the frame folder '.*video-tasks/frames/video_ret/MSR-VTT/"
                                              r"video7020' is missing"):
        F.task_inputs("MSR-VTT", copy)
    with pytest.raises(DataLayoutError, match=r"VATEX: the local copy of the Hugging Face dataset 'VLM2Vec/VATEX' is "
                                              r"missing: '.*VLM2Vec/VATEX'"):
        F.task_inputs("VATEX", copy)
    write_frames(copy / F.DATASETS["MSR-VTT"].frame_root / "video7020", 1, n=0)
    with pytest.raises(DataLayoutError, match=r"MSR-VTT: the frame folder '.*video7020' has no frame images"):
        F.task_inputs("MSR-VTT", copy)
    write_hf(copy, "VLM2Vec/MSVD", {None: {"video_id": ["../../../../../outside"], "video": ["x.mp4"], "caption": [["c"]]}})
    with pytest.raises(PathOutsideRoot, match=r"MSVD: frame path '.*outside' resolves outside"):
        F.task_inputs("MSVD", copy)  # a data value never leads out of the root
    monkeypatch.delenv("MM_ST_MMEB_V2_DATA", raising=False)
    with pytest.raises(DataLayoutError, match=r"No MMEB-V2 data configured: pass data=... or set \$MM_ST_MMEB_V2_DATA"):
        F.root_dir(None)


# ------------------------------------------------------------------------------------------------
# The mteb wrapper: video inputs in mm_st's form, per-row instructions
# ------------------------------------------------------------------------------------------------


def test_mteb_video_rows_become_mm_st_video_inputs(tmp_path):
    paths = [str(write_frames(tmp_path / "v", 3, n=2) / f"frame_{i}.png") for i in range(2)]
    rows = mteb_rows({"id": ["q0", "q1"], "text": ["key3 a", ""], "video": [paths, paths]})
    assert rows == [{"video": paths, "text": "key3 a"}, {"video": paths}]
    tensor = torch.zeros(2, 3, 4, 5, dtype=torch.uint8)  # mteb's VideoInput: frames as a T,C,H,W tensor
    tensor[1, 0] = 255
    frames = video_frames(tensor)
    assert [f.size for f in frames] == [(5, 4)] * 2 and frames[1].getpixel((0, 0)) == (255, 0, 0)
    assert [f.getpixel((0, 0)) for f in video_frames(torch.ones(1, 4, 5, 3))] == [(255, 255, 255)]  # T,H,W,C float
    # MomentSeeker: the row's own instruction (else the task's), the image of an image-conditioned query
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "q.jpg")
    batch = {"id": ["a", "b"], "text": ["t1", "t2"], "video": [None, paths], "mm_st_instruction": ["Own:", ""],
             "mm_st_image": [str(tmp_path / "q.jpg"), ""]}
    first, second = mteb_rows(batch, "Task:")
    assert first["instruction"] == "Own:" and first["text"] == "t1" and first["image"].getpixel((0, 0)) == (9, 9, 9)
    assert second == {"video": paths, "text": "t2", "instruction": "Task:"}
    assert "instruction" not in mteb_rows(batch, None)[0]  # a recipe without instructions gets none


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-vlm2vec-v2"
    build_model(tiny_model("llava"), recipe="vlm2vec").save(str(path))
    return path


def test_mteb_command_scores_the_visdoc_benchmark(root, saved_model, tmp_path, monkeypatch):
    bench = mteb.get_benchmark("MMEB-V2-visdoc")
    few = [t for t in bench.tasks if t.metadata.name in ("MMEB-ViDoRe_arxivqa", "MMEB-VisRAG_ArxivQA")]
    monkeypatch.setattr(bench, "tasks", few)  # the full list is pinned above; two tasks keep this quick
    results = tmp_path / "results"
    mteb_command_here(["run", "-m", str(saved_model), "-b", "MMEB-V2-visdoc", "--output-folder", str(results),
                       "-v", "1", "--batch-size", "8"], monkeypatch, MM_ST_MMEB_V2_DATA=str(root))
    files = {p.stem: json.loads(p.read_text()) for p in results.rglob("MMEB-*.json")}
    assert set(files) == {"MMEB-ViDoRe_arxivqa", "MMEB-VisRAG_ArxivQA"}
    for result in files.values():
        scores = result["scores"]["test"][0]
        assert scores["main_score"] == scores["ndcg_at_5"] and 0.0 <= scores["main_score"] <= 1.0


def test_a_model_without_video_is_refused_before_encoding(root, monkeypatch):
    encoder = MMSTEncoder(build_model(tiny_model("llava"), recipe="vlm2vec"), name="local/tiny")  # LLaVA: no video
    assert encoder.mteb_model_meta.modalities == ["image", "text"]
    monkeypatch.setenv("MM_ST_MMEB_V2_DATA", str(root))
    with pytest.raises(ValueError, match=r"local/tiny does not run on video and MMEB-MSR-VTT contains video"):
        mteb.evaluate(encoder, V2.mmeb_v2_tasks(["MSR-VTT"]), cache=None, show_progress_bar=False)
    assert sum(encoder.encoded.values()) == 0


def test_a_video_model_loads_without_mtebs_video_extra():
    """mm_st reads frame files itself: mteb's `video` extra (torchcodec, for video files) is not asked for."""
    from mteb.models import ModelMeta

    from mm_st.evaluation.model import _meta

    meta = _meta("local/video", "1", "vlm2vec", ["image", "text", "video"], {})
    assert "video" in meta.modalities and "video" not in meta._resolve_extras_groups()
    meta._check_requirements()  # raises ImportError naming torchcodec for a plain ModelMeta without it
    plain = ModelMeta.create_empty(overwrites={"name": "x/y", "modalities": ["image", "text", "video"]})
    assert "video" in plain._resolve_extras_groups()


def test_smthsmthv2_keeps_the_first_rows_as_the_config_says(root, monkeypatch):
    assert F.DATASETS["SmthSmthV2"].num_rows == 1000  # video.yaml num_sample_per_subset: 1000 (sample_dataset)
    assert {e.num_rows for n, e in F.DATASETS.items() if n != "SmthSmthV2"} == {None}
    import dataclasses

    monkeypatch.setitem(F.DATASETS, "SmthSmthV2", dataclasses.replace(F.DATASETS["SmthSmthV2"], num_rows=1))
    assert F.task_inputs("SmthSmthV2", root).ranked == [["key0 a", "key2 pushing", "key5 b"]]


# ------------------------------------------------------------------------------------------------
# End to end with a backbone that takes video (Qwen2-VL)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-qwen2-vl"
    build_model(tiny_model("qwen2_vl"), recipe="vlm2vec").save(str(path))
    return path


def test_video_inputs_reach_the_model_as_the_contract_says(root, video_model, monkeypatch):
    from mteb._create_dataloaders import create_dataloader
    from mteb.types import PromptType

    monkeypatch.setenv("MM_ST_MMEB_V2_DATA", str(root))
    encoder = mteb.get_model(str(video_model))
    assert "video" in encoder.mteb_model_meta.modalities
    model = encoder.model
    for name in ("MSR-VTT", "MomentSeeker"):
        task = V2.mmeb_v2_tasks([name])[0]
        task.load_data()
        split = task.dataset["default"]["test"]
        queries, candidates = F.model_inputs(name, F.task_inputs(name, root))
        for side, rows, items in ((PromptType.document, split["corpus"], candidates),
                                  (PromptType.query, split["queries"], queries)):
            loader = create_dataloader(rows, task_metadata=task.metadata, prompt_type=side, batch_size=4)
            got = encoder.encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="default",
                                 prompt_type=side)
            by_hand = [{**item, "image": Image.open(item["image"]).convert("RGB")} if "image" in item else item
                       for item in items]
            encode = model.encode_query if side == PromptType.query else model.encode_document
            want = encode(by_hand, convert_to_numpy=True)
            assert np.abs(got - want).max() < 1e-5, (name, side)
    assert queries[0] == {"text": "key3 text only", "instruction": F.MOMENTSEEKER_QUERY["text"]}  # MomentSeeker's
    assert queries[1]["video"][0].endswith("video_frames/src_q/frame_0.png") and len(queries[1]["video"]) == 6


def test_mteb_command_scores_video_and_visdoc_tasks_of_mmeb_v2(root, video_model, tmp_path, monkeypatch):
    bench = mteb.get_benchmark("MMEB-V2")
    keep = ("MMEB-MSR-VTT", "MMEB-ActivityNetQA", "MMEB-MomentSeeker", "MMEB-ViDoRe_arxivqa")
    monkeypatch.setattr(bench, "tasks", [t for t in bench.tasks if t.metadata.name in keep])  # all 78: pinned above
    results = tmp_path / "results"
    mteb_command_here(["run", "-m", str(video_model), "-b", "MMEB-V2", "--output-folder", str(results), "-v", "1",
                       "--batch-size", "4"], monkeypatch, MM_ST_MMEB_V2_DATA=str(root))
    files = {p.stem: json.loads(p.read_text())["scores"]["test"][0] for p in results.rglob("MMEB-*.json")}
    assert set(files) == set(keep)
    for name, scores in files.items():
        metric = "ndcg_at_5" if "ViDoRe" in name else "precision_at_1"
        assert scores["main_score"] == scores[metric] and 0.0 <= scores["main_score"] <= 1.0


def test_a_hub_model_declares_the_video_its_saved_config_has(video_model, monkeypatch):
    """`mteb run -m org/name` of an mm_st model on the Hub: its modalities come from its sentence_bert_config.json."""
    from mm_st.evaluation.model import mm_st_model_meta
    from mm_st.hub import push_folder
    from tests.hub_server import FakeHub, use_in_process

    with FakeHub(token="hf_test") as hub:
        from huggingface_hub import constants

        use_in_process(monkeypatch, hub, "hf_test")
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HOME", str(video_model.parent / "hf-home"))
        push_folder(video_model, "org/tiny-qwen2-vl", repo_type="model", endpoint=hub.url)
        meta = mm_st_model_meta("org/tiny-qwen2-vl")
    assert meta is not None and meta.modalities == ["image", "text", "video"]


def test_momentseeker_rows_get_their_own_instruction_in_the_v2_query_prompt(video_model):
    """vlm2vec_v2's MomentSeeker query prompt holds each row's own instruction (MMSTEncoder.row_prompt); the task's
    own fills it for a row without one; other tasks and the v1 recipe have no row prompt."""
    from mteb.types import PromptType

    model = mteb.get_model(str(video_model)).model
    v2, v1 = MMSTEncoder(model, recipe="vlm2vec_v2"), MMSTEncoder(model, recipe="vlm2vec")
    seeker, msrvtt = (mteb.get_task(f"MMEB-{name}").metadata for name in ("MomentSeeker", "MSR-VTT"))
    assert v2.row_prompt(seeker, PromptType.query) == "<image> {instruction} <sent>"
    assert v2.instruction(seeker, PromptType.query) == (
        "<image> Find the clip that corresponds to the given text: <sent>")  # momentseeker_dataset.py:12
    assert v2.row_prompt(seeker, PromptType.document) is None  # the clips: the task's own prompt, no slot
    assert v2.row_prompt(msrvtt, PromptType.query) is None and v1.row_prompt(seeker, PromptType.query) is None
    assert [name for name, d in F.DATASETS.items() if d.row_instructions] == ["MomentSeeker"]
