"""VLM2Vec-V2's recipe: its strings and values against TIGER-AI-Lab/VLM2Vec at 6e1e1d42 (copied literally here), its
dataset-config reader, the one-dataset sub-batch sampler, the dry run and a short embedded run."""

import itertools
import json

import datasets
import pytest
import torch
from torch.utils.data import BatchSampler, ConcatDataset, SequentialSampler

from mm_st import templates
from mm_st.data import generated_media as media
from mm_st.data.vlm2vec_v2_train import V2Dataset, load_v2_dataset, read_dataset_config, sample_frames
from mm_st.recipes import vlm2vec_v2 as v2
from mm_st.training import CONFIGS, VLM2VecV2Config, describe
from mm_st.training.cli import main
from mm_st.training.vlm2vec_v2 import SubBatchSampler, write_embedded

# -- strings, copied from the pinned source ---------------------------------------------------------------------------


def test_video_and_visdoc_strings_are_the_pinned_parsers():
    # src/data/dataset/llavahound_dataset_caption.py:24-25, llavahound_dataset_qa.py:17
    assert v2.VRET_QRY_PROMPT == "Find a video that contains the following visual content: "
    assert v2.VRET_TGT_PROMPT == "Understand the content of the provided video: "
    assert v2.QA_QUERY_PROMPT == "Answer a question based on the content of a video. "
    # src/data/dataset/visrag_dataset.py:23, 39 (ChartQA), :50-52 process_query: '{prompt} {query} {image_token}'
    assert v2.visrag_query_prompt("ChartQA") == (
        "This query is related to retrieving a relevant chart that visually represents numerical or categorical data. "
        "The retrieved chart should contain bar graphs, line charts, or other visual elements necessary to analyze "
        "trends, compare values, or extract insights related to the query:  <sent> ")
    assert v2.visrag_target_prompt("Textbooks") == (
        "A textbook page with structured educational content and explanations.  <image>")
    assert v2.visrag_query_prompt("unknown source") == "<sent> " and v2.visrag_target_prompt("x") == " <image>"
    assert len(v2.VISRAG_QUERY_PROMPTS) == len(v2.VISRAG_TARGET_PROMPTS) == 10
    assert v2.VIDORE_QUERY_PROMPT == "<image> <sent>"  # vidore_dataset.py:14-16, 29 (no prompt)
    assert v2.llava_hound_query("<video>\nWhat is it?", v2.QA_QUERY_PROMPT) == (
        "Answer a question based on the content of a video. <image>\nWhat is it?")  # a video goes where <image> is


def test_rows_render_to_v2s_text_on_qwen2_vl():
    """The per-row full prompts give the text V2's parsers feed Qwen2-VL (the bare '<|image_pad|>' token)."""
    page = templates.render_prompt("vlm2vec_v2", "qwen2_vl", num_images=1, fmt="train",
                                   instruction=v2.visrag_target_prompt("SlideVQA"))
    assert page == "A presentation slide with text, bullet points, and diagrams.  <|image_pad|>"
    query = templates.render_prompt("vlm2vec_v2", "qwen2_vl", text="How many lamps?", num_images=1, fmt="train",
                                    instruction=v2.VIDORE_QUERY_PROMPT)
    assert query == "<|image_pad|> How many lamps?"
    # llavahound_dataset_qa.py:10-15, 28: the prompt, then the human turn with '<video>' -> VLM_VIDEO_TOKENS (bare)
    qa = templates.render_prompt("vlm2vec_v2", "qwen2_vl", num_videos=1, fmt="train",
                                 instruction=v2.llava_hound_query("<video>\nWhat is it?", v2.QA_QUERY_PROMPT))
    assert qa == "Answer a question based on the content of a video. <|video_pad|>\nWhat is it?"
    target = templates.render_prompt("vlm2vec_v2", "qwen2_vl", num_videos=1, fmt="train",
                                     instruction=v2.VRET_TGT_PROMPT + v2.VIDEO)
    assert target == "Understand the content of the provided video: <|video_pad|>"  # llavahound_dataset_caption.py:58
    # MMEB rows keep VLM2Vec's training text: '<|image_1|>\n' -> '<|image_pad|>\n', rows as written
    mmeb = templates.render_prompt("vlm2vec_v2", "qwen2_vl", text="Represent the given image.", num_images=1,
                                   fmt="train")
    assert mmeb == "<|image_pad|>\nRepresent the given image."


