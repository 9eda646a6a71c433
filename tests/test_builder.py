"""Exactness and portability of build_model, for every tiny backbone family.

The E5-V reference below is hand-written from the paper's literal strings (not from mm_st.templates):
processor on the literal prompt, model forward, last-layer hidden state of the last token, L2 norm.
"""

import json
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoProcessor

from mm_st import build_model
from mm_st.testing import TINY_FAMILIES, tiny_model

LLAMA3 = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
# family -> (chat wrapper, image placeholder), written out by hand
LITERAL = {
    "llava": ("USER: {} ASSISTANT:", "<image>"),
    "llava_next": (LLAMA3, "<image>"),
    "mllama": (LLAMA3, "<|image|>"),
    "qwen2_vl": (CHATML, QWEN_IMAGE),
    "qwen2_5_vl": (CHATML, QWEN_IMAGE),
    "qwen3_vl": (CHATML, QWEN_IMAGE),
    "idefics3": ("<|im_start|>User:{}<end_of_utterance>\nAssistant:", "<image>"),
    "fast_vlm": (CHATML, "<image>"),
}
TEXT_PROMPT = "<sent>\nSummary above sentence in one word: "
IMAGE_PROMPT = "<image>\nSummary above image in one word: "
COMPOSED_PROMPT = '<image>Modify this image with "<sent>", desribe modified image in one word:'
TEXT = "A smiling yellow face with open eyes."


def literal_e5v(family, text=None, image=False):
    wrapper, placeholder = LITERAL[family]
    prompt = COMPOSED_PROMPT if (text and image) else IMAGE_PROMPT if image else TEXT_PROMPT
    return wrapper.format(prompt.replace("<image>", placeholder).replace("<sent>", text or ""))


def reference_embedding(path, family, text=None, image=None):
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    literal = literal_e5v(family, text, image is not None)
    kwargs = {"images": [[image]]} if image is not None else {}
    inputs = processor(text=[literal], return_tensors="pt", **kwargs)
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state[:, -1]
    return torch.nn.functional.normalize(hidden, dim=-1)[0].numpy()


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family_model(request):
    family = request.param
    path = tiny_model(family)
    return family, path, build_model(path, recipe="e5v")


def test_parity_with_literal_e5v_prompt(family_model, emoji_images):
    family, path, model = family_model
    image = emoji_images[0]
    cases = [
        (TEXT, None, TEXT),
        (None, image, image),
        (TEXT, image, {"text": TEXT, "image": image}),
    ]
    for text, img, model_input in cases:
        expected = reference_embedding(path, family, text, img)
        got = model.encode([model_input])[0]
        assert np.abs(got - expected).max() <= 1e-5, (family, text is not None, img is not None)


def test_rendered_prompt_is_the_literal_string(family_model, emoji_images):
    family, path, model = family_model
    processor = AutoProcessor.from_pretrained(path)
    for text, image, model_input in [(TEXT, None, TEXT), (TEXT, emoji_images[0], {"text": TEXT, "image": emoji_images[0]})]:
        features = model.preprocess([model_input])
        kwargs = {"images": [[image]]} if image is not None else {}
        expected = processor(text=[literal_e5v(family, text, image is not None)], return_tensors="pt", **kwargs)
        assert features["input_ids"].tolist() == expected["input_ids"].tolist()


def _assert_batch_invariant(model, batch, family):
    together = model.encode(batch, batch_size=len(batch))
    alone = np.stack([model.encode([item])[0] for item in batch])
    assert together.shape == (len(batch), 64)
    assert np.abs(together - alone).max() <= 1e-5, family


def test_batch_equals_one_by_one(family_model, emoji_images):
    family, _, model = family_model
    _assert_batch_invariant(model, ["short", TEXT * 3, {"text": "two", "image": None}, TEXT], family)
    _assert_batch_invariant(
        model,
        [emoji_images[1], {"text": TEXT + " " + TEXT, "image": emoji_images[2]}, {"image": emoji_images[3], "text": None}],
        family,
    )


