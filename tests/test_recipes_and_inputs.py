"""Recipes (query/document handling), inputs mm_st accepts, adapters and bad-input errors."""

import json

import numpy as np
import peft
import pytest
import torch
from sentence_transformers import SentenceTransformer
import transformers
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from mm_st import build_model, load_model, templates
from mm_st.testing import tiny_model


@pytest.fixture(scope="module")
def qwen_path():
    return tiny_model("qwen2_vl")


@pytest.fixture(scope="module")
def text_lm_path(tmp_path_factory):
    """A tiny text-only causal LM (Llama) with the tiny llava_next tokenizer (Llama-3 header tokens)."""
    path = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("llava_next"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"  # a plain tokenizer, not part of a LLaVA processor
    settings = json.loads(config_file.read_text())
    settings.pop("processor_class", None)
    config_file.write_text(json.dumps(settings))
    return str(path)


def decoded(model, inputs, **kwargs):
    features = model.preprocess(inputs, **kwargs)
    tokenizer = model[0].tokenizer
    return [tokenizer.decode(ids[mask.bool()]) for ids, mask in zip(features["input_ids"], features["attention_mask"])]


def test_mmembed_instruction_on_queries_only(qwen_path):
    model = build_model(qwen_path, recipe="mmembed")
    query = decoded(model, ["a red car"], prompt="Find a matching image.", task="query")[0]
    document = decoded(model, ["a red car"], prompt="Find a matching image.", task="document")[0]
    assert query == "Instruct: Find a matching image.\nQuery: a red car"
    assert document == "a red car"


def test_encode_query_and_document_follow_the_recipe(qwen_path):
    model = build_model(qwen_path, recipe="mmembed")
    with_instruction = model.encode_query(["a red car"], prompt="Find a matching image.")
    as_document = model.encode_document(["a red car"])
    plain = model.encode(["a red car"])
    assert np.allclose(as_document, plain, atol=1e-6)
    assert not np.allclose(with_instruction, as_document, atol=1e-3)


def test_mme5_mllama_format(emoji_images):
    """mmE5 (haon-chen/mmE5 demo.py): the processor on '{image tokens}{instruction} {query}\n' literals.

    The Mllama processor puts BOS first (twice for text without image, as upstream, where the same
    processor gets the same string); mm_st's ids must equal the processor's on demo.py's literals.
    """
    path = tiny_model("mllama")
    processor = AutoProcessor.from_pretrained(path)
    model = build_model(path, recipe="mme5")
    image = emoji_images[0]
    vqa = "Represent the given image with the following question: "
    caption = "Find me an everyday image that matches the given caption: "
    cases = [  # (input, prompt, task, demo.py literal, image)
        ({"text": "What is in the image", "image": image}, vqa, "query",
         "<|image|><|begin_of_text|>Represent the given image with the following question: What is in the image\n", image),
        (image, None, "document", "<|image|><|begin_of_text|>Represent the given image.\n", image),
        ("A cat and a dog.", caption, "query", "Find me an everyday image that matches the given caption: A cat and a dog.\n", None),
        ("A cat and a dog", None, "document", "A cat and a dog", None),
    ]
    for item, prompt, task, literal, img in cases:
        got = model.preprocess([item], prompt=prompt, task=task)["input_ids"][0].tolist()
        expected = processor(text=[literal], images=[[img]] if img else None, return_tensors="pt")["input_ids"][0].tolist()
        assert got == expected, literal
        assert got[0] == processor.tokenizer.bos_token_id
    # training text (src/collator.py, rows as written): no trailing newline
    train = build_model(path, recipe="mme5", prompt_format="train")
    assert decoded(train, [{"text": "What is in the image?", "image": image}], prompt=vqa)[0] == (
        "<|begin_of_text|><|image|><|begin_of_text|>" + vqa + "What is in the image?")


def test_vlm2vec_format(qwen_path, emoji_images):
    """VLM2Vec on Qwen2-VL: the bare <|image_pad|> (src/model/processor.py VLM_IMAGE_TOKENS), eval '\n' at the end."""
    model = build_model(qwen_path, recipe="vlm2vec")
    query = decoded(model, [{"text": "What color?", "image": emoji_images[0]}], prompt="Represent the given image with the following question: ")[0]
    assert "<|vision_start|>" not in query and query.startswith("<|image_pad|>")
    assert query.endswith("<|image_pad|>\nRepresent the given image with the following question: What color?\n")
    assert decoded(model, ["A cat."], prompt="Find me an everyday image that matches the given caption: ")[0] == (
        "Find me an everyday image that matches the given caption: A cat.\n"
    )
    embeddings = model.encode([{"text": "What color?", "image": emoji_images[0]}, emoji_images[1]])
    assert embeddings.shape == (2, 64) and np.isfinite(embeddings).all()


def test_text_only_causal_lm(text_lm_path):
    model = build_model(text_lm_path, recipe="e5v")
    assert decoded(model, ["A dog."])[0] == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nA dog.\nSummary above sentence in one word: "
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n \n"
    )
    batch = ["A dog.", "A much longer sentence about a cat sitting on a warm mat."]
    together = model.encode(batch)
    alone = np.stack([model.encode([text])[0] for text in batch])
    assert np.abs(together - alone).max() <= 1e-5
    with pytest.raises(ValueError, match=r"Input 1 has an image, but this model is text-only"):
        model.encode(["fine", {"text": "x", "image": Image.new("RGB", (8, 8))}])
    with pytest.raises(ValueError, match=r"Input 0 is an image"):
        model.encode([Image.new("RGB", (8, 8))])