# -- values and their sources ------------------------------------------------------------------------------------------


def test_config_defaults_are_the_v2_qwen2vl_2b_script():
    c = VLM2VecV2Config()
    assert (c.learning_rate, c.max_steps, c.warmup, c.lr_scheduler_type) == (5e-5, 5000, 100, "linear")
    assert (c.global_batch_size, c.mini_batch_size, c.interleave_batch_size) == (1024, 8, 64)
    assert (c.temperature, c.adapter, c.lora_r, c.lora_alpha, c.lora_dropout, c.lora_init) == (
        0.02, "dora", 16, 64, 0.1, "gaussian")
    assert c.lora_target_modules == "qkv_proj,o_proj,gate_up_proj,down_proj,k_proj,q_proj,out_proj,v_proj,gate_proj,up_proj"
    assert (c.num_frames, c.num_negatives, c.batch_mixing, c.vision_tower) == (8, 0, "per_dataset", "frozen")
    assert CONFIGS["vlm2vec_v2"] is VLM2VecV2Config and c.adapter_config()["use_dora"] is True
    lines = "\n".join(describe(c))
    pinned = "TIGER-AI-Lab/VLM2Vec@6e1e1d42d4cba85ae4db4d3f7a25cba2465d1e16"
    assert (f"interleave_batch_size = 64   ({pinned} experiments/public/train/train_v2-qwen2vl-2B.sh:28 "
            "--interleave_batch_size 64;") in lines
    assert f"lora_alpha = 64   ({pinned} src/arguments.py:18 lora_alpha=64)" in lines
    assert f"num_frames = 8   ({pinned} experiments/public/train/train_alltasks.yaml:179,188,197 num_frames: 8)" in lines
    assert f"adapter = 'dora'   ({pinned} src/model/model.py:188-196 LoraConfig(use_dora=True))" in lines


def test_config_refuses_unknown_groups():
    with pytest.raises(ValueError, match=r"dataset_groups \['audio'\] must be some of image, video, visdoc"):
        VLM2VecV2Config(dataset_groups=["audio"])


# -- the reader ----------------------------------------------------------------------------------------------------------


def test_frames_are_sampled_as_process_video_frames():
    assert sample_frames([str(i) for i in range(20)], 8) == ["0", "2", "5", "8", "10", "13", "16", "19"]
    assert sample_frames(["a", "b", "c"], 8) == ["a", "b", "c"]  # fewer frames: all kept


@pytest.mark.parametrize("text, message", [
    ("a: {dataset_parser: mmeb2}", "dataset 'a': dataset_parser 'mmeb2' is not one of mmeb"),
    ("a: {dataset_parser: visrag, weight: 0}", "dataset 'a': weight must be a number > 0, got 0"),
    ("- a", "expected a mapping of dataset name"),
])
def test_bad_dataset_config_names_file_and_entry(tmp_path, text, message):
    path = tmp_path / "train.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        read_dataset_config(path)
    assert str(path) in str(info.value)


