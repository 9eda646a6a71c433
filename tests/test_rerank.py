"""mm_st.rerank: zero-shot True/False reranking (MM-Embed) as a sentence-transformers CrossEncoder.

Scores are checked against a hand-written forward (the family's processor + the model + a softmax
over the two answer tokens' logits at the last position), for every backbone family of build_model
and a real text LM (SmolLM2-135M). Tiny random tokenizers have no single "True"/"False" token, so the
tiny-model tests answer with "t"/"f" (single tokens there); SmolLM2 uses the default "True"/"False".
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

import mm_st.evaluation as E
from mm_st import build_model
from mm_st.evaluation.rerank import MMSTReranker, evaluate_retrieve_then_rerank
from mm_st.rerank import (
    DEFAULT_LAYOUT,
    RERANK_PROMPTS,
    build_reranker,
    load_reranker,
    render_rerank_prompt,
    rerank,
    retrieve,
    retrieve_and_rerank,
)
from mm_st.testing import tiny_model
from tests.mmst_eval_data import OracleEncoder, write_mmeb, write_xtd

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = ("t", "f")  # single tokens in the tiny tokenizers ("True" is T+ru+e there)
CAPTION_Q = "Does the above image match the caption? True or False"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# Hand-written per family: (user-turn head, open assistant-turn tail, image placeholder).
LLAMA3 = ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
CHATML = ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")
FAMILIES = {
    "llava": ("USER: ", " ASSISTANT:", "<image>"),
    "llava_next": (*LLAMA3, "<image>"),
    "mllama": (*LLAMA3, "<|image|>"),
    "qwen2_vl": (*CHATML, QWEN_IMAGE),
    "qwen2_5_vl": (*CHATML, QWEN_IMAGE),
    "qwen3_vl": (*CHATML, QWEN_IMAGE),
    "idefics3": ("<|im_start|>User:", "<end_of_utterance>\nAssistant:", "<image>"),
    "fast_vlm": (*CHATML, "<image>"),
}


# ------------------------------------------------------------------------------------------------
# Prompts are data, pinned literally
# ------------------------------------------------------------------------------------------------


def test_prompt_strings_are_pinned():
    # MM-Embed (arXiv 2411.02571), its zero-shot reranking section (paper-facts.md); no public reranking code seen.
    assert RERANK_PROMPTS["mmembed_daily_life"].question == "Does the above daily-life image match the caption? True or False"
    assert "2411.02571" in RERANK_PROMPTS["mmembed_daily_life"].source
    # mm_st's own layout (candidate, then query, then question) and prompts, marked as such.
    assert DEFAULT_LAYOUT == "<document>\n<query>\n<question>"
    assert RERANK_PROMPTS["composed_image"].layout == "<query>\n<document>\n<question>"
    assert all("mm_st" in p.source for name, p in RERANK_PROMPTS.items() if name != "mmembed_daily_life")


def test_rendered_prompt_is_exact():
    reranker = build_reranker(tiny_model("llava_next"), answers=ANSWERS)
    template = reranker[0].processor.chat_template
    assert render_rerank_prompt(template, "a red car", (1, None)) == (
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\na red car\n"
        "Does the above daily-life image match the caption? True or False"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    # image + text on one side; a question given as prompt= replaces the default one
    assert render_rerank_prompt(template, "q", (1, "d"), prompt="Same? True or False") == (
        "<|start_header_id|>user<|end_header_id|>\n\n<image>\nd\nq\nSame? True or False"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    # a full prompt places the pair itself; marker-like text inside the inputs is left alone
    assert render_rerank_prompt(template, "<document>", "D", prompt="Q: <query> D: <document> ok?").endswith(
        "Q: <document> D: D ok?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


# ------------------------------------------------------------------------------------------------
# Exactness against a hand-written forward, every family
# ------------------------------------------------------------------------------------------------


def _reference(model, processor, prompt, images, ids):
    inputs = processor(text=[prompt], images=[images] if images else None, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits[0, -1]
    return torch.softmax(logits[ids].double(), 0)[0].item()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_score_is_p_true_of_a_hand_written_forward(family, emoji_images):
    head, tail, image = FAMILIES[family]
    path = tiny_model(family)
    reranker = build_reranker(path, "image_caption", answers=ANSWERS)
    processor = AutoProcessor.from_pretrained(path)
    space = "" if tail.endswith("\n") else " "  # the answer as it follows the prompt
    ids = [processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.tokenize(space + a))[0] for a in ANSWERS]
    assert [reranker[1].true_token_id, reranker[1].false_token_id] == ids
    pairs = [("a red cat", emoji_images[0]), ("a blue sofa on a roof", "a chair"), ("x", {"text": "y", "image": emoji_images[1]})]
    prompts = [
        (f"{head}{image}\na red cat\n{CAPTION_Q}{tail}", [emoji_images[0]]),
        (f"{head}a chair\na blue sofa on a roof\n{CAPTION_Q}{tail}", None),
        (f"{head}{image}\ny\nx\n{CAPTION_Q}{tail}", [emoji_images[1]]),
    ]
    want = [_reference(reranker[0].model, processor, p, im, ids) for p, im in prompts]
    got = reranker.predict(pairs, batch_size=3)  # text and image pairs, different lengths: padding and grouping
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert abs(float(reranker.predict(pairs[1])) - want[1]) <= 1e-5  # one pair alone


def test_margin_score_is_the_logit_difference(emoji_images):
    path = tiny_model("qwen2_vl")
    pairs = [("a cat", emoji_images[0]), ("a dog", "a puppy")]
    probability = build_reranker(path, answers=ANSWERS).predict(pairs)
    margin = build_reranker(path, answers=ANSWERS, score="margin").predict(pairs)
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), probability, atol=1e-6)
    assert np.all(np.abs(margin) > 0) and not np.allclose(margin, probability)


def test_text_lm_reranker_uses_single_true_false_tokens(smollm2, emoji_images):
    from transformers import AutoTokenizer

    reranker = build_reranker(smollm2, "text_query")
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    # ChatML's assistant turn ends in "\n": the answer is "True" without a leading space (not "ĠTrue").
    assert reranker[1].true_token_id == tokenizer.convert_tokens_to_ids("True") != tokenizer.convert_tokens_to_ids("ĠTrue")
    assert reranker[1].false_token_id == tokenizer.convert_tokens_to_ids("False")
    assert reranker[0].transformer_task == "text-generation"
    q = "Does the above passage answer the query? True or False"
    prompt = f"<|im_start|>user\nParis is the capital of France.\nWhat is the capital of France?\n{q}<|im_end|>\n<|im_start|>assistant\n"
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        logits = reranker[0].model(**inputs).logits[0, -1]
    ids = [reranker[1].true_token_id, reranker[1].false_token_id]
    want = torch.softmax(logits[ids].double(), 0)[0].item()
    got = reranker.predict([("What is the capital of France?", "Paris is the capital of France."),
                            ("What is the capital of France?", "Bananas are yellow and rich in potassium.")])
    assert abs(got[0] - want) <= 1e-5
    assert got[0] > got[1]  # a real LM prefers the answering passage
    with pytest.raises(ValueError, match=r"Input 1 \(document\) is an image, but this model is text-only"):
        reranker.predict([("q", "d"), ("q", emoji_images[0])])
    with pytest.raises(ValueError, match=r"Input 0 \(query\) has an image, but this model is text-only"):
        reranker.predict([({"text": "q", "image": emoji_images[0]}, "d")])


# ------------------------------------------------------------------------------------------------
# Saved rerankers load with plain sentence-transformers, without mm_st
# ------------------------------------------------------------------------------------------------

_PLAIN = """
import json, sys
import torch
torch.set_num_threads(1)
sys.modules["mm_st"] = None  # mm_st cannot be imported in this process
try:
    import mm_st
    raise SystemExit("mm_st was importable")