def test_mixed_modality_batch_equals_one_by_one(family_model, emoji_images):
    family, _, model = family_model
    batch = ["short", emoji_images[1], {"text": TEXT + " " + TEXT, "image": emoji_images[2]}, TEXT * 3]
    _assert_batch_invariant(model, batch, family)  # Mllama included: each modality is its own sub-batch


def test_mixed_column_equals_each_modality_group_alone(family_model, emoji_images):
    """Training-mode forward on a mixed column: each row's embedding equals its modality group run alone,
    in the caller's order, and gradients reach the backbone through every group."""
    family, _, model = family_model
    column = [emoji_images[0], "a red heart", {"text": "cat", "image": emoji_images[1]}, TEXT, emoji_images[2]]
    groups = {"text": [1, 3], "image": [0, 4], "image+text": [2]}
    features = model.preprocess(column)
    assert [rows.tolist() for rows in features["mm_st_group_rows"]] == list(groups.values())
    model.train()
    try:
        model.zero_grad()
        got = model(features)["sentence_embedding"]
        got.sum().backward()
        expected = torch.zeros_like(got)
        for rows in groups.values():
            expected[rows] = model(model.preprocess([column[i] for i in rows]))["sentence_embedding"].detach()
        assert (got.detach() - expected).abs().max() <= 1e-5, family
        lm = [p.grad for n, p in model.named_parameters() if _is_text_part(n) and p.grad is not None]
        vision = [p.grad for n, p in model.named_parameters() if _is_vision_part(n) and p.grad is not None]
        assert lm and vision and all(torch.isfinite(g).all() for g in lm + vision), family
    finally:
        model.zero_grad()
        model.eval()
    assert np.abs(model.encode(column, batch_size=len(column)) - expected.numpy()).max() <= 1e-5, family


@pytest.mark.slow
def test_mixed_mllama_column_trains(tmp_path, emoji_images):
    """sentence-transformers' trainer on Mllama with text, image and image+text rows in one column."""
    from datasets import Dataset, Features, Image, Value
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from mm_st.losses import MultimodalInfoNCELoss

    model = build_model(tiny_model("mllama"), recipe="e5v")
    struct = {"text": Value("string"), "image": Image()}
    images = emoji_images + [img.rotate(90) for img in emoji_images]
    anchors = [{"text": f"query {i}", "image": None} for i in range(8)]
    positives = [{"text": None, "image": images[i]} if i % 3 == 0 else
                 {"text": f"doc {i}", "image": images[i] if i % 3 == 1 else None} for i in range(8)]
    train = Dataset.from_dict({"anchor": anchors, "positive": positives}, features=Features(anchor=struct, positive=struct))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, learning_rate=1e-3,
        logging_steps=1, save_strategy="no", report_to="none", seed=0, use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=MultimodalInfoNCELoss(model))
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(np.isfinite(losses))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(map(_is_vision_part, changed)) and any(map(_is_text_part, changed))


def _is_vision_part(name):
    return "vision" in name or "visual" in name


def _is_text_part(name):
    return "language_model" in name or "text_model" in name


def test_truncation_keeps_image_tokens_and_prompt_suffix(emoji_images):
    for family in TINY_FAMILIES:
        path = tiny_model(family)
        full = build_model(path, recipe="e5v")
        image_only = full.preprocess([emoji_images[0]])
        long_text = " ".join(["word"] * 400)
        untruncated = full.preprocess([{"text": long_text, "image": emoji_images[0]}])
        limit = image_only["input_ids"].shape[1] + 30
        short = build_model(path, recipe="e5v", max_length=limit)
        for batch in ([{"text": long_text, "image": emoji_images[0]}], [{"text": long_text, "image": emoji_images[0]}, {"text": "hi", "image": emoji_images[1]}]):
            features = short.preprocess(batch)
            ids, mask = features["input_ids"][0], features["attention_mask"][0]
            real = ids[mask.bool()]
            assert len(real) <= limit, family
            image_token = short[0].model.config.image_token_id if hasattr(short[0].model.config, "image_token_id") else None
            if image_token is None:
                image_token = short[0].model.config.image_token_index
            assert (real == image_token).sum() == (untruncated["input_ids"][0] == image_token).sum(), family
            suffix = untruncated["input_ids"][0][-8:]
            assert real[-8:].tolist() == suffix.tolist(), family
            assert np.isfinite(short.encode(batch)).all()
        # text-only inputs: sentence-transformers truncates and restores the prompt suffix
        text_features = short.preprocess([long_text])
        text_full = full.preprocess([long_text])
        assert text_features["input_ids"].shape[1] <= limit
        assert text_features["input_ids"][0][-8:].tolist() == text_full["input_ids"][0][-8:].tolist()