def test_video_rows_without_frames_name_the_row_and_folder(tmp_path):
    items = media.video_items()[:2]
    media.write_videos(tmp_path / "frames", items[:1], num_frames=2, size=28)
    media.write_llava_hound(tmp_path / "cap.jsonl", items, "caption")
    entry = V2Dataset("caps", "llavahound_caption", 1.0, {"dataset_path": "cap.jsonl", "video_frame_basedir": "frames",
                                                          "num_frames": 2, "data_mode": "video_retrieval"}, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)1 of 2 rows have no video frames.*'caps'.*row 1.*red-circle-right"):
        load_v2_dataset(entry)
    ds = load_v2_dataset(entry, on_missing="skip")
    assert len(ds) == 1 and ds[0]["anchor"] == {"text": "a red circle moving left", "image": None,
                                                "instruction": v2.VRET_QRY_PROMPT + "<sent>"}
    assert [p.rsplit("/", 1)[1] for p in ds[0]["positive"]["video"]] == ["frame_0000.png", "frame_0001.png"]
    assert ds[0]["positive"]["instruction"] == "Understand the content of the provided video: <image>"


def test_video_folders_stay_inside_the_frame_root(tmp_path):
    media.write_videos(tmp_path / "frames", media.video_items()[:1], num_frames=2, size=28)
    (tmp_path / "cap.jsonl").write_text(json.dumps({"id": "x", "video": "../outside", "conversations": [
        {"from": "human", "value": "<video>"}, {"from": "gpt", "value": "c"}]}) + "\n", encoding="utf-8")
    entry = V2Dataset("caps", "llavahound_caption", 1.0, {"dataset_path": "cap.jsonl", "video_frame_basedir": "frames",
                                                          "num_frames": 2}, tmp_path)
    with pytest.raises(ValueError, match=r"'caps' .*row 0: video path '../outside' resolves outside"):
        load_v2_dataset(entry)


# -- the sampler ----------------------------------------------------------------------------------------------------------


def _sampler(sizes, weights, batch, sub, world=1, seed=0):
    parts = [datasets.Dataset.from_dict({"i": list(range(n))}) for n in sizes]
    concat = ConcatDataset(parts)
    samplers = [BatchSampler(SequentialSampler(p), batch, drop_last=True) for p in parts]
    return SubBatchSampler(concat, samplers, seed=seed, weights=weights, sub_batch_size=sub, world_size=world)


def _dataset_of(index, sizes):
    return next(d for d, end in enumerate(itertools.accumulate(sizes)) if index < end)


def test_each_sub_batch_is_from_one_dataset_drawn_by_weight():
    sizes, weights = [40, 30, 50], (1.0, 1.0, 6.0)
    sampler = _sampler(sizes, weights, batch=8, sub=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == sum(sizes) // 8 and all(len(b) == 8 for b in batches)
    subs = [b[k:k + 4] for b in batches for k in (0, 4)]
    assert all(len({_dataset_of(i, sizes) for i in s}) == 1 for s in subs)
    # several datasets share a batch (two sub-batches), and the weights set how often each is drawn
    assert any(_dataset_of(b[0], sizes) != _dataset_of(b[4], sizes) for b in batches)
    long = _sampler([4000, 3000, 5000], weights, 8, 4, seed=1)
    drawn = [_dataset_of(b[k], [4000, 3000, 5000]) for b in long for k in (0, 4)]
    assert abs(drawn.count(2) / len(drawn) - 0.75) < 0.05
    # a pass over a dataset visits every row before any repeats
    rows = [i for b in batches for i in b if _dataset_of(i, sizes) == 0][:40]
    assert len(set(rows)) == len(rows)


def test_processes_share_each_sub_batch_dataset():
    """With 2 processes, batches alternate between them (accelerate's dealing) and each sub-batch of a step comes
    from the same dataset on both, as V2's stream split by node."""
    sizes = [64, 64, 64]
    batches = list(_sampler(sizes, (1.0, 1.0, 1.0), batch=4, sub=2, world=2))
    for rank0, rank1 in zip(batches[::2], batches[1::2]):
        for k in (0, 2):
            assert _dataset_of(rank0[k], sizes) == _dataset_of(rank1[k], sizes) == _dataset_of(rank0[k + 1], sizes)
        assert not set(rank0) & set(rank1)


class _FixedEncoder:
    """encode() returns the vectors given for each input (by its text)."""

    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, inputs, convert_to_tensor=True, normalize_embeddings=True):
        return torch.nn.functional.normalize(torch.tensor([self.vectors[x["text"]] for x in inputs]), dim=-1)