def test_sentence_transformers_infers_what_build_model_relies_on(text_lm_path, qwen_path):
    # build_model gives the rendered recipe to ST's Transformer (processor_kwargs["chat_template"]) and relies on ST
    # to infer these from it; this fails if sentence-transformers stops doing so.
    text_model = build_model(text_lm_path, recipe="e5v")
    assert "message" in text_model[0].modality_config
    mllm = build_model(qwen_path, recipe="e5v")
    assert mllm[0].input_formatter.message_format == "structured"
    assert mllm[0].processor.chat_template == mllm[0].processor.tokenizer.chat_template
    assert mllm[0].processor.tokenizer.padding_side == "left"


def test_image_paths_and_none_fields(qwen_path, emoji_images, tmp_path):
    model = build_model(qwen_path, recipe="e5v")
    path = tmp_path / "e.png"
    emoji_images[0].save(path)
    from_pil = model.encode([{"text": "grin", "image": emoji_images[0]}])
    for image in (str(path), path):
        assert np.abs(model.encode([{"text": "grin", "image": image}]) - from_pil).max() <= 1e-6
    assert np.abs(model.encode([path]) - model.encode([emoji_images[0]])).max() <= 1e-6
    assert np.abs(model.encode([{"text": "grin", "image": None}]) - model.encode(["grin"])).max() <= 1e-6


def test_bad_image_files_name_index_and_path(qwen_path, tmp_path):
    model = build_model(qwen_path, recipe="e5v")
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match=r"Input 1: image file not found: .*missing\.png"):
        model.encode(["ok", {"image": str(missing), "text": "x"}])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"Input 2: cannot read image file .*corrupt\.png"):
        model.encode(["a", "b", {"image": corrupt}])
    with pytest.raises(ValueError, match=r"Input 0: every field is None"):
        model.encode([{"text": None, "image": None}])


def test_encode_checks_each_input_once(qwen_path, emoji_images, tmp_path, monkeypatch):
    """encode normalises up front; preprocess then only opens image paths (no second pass per input)."""
    from mm_st import inputs as mm_inputs

    model = build_model(qwen_path, recipe="e5v")
    path = tmp_path / "e.png"
    emoji_images[0].save(path)
    items = ["grin", {"text": "grin", "image": str(path)}, path, emoji_images[1], {"text": "x", "image": None}]
    opened = mm_inputs.load_images(mm_inputs.normalize_inputs(items, load=False))
    reference = mm_inputs.normalize_inputs(items)
    assert [type(item) for item in opened] == [type(item) for item in reference]
    assert opened[1]["text"] == "grin" and opened[1]["image"].tobytes() == reference[1]["image"].tobytes()
    assert opened[2].tobytes() == reference[2].tobytes() and opened[4] == reference[4] == "x"
    expected = np.concatenate([model.encode(items[i : i + 2], batch_size=2) for i in (0, 2, 4)])
    calls = []
    original = mm_inputs.normalize_input
    monkeypatch.setattr(mm_inputs, "normalize_input", lambda item, index, *a, **k: calls.append(index) or original(item, index, *a, **k))
    assert np.abs(model.encode(items, batch_size=2) - expected).max() <= 1e-5
    assert sorted(calls) == [0, 1, 2, 3, 4]
    calls.clear()
    model.preprocess(items[:2])  # outside encode (the trainer's collator): checked here
    assert calls == [0, 1]
    with pytest.raises(ValueError, match=r"Input 1: every field is None"):
        model.encode(["a", {"text": None, "image": None}])
    with pytest.raises(ValueError, match=r"Input 0: every field is None"):  # the failed encode left no state behind
        model.preprocess([{"text": None, "image": None}])