EXPORT_CHECK = textwrap.dedent(
    """
    import json, sys
    sys.modules["mm_st"] = None  # mm_st must not be importable here
    import numpy as np, torch
    torch.set_num_threads(1)
    from PIL import Image
    from sentence_transformers import SentenceTransformer
    cases = json.loads(sys.argv[1])
    out = {}
    for family, case in cases.items():
        model = SentenceTransformer(case["dir"])  # trust_remote_code defaults to False
        image = Image.open(case["image"]).convert("RGB")
        inputs = [case["text"], image, {"text": case["text"], "image": image}]
        out[family] = {
            "plain": model.encode(inputs, batch_size=1).tolist(),
            "query": model.encode_query(inputs[:1], prompt="Find the emoji: ").tolist(),
        }
        if family != "mllama":  # plain ST cannot batch Mllama inputs with and without images
            out[family]["mixed"] = model.encode(inputs, batch_size=len(inputs)).tolist()  # one padded batch
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
def test_saved_model_loads_without_mm_st(tmp_path, emoji_images, plain_python):
    image_path = tmp_path / "emoji.png"
    emoji_images[0].save(image_path)
    cases, expected = {}, {}
    for family in TINY_FAMILIES:
        model = build_model(tiny_model(family), recipe="mmembed" if family == "qwen2_vl" else "e5v")
        model.save(str(tmp_path / family))
        image = emoji_images[0]
        inputs = [TEXT, image, {"text": TEXT, "image": image}]
        expected[family] = {
            "plain": model.encode(inputs, batch_size=1),
            "query": model.encode_query(inputs[:1], prompt="Find the emoji: "),
            "mixed": model.encode(inputs, batch_size=len(inputs)),  # grouped by modality
        }
        cases[family] = {"dir": str(tmp_path / family), "image": str(image_path), "text": TEXT}
        modules = json.loads((tmp_path / family / "modules.json").read_text())
        assert all(m["type"].startswith("sentence_transformers.") for m in modules)
        assert (tmp_path / family / "model.safetensors").exists()
    run = plain_python.run(EXPORT_CHECK, json.dumps(cases))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    for family in TINY_FAMILIES:
        for key in ("plain", "query"):
            assert np.abs(np.array(result[family][key]) - expected[family][key]).max() <= 1e-6, (family, key)
        if family != "mllama":
            assert np.abs(np.array(result[family]["mixed"]) - expected[family]["mixed"]).max() <= 1e-5, family


PLAIN_PROMPT = "Find me an everyday image that matches the given caption: "


@pytest.mark.parametrize("recipe", ["e5v", "mme5", "vlm2vec", "mmembed"])
def test_plain_prompt_never_replaces_the_input(recipe, emoji_images):
    """Issue 11 item 0: README's encode_query(..., prompt=plain text) keeps every input, for every family."""
    for family in TINY_FAMILIES:
        model = build_model(tiny_model(family), recipe=recipe)
        a, b = emoji_images[0], emoji_images[1]
        for first, second in (("a red car", "a blue boat"), (a, b), ({"text": "red", "image": a}, {"text": "blue", "image": a})):
            one = model.encode_query([first], prompt=PLAIN_PROMPT)
            two = model.encode_query([second], prompt=PLAIN_PROMPT)
            assert np.isfinite(one).all() and np.abs(one - two).max() > 1e-4, (recipe, family, type(first))


def test_pooling_and_attention_names_have_one_home():
    from mm_st import builder
    from mm_st.training import mmembed

    assert mmembed.POOLINGS is builder.POOLINGS and mmembed.ATTENTIONS is builder.ATTENTIONS