def test_hit_at_1_counts_queries_whose_own_target_scores_highest():
    from mm_st.training.vlm2vec_v2 import HeldOutHitEvaluator

    ds = datasets.Dataset.from_dict({"anchor": [{"text": q} for q in "abc"], "positive": [{"text": t} for t in "xyz"]})
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 0.1], "x": [1.0, 0.0], "y": [0.0, 1.0], "z": [0.0, 1.0]}
    # a -> x (hit), b -> y ties with its twin z (a tie with an identical target counts), c -> x beats z (miss)
    assert HeldOutHitEvaluator.hit_at_1(_FixedEncoder(vectors), ds) == pytest.approx(2 / 3)


# -- the embedded default --------------------------------------------------------------------------------------------------


def test_generated_layout_reads_back_with_held_out_items_apart(tmp_path):
    train, held = write_embedded(tmp_path, num_frames=2, limit=4, seed=0)
    names = [e.name for e in read_dataset_config(train)]
    assert names == ["ImageNet_1K", "MSCOCO_t2i", "MSCOCO_i2t", "colpali_train_set", "visrag-indomain",
                     "video_caption_300k", "video_caption_300k-video", "video_qa_240k"]
    assert [e.weight for e in read_dataset_config(train)] == [1, 1, 1, 10, 12, 5, 5, 5]  # train_alltasks.yaml's
    entries = {e.name: e for e in read_dataset_config(train)}
    held_entries = {e.name: e for e in read_dataset_config(held)}
    visrag, visrag_held = load_v2_dataset(entries["visrag-indomain"]), load_v2_dataset(held_entries["visrag-indomain"])
    assert not {r["text"] for r in visrag["anchor"]} & {r["text"] for r in visrag_held["anchor"]}
    # item 0 is held out: the first training page is item 1, of source Manuallib
    assert visrag[0]["anchor"]["instruction"].startswith("This query pertains to a product manual, which contains")
    assert visrag[0]["positive"]["instruction"] == (
        "A product manual page with technical specifications and instructions.  <image>")
    assert visrag[0]["positive"]["image"].size == (112, 112)
    caption = load_v2_dataset(entries["video_caption_300k"])
    assert caption[0]["anchor"]["instruction"] == "<image>\nDescribe what happens in the video."
    assert caption[0]["positive"]["text"] == "a red circle moving right"  # red circle left is held out
    qa = load_v2_dataset(entries["video_qa_240k"])
    assert qa[0]["anchor"]["instruction"] == ("Answer a question based on the content of a video. <image>\n"
                                              "What is the red shape doing?")