except ImportError:
    pass
from PIL import Image
from sentence_transformers import CrossEncoder
cases = json.loads(sys.argv[1])
image = Image.open(cases.pop("image")).convert("RGB")
out = {}
for family, path in cases.items():
    model = CrossEncoder(path)  # trust_remote_code defaults to False
    pairs = [["a red cat", image], ["a blue sofa", "a chair"]]
    out[family] = {"scores": [float(model.predict(pair)) for pair in pairs],  # one pair per call: plain ST cannot
                   "named": model.predict(pairs[1:], prompt_name="text_query").tolist(),  # batch Mllama's mixed pairs
                   "class": type(model).__name__, "task": model[0].transformer_task}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_saved_rerankers_load_with_plain_crossencoder_without_mm_st(tmp_path, emoji_images, plain_python):
    cases, expected = {"image": str(tmp_path / "cat.png")}, {}
    emoji_images[0].save(tmp_path / "cat.png")
    pairs = [["a red cat", emoji_images[0]], ["a blue sofa", "a chair"]]
    for family in FAMILIES:
        reranker = build_reranker(tiny_model(family), answers=ANSWERS)
        reranker.save(str(tmp_path / family))
        cases[family] = str(tmp_path / family)
        expected[family] = {"scores": reranker.predict(pairs), "named": reranker.predict(pairs[1:], prompt_name="text_query")}
        assert not np.allclose(expected[family]["named"], expected[family]["scores"][1:])  # the named prompt is used
        modules = json.loads((tmp_path / family / "modules.json").read_text())
        assert [m["type"] for m in modules] == ["sentence_transformers.base.modules.transformer.Transformer",
                                                "sentence_transformers.cross_encoder.modules.logit_score.LogitScore"]
    run = plain_python.run(_PLAIN, json.dumps(cases), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    for family in FAMILIES:
        assert result[family]["class"] == "CrossEncoder" and result[family]["task"] == "any-to-any"
        for key in ("scores", "named"):
            np.testing.assert_allclose(result[family][key], expected[family][key], atol=1e-6, err_msg=f"{family} {key}")
    family = "qwen2_vl"
    np.testing.assert_allclose(load_reranker(cases[family]).predict(pairs), expected[family]["scores"], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Errors name the item
# ------------------------------------------------------------------------------------------------


def test_bad_input_errors_name_the_item(emoji_images):
    path = tiny_model("qwen2_vl")
    with pytest.raises(ValueError, match=r"The answer 'True' is not one token .*\['T', 'ru', 'e'\]"):
        build_reranker(path)
    for empty in ("", "  ", "<document>\n<query>\n"):
        with pytest.raises(ValueError, match="rerank prompt .*is empty"):
            build_reranker(path, empty, answers=ANSWERS)
    with pytest.raises(ValueError, match="2 <query> markers"):
        build_reranker(path, "<query> <query> <document> ok?", answers=ANSWERS)
    with pytest.raises(ValueError, match="Unknown score"):
        build_reranker(path, answers=ANSWERS, score="logits")
    reranker = build_reranker(path, answers=ANSWERS)
    with pytest.raises(ValueError, match="rerank prompt is empty"):
        reranker.predict([("q", "d")], prompt=" ")
    with pytest.raises(TypeError, match="Pair 1 must be a \\(query, document\\) pair"):
        reranker.predict([("q", "d"), ("q", "d", "e")])
    with pytest.raises(ValueError, match="Input 0 \\(query\\) is None"):
        reranker.predict([(None, "d")])
    both = [("q", "d"), ({"text": "make it red", "image": emoji_images[0]}, emoji_images[1])]
    with pytest.raises(ValueError, match="Pair 1: The pair has images in both the query and the document"):
        reranker.predict(both)
    assert reranker.predict(both, prompt_name="composed_image").shape == (2,)  # query-first layout
    # plain sentence-transformers (no mm_st checks) gets the same refusal from the saved template
    from sentence_transformers import CrossEncoder

    with pytest.raises(Exception, match="places <document> before <query>"):
        CrossEncoder.predict(reranker, both[1:])


def test_k_larger_than_the_pool_is_an_error():
    embedder = build_model(tiny_model("qwen2_vl"), recipe="e5v")
    reranker = build_reranker(tiny_model("qwen2_vl"), answers=ANSWERS)
    with pytest.raises(ValueError, match=r"k=4 is larger than the candidate pool \(3 documents"):
        retrieve_and_rerank(embedder, reranker, ["q"], ["a", "b", "c"], k=4)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retrieve_and_rerank(embedder, reranker, ["q"], ["a", "b", "c"], k=0)


# ------------------------------------------------------------------------------------------------
# Retrieve, then rerank: one call, and inside mteb
# ------------------------------------------------------------------------------------------------


def test_retrieve_and_rerank_equals_its_two_stages_by_hand(emoji_images):
    embedder = build_model(tiny_model("qwen2_vl"), recipe="e5v")
    reranker = build_reranker(tiny_model("qwen2_vl"), answers=ANSWERS)
    queries = ["a red cat", "a smiling face", "a green tree"]
    corpus = [*emoji_images, "a cat", "a face"]
    k = 3
    results = retrieve_and_rerank(embedder, reranker, queries, corpus, k=k, rerank_batch_size=4)
    similarity = embedder.similarity(embedder.encode_query(queries), embedder.encode_document(corpus))
    for q, hits in enumerate(results):
        top = torch.topk(similarity[q], k).indices.tolist()
        assert sorted(h["corpus_id"] for h in hits) == sorted(top)
        assert {h["corpus_id"]: h["retrieval_rank"] for h in hits} == {c: r + 1 for r, c in enumerate(top)}
        want = reranker.predict([(queries[q], corpus[c]) for c in top])
        got = {h["corpus_id"]: h["score"] for h in hits}
        np.testing.assert_allclose([got[c] for c in top], want, atol=1e-5)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # the stages alone give the same
    assert rerank(reranker, queries, corpus, retrieve(embedder, queries, corpus, k)) == results


def test_mteb_tasks_run_with_a_reranker_over_the_first_stage_top_k(tmp_path):
    write_xtd(tmp_path / "xtd", n=12, langs=("en", "es"))
    write_mmeb(tmp_path / "mmeb", names=["MSCOCO_t2i"], n_queries=3, n_candidates=4, pool=6)
    reranker = build_reranker(tiny_model("qwen2_vl"), "mmembed_daily_life", answers=ANSWERS)
    wrapped = MMSTReranker(reranker)
    xtd = E.XTDT2IRetrieval(data=tmp_path / "xtd")
    xtd.hf_subsets = ["en", "es"]
    k = 3
    out = evaluate_retrieve_then_rerank(OracleEncoder(12), wrapped, [xtd, *E.mmeb_tasks(["MSCOCO_t2i"], data=tmp_path / "mmeb")],
                                        k=k, prediction_folder=tmp_path / "stage1")
    assert (tmp_path / "stage1" / "XTDT2IRetrieval_predictions.json").is_file()
    assert wrapped.scored == (12 * 2 + 3) * k  # only each query's top k reached the reranker
    for name, stages in out.items():
        first, second = stages["retrieval"].scores["test"], stages["rerank"].scores["test"]
        assert {s["recall_at_1"] for s in first} == {1.0}  # oracle first stage
        assert {s[f"recall_at_{k}"] for s in second} == {1.0}  # the positive is among the reranked k
    # rerank Recall@1 on XTD "en" equals reranking the oracle's top k by hand
    task = E.XTDT2IRetrieval(data=tmp_path / "xtd")
    task.hf_subsets = ["en", "es"]
    task.load_data()
    data = task.dataset["en"]["test"]
    predictions = json.loads((tmp_path / "stage1" / "XTDT2IRetrieval_predictions.json").read_text())["en"]["test"]
    images = {row["id"]: row["image"].convert("RGB") for row in data["corpus"]}
    hits = 0
    for row in data["queries"]:
        ranked = sorted(predictions[row["id"]], key=predictions[row["id"]].get, reverse=True)[:k]
        scores = reranker.predict([(row["text"], images[c]) for c in ranked])
        hits += ranked[int(np.argmax(scores))] in data["relevant_docs"][row["id"]]
    en = next(s for s in out["XTDT2IRetrieval"]["rerank"].scores["test"] if s["hf_subset"] == "en")
    assert en["recall_at_1"] == pytest.approx(hits / len(data["queries"]), abs=1e-5)
    with pytest.raises(ValueError, match=r"k=5 is larger than the candidate pool of query 'q0' \(4 candidates"):
        evaluate_retrieve_then_rerank(OracleEncoder(12), reranker, E.mmeb_tasks(["MSCOCO_t2i"], data=tmp_path / "mmeb"),
                                      k=5, prediction_folder=tmp_path / "stage1b")


def test_smollm2_embedder_and_reranker_in_one_call(smollm2):
    embedder = build_model(smollm2, recipe="e5v")
    reranker = build_reranker(smollm2, "text_query")
    query = "What is the capital of France?"
    corpus = ["Paris is the capital of France.", "Bananas are yellow.", "The Nile is a river in Africa.", "Cats purr."]
    results = retrieve_and_rerank(embedder, reranker, [query], corpus, k=len(corpus))
    want = reranker.predict([(query, document) for document in corpus])
    assert [h["corpus_id"] for h in results[0]] == np.argsort(-want, kind="stable").tolist()
    np.testing.assert_allclose([h["score"] for h in results[0]], np.sort(want)[::-1], atol=1e-5)