def test_image_root_is_enforced(tmp_path):
    from mm_st.inputs import load_image

    (tmp_path / "root").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    with pytest.raises(ValueError, match=r"Input 3: image path '../outside.png' resolves outside the image root"):
        load_image("../outside.png", 3, root=tmp_path / "root")


def test_empty_input_gives_empty_array_with_width(qwen_path):
    model = build_model(qwen_path, recipe="e5v")
    assert model.encode([]).shape == (0, 64)
    assert tuple(model.encode([], convert_to_tensor=True).shape) == (0, 64)


def test_unknown_recipe_family_and_wrapper(qwen_path):
    with pytest.raises(ValueError, match=r"Unknown recipe 'clip'.*e5v, mme5, mmembed, vlm2vec"):
        build_model(qwen_path, recipe="clip")
    with pytest.raises(ValueError, match=r"Unknown backbone family 'blip'.*llava_next"):
        build_model(qwen_path, family="blip")
    with pytest.raises(ValueError, match=r"Unknown wrapper 'zephyr'.*llama3"):
        build_model(qwen_path, wrapper="zephyr")
    with pytest.raises(ValueError, match=r"model_type 'bert' is in no family.*qwen2_vl"):
        templates.family_for_model_type("bert")


@pytest.mark.parametrize("adapter", [{"r": 4, "lora_alpha": 8}, {"r": 4, "use_dora": True}])
def test_lora_and_dora_adapters(qwen_path, emoji_images, adapter, tmp_path):
    model = build_model(qwen_path, recipe="e5v", adapter=adapter)
    peft_model = model[0].model
    assert model.active_adapters() == ["default"]
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    if adapter.get("use_dora"):
        assert any("lora_magnitude_vector" in name for name in trainable)
    with torch.no_grad():  # as after training: initial adapter values would reload even if the file were ignored
        for name, param in peft_model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    before = model.encode([{"text": "x", "image": emoji_images[0]}])
    model.save(str(tmp_path / "m"))
    assert (tmp_path / "m" / "adapter_model.safetensors").exists()
    reloaded = load_model(str(tmp_path / "m"))
    assert np.abs(reloaded.encode([{"text": "x", "image": emoji_images[0]}]) - before).max() <= 1e-6
    plain = SentenceTransformer(str(tmp_path / "m"))  # DoRA magnitudes too (mm_st.model.portable_dora_keys)
    assert np.abs(plain.encode(["x"]) - model.encode(["x"])).max() <= 1e-6


def test_dtype_and_attention_pass_through(qwen_path):
    model = build_model(qwen_path, recipe="e5v", dtype=torch.bfloat16, attn_implementation="eager")
    assert model[0].model.dtype == torch.bfloat16
    assert model[0].model.config._attn_implementation == "eager"
    assert model.encode(["hello"]).shape == (1, 64)


def test_chat_messages_and_model_card_name(qwen_path, emoji_images, tmp_path):
    model = build_model(qwen_path, recipe="e5v")
    message = [{"role": "user", "content": [{"type": "image", "image": emoji_images[0]}, {"type": "text", "text": "grin"}]}]
    assert np.abs(model.encode([message]) - model.encode([{"image": emoji_images[0], "text": "grin"}])).max() <= 1e-6
    assert repr(model).startswith("SentenceTransformer(")
    model.save(str(tmp_path / "m"))
    card = (tmp_path / "m" / "README.md").read_text()
    assert "MultimodalSentenceTransformer" not in card and "from sentence_transformers import SentenceTransformer" in card


def test_adapter_with_refused_peft_names_versions_and_tested_pairs(qwen_path, monkeypatch):
    # What a user gets with transformers 5.24 (MIN_PEFT_VERSION 0.22.0) and any released peft.
    import transformers.integrations.peft as transformers_peft

    monkeypatch.setattr(transformers_peft, "MIN_PEFT_VERSION", "99.0.0")
    with pytest.raises(ImportError) as error:
        build_model(qwen_path, recipe="e5v", adapter={"r": 4})
    message = str(error.value)
    assert f"transformers {transformers.__version__} does not accept peft {peft.__version__}" in message
    assert "Tested pairs: transformers 5.23.x with peft 0.21.2" in message
    assert "requirements.lock" in message