def test_dry_run_prints_weights_and_sub_batches(tmp_path, capsys):
    assert main(VLM2VecV2Config, ["--dry-run", "--output-dir", str(tmp_path), "--max-rows-per-dataset", "16"]) == 0
    out = capsys.readouterr().out
    assert "mm_st vlm2vec_v2 recipe (embedded default: offline, CPU)" in out
    assert ("sub-batches of 8 rows per process, each from one dataset drawn by weight: ImageNet_1K (image) 2.5%, "
            "MSCOCO_t2i (image) 2.5%, MSCOCO_i2t (image) 2.5%, colpali_train_set (visdoc) 25.0%, visrag-indomain "
            "(visdoc) 30.0%, video_caption_300k (video) 12.5%") in out
    assert "video_qa_240k 16 rows = 128 rows; batches of sub-batches of 8 rows per process, each from one dataset" in out
    assert "dry run: plan checked, nothing trained" in out
    assert not (tmp_path / "model").exists()


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    import contextlib
    import io

    from mm_st.training import run_stage

    out = tmp_path_factory.mktemp("v2run")
    config = VLM2VecV2Config.embedded_default(
        max_steps=3, save_steps=3, logging_steps=1, max_rows_per_dataset=8, global_batch_size=4,
        interleave_batch_size=2, output_dir=str(out / "run"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = run_stage(config)
    return result, out / "run" / "model", printed.getvalue()


def test_embedded_run_trains_saves_and_reloads(embedded_run):
    from sentence_transformers import SentenceTransformer

    result, model_dir, _ = embedded_run
    assert result.steps == 3 and result.model_dir == model_dir
    # the run's sampler (seed 42, 8 datasets of 8 rows, the YAML's weights): steps 1 and 3 hold video sub-batches
    sizes = [8] * 8
    drawn = [[_dataset_of(b[k], sizes) for k in (0, 2)] for b in list(_sampler(sizes, (1, 1, 1, 10, 12, 5, 5, 5), 4, 2,
                                                                               seed=42))[:3]]
    assert drawn == [[6, 7], [4, 4], [2, 7]]  # 5-7: video_caption_300k(-video), video_qa_240k
    scores = json.loads((model_dir / "eval_results.json").read_text(encoding="utf-8"))
    assert set(scores["after"]) == {"hit1_image", "hit1_video", "hit1_visdoc", "hit1_mean"}
    assert all(0.0 <= v <= 1.0 for v in scores["before"].values())
    loaded = SentenceTransformer(str(model_dir))
    saved = json.loads((model_dir / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    assert saved["mm_st_video"] == {"num_frames": 4}  # the embedded default's frame count travels with the model
    frames = media.draw_video(media.video_items()[0], num_frames=4)
    inputs = ["a red heart", {"text": "How many lamps?", "image": media.draw_page(media.page_items()[0])},
              {"video": frames}]
    assert torch.allclose(loaded.encode(inputs, convert_to_tensor=True), result.model.encode(inputs, convert_to_tensor=True),
                          atol=1e-5)
    assert json.loads((model_dir / "recipe_config.json").read_text())["recipe"] == "vlm2vec_v2"


def test_embedded_run_prints_the_held_out_table(embedded_run):
    result, _, printed = embedded_run
    lines = printed[printed.index("Held-out Hit@1"):].splitlines()
    assert lines[1].split() == ["group", "datasets", "before", "after", "chance"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert list(rows) == ["image", "video", "visdoc", "mean"] and [r[0] for r in rows.values()] == ["3", "3", "2", "8"]
    assert float(rows["mean"][2]) == pytest.approx(result.after["hit1_mean"], abs=1e-4)
    assert float(rows["mean"][3]) == pytest.approx(1 / 8)  # 8 held-out items per dataset (--max-rows-per-dataset 8)


def test_paper_adapter_and_gradcache_train_on_image_video_and_pages(tmp_path):
    """The paper's DoRA (tower frozen) and GradCache chunks (here 2 of a batch of 4) through every group's rows."""
    from mm_st.training import run_stage

    paper = VLM2VecV2Config()
    config = VLM2VecV2Config.embedded_default(
        max_steps=3, save_steps=3, max_rows_per_dataset=8, global_batch_size=4, interleave_batch_size=2,
        mini_batch_size=2, adapter=paper.adapter, vision_tower=paper.vision_tower, evaluate=False,
        output_dir=str(tmp_path / "run"))
    result = run_stage(config)
    assert result.steps == 3 and (result.model_dir / "adapter_model.safetensors").is_file()
    plan = (tmp_path / "run" / "plan.txt").read_text(encoding="utf-8")
    assert "CachedMultimodalInfoNCELoss" in plan and "GradCache mini-batches of 2" in plan
    assert "adapter dora r=16 alpha=64, vision tower frozen" in plan
