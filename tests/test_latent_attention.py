"""MM-Embed's architecture as sentence-transformers modules (issue 22): latent-attention pooling, instruction
mask, bidirectional attention, loading with and without mm_st.

The references below are written by hand from NV-Embed's / MM-Embed's public modeling code (see
mm_st/latent_attention.py for the sources), not from mm_st: the latent attention as explicit per-head softmax
attention, the instruction length as upstream's ``len(tokenizer(prompt.split("\\nQuery: ")[0])["input_ids"])``.
"""

import ast
import json
import math
import textwrap

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModel, AutoProcessor, AutoTokenizer, PreTrainedTokenizerFast

from mm_st import build_model, templates
from mm_st.latent_attention import LatentAttentionPooling, instruction_pool_mask, resolve_marker
from mm_st.testing import TINY_FAMILIES, tiny_model

MARKER = "\nQuery: "  # nvidia/MM-Embed: calculate_instruction_length(..., f'\n{query_prefix}'), query_prefix='Query: '
INSTRUCTION = "Find the emoji that matches the description."
SMALL = {"num_latents": 16, "num_heads": 4}  # fast tests; the defaults are NV-Embed's (checked below)
PLACEHOLDER = {"llava": "<image>", "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>"}


@pytest.fixture(autouse=True, scope="module")
def _modules_cache(tmp_path_factory):
    """Dynamic module code (trust_remote_code loads) goes to a temporary folder, not the user's cache."""
    import transformers.dynamic_module_utils as dynamic

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
        yield


# ----------------------------------------------------------------------------- hand-written references


def reference_latent_attention(state: dict, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """NV-Embed's LatentAttentionModel on (batch, length, d) tokens, before pooling, written out step by step."""

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]

    latents = layer_norm(state["latents"], "latent_norm")
    q = layer_norm(tokens, "token_norm") @ state["to_q.weight"].T
    k, v = (latents @ state["to_kv.weight"].T).chunk(2, dim=-1)  # upstream: to_kv(context).chunk(2, dim=-1)
    width = q.shape[-1] // heads
    outputs = []
    for h in range(heads):  # upstream: rearrange 'b n (h d) -> (b h) n d', then softmax(q k^T / sqrt(d)) v
        part = slice(h * width, (h + 1) * width)
        scores = q[..., part] @ k[:, part].T / math.sqrt(width)
        outputs.append(torch.softmax(scores, dim=-1) @ v[:, part])
    hidden = torch.cat(outputs, dim=-1) @ state["to_out.weight"].T + tokens  # residual on the tokens
    value, gate = (layer_norm(hidden, "ff_norm") @ state["ff_in.weight"].T + state["ff_in.bias"]).chunk(2, dim=-1)
    gelu = 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))  # GEGLU: x * gelu(gates)
    return (value * gelu) @ state["ff_out.weight"].T + state["ff_out.bias"] + hidden


def reference_pool(state, tokens, pool_mask, heads):
    hidden = reference_latent_attention(state, tokens, heads)
    pooled = (hidden * pool_mask[..., None]).sum(1) / pool_mask.sum(1, keepdim=True)  # upstream s / d
    return pooled


def upstream_instruction_length(tokenizer, prompt: str) -> int:
    """nvidia/MM-Embed calculate_instruction_length for one prompt (no image in the instruction here)."""
    if MARKER not in prompt:
        return 0
    return len(tokenizer(prompt.split(MARKER)[0])["input_ids"])


# ----------------------------------------------------------------------------- the module on fixed tensors


def test_module_matches_the_hand_written_reference_on_fixed_tensors():
    torch.manual_seed(0)
    module = LatentAttentionPooling(32, num_latents=12, num_heads=4, head_dim=16)
    for parameter in module.parameters():  # LayerNorms and biases away from their 1 / 0 starts
        torch.nn.init.normal_(parameter, std=0.3)
    tokens = torch.randn(3, 7, 32)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    out = module({"token_embeddings": tokens, "attention_mask": mask})["sentence_embedding"]
    expected = reference_pool(dict(module.state_dict()), tokens, mask.float(), heads=4)
    assert out.shape == (3, 32)
    assert (out - expected).abs().max() <= 1e-6
    # padding positions never matter: change them, same embeddings
    noisy = tokens.masked_fill(~mask.bool()[..., None], 1e3)
    again = module({"token_embeddings": noisy, "attention_mask": mask})["sentence_embedding"]
    assert (again - out).abs().max() <= 1e-6


def nv_embed_parameter_count(d, latents=512, heads=8, mult=4):
    """Latents, 3 LayerNorms, q / kv / out projections (no bias), GEGLU MLP (with bias); head width d."""
    inner = heads * d
    return latents * d + 3 * 2 * d + 4 * d * inner + (d * 2 * mult * d + 2 * mult * d) + (mult * d * d + d)


def test_nv_embed_defaults_and_parameter_count():
    module = LatentAttentionPooling(64)
    assert (module.num_latents, module.num_heads, module.ff_mult, module.head_dim) == (512, 8, 4, None)
    assert module.to_q.weight.shape == (8 * 64, 64) and module.to_kv.weight.shape == (2 * 8 * 64, 64)
    assert sum(p.numel() for p in module.parameters()) == nv_embed_parameter_count(64)
    # At NV-Embed-v2's width (4096) that is 0.74B parameters: Mistral-7B without its LM head (7.11B) + 0.74B is the
    # 7.85B NV-Embed-v2 reports, the evidence for the per-head width (its config.json was not visible).
    assert round(nv_embed_parameter_count(4096) / 1e9, 2) == 0.74


def test_bad_sizes_and_missing_marker_ids_are_named():
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        LatentAttentionPooling(16, num_heads=0)
    module = LatentAttentionPooling(16, num_latents=2, num_heads=2, instruction_marker=MARKER)
    features = {"token_embeddings": torch.randn(1, 3, 16), "attention_mask": torch.ones(1, 3), "input_ids": torch.ones(1, 3)}
    with pytest.raises(ValueError, match="no token ids for it"):
        module(features)


def test_config_round_trip_through_sentence_transformers_save(tmp_path):
    module = LatentAttentionPooling(16, num_latents=5, num_heads=2, head_dim=4, ff_mult=2, instruction_marker=MARKER,
                                    mask_marker=True, marker_token_ids=[7, 8], newline_token_ids=[9], bidirectional=True)
    module.save(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == {"embedding_dimension": 16, "num_latents": 5, "num_heads": 2, "head_dim": 4, "ff_mult": 2,
                      "instruction_marker": MARKER, "mask_marker": True, "marker_token_ids": [7, 8],
                      "newline_token_ids": [9], "bidirectional": True}
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "latent_attention.py").is_file()
    loaded = LatentAttentionPooling.load(str(tmp_path))
    assert loaded.get_config_dict() == module.get_config_dict()
    for (name, a), (_, b) in zip(module.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


# ----------------------------------------------------------------------------- the instruction mask


def test_pool_mask_rows_with_left_and_right_padding():
    # newline id 9, marker word ids [7, 8]; a row without the marker keeps its whole mask
    ids = torch.tensor([[0, 0, 1, 5, 9, 7, 8, 3], [1, 5, 5, 9, 7, 8, 3, 0], [0, 0, 0, 1, 7, 8, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1, 1]])
    pool = instruction_pool_mask(ids, mask, [7, 8], [9])
    assert pool.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1, 1]]
    # the marker inside padding is not a marker
    assert instruction_pool_mask(torch.tensor([[9, 7, 8, 1, 2]]), torch.tensor([[0, 0, 0, 1, 1]]), [7, 8], [9]).tolist() == [[0, 0, 0, 1, 1]]


def mm_embed_prompts():
    """Queries as MM-Embed writes them (with and without instruction), text only: instruction endings vary."""
    texts = ["a red heart", "Two cats.", "1 dog", "(smiling face)"]
    instructions = [INSTRUCTION, "Which emoji is it?", 'Retrieve "the" image', "Find 12"]
    with_instruction = [f"Instruct: {i}{MARKER}{t}" for i, t in zip(instructions, texts)]
    return with_instruction + [f"Query: {t}" for t in texts] + texts  # + documents (bare)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_marker_found_like_upstream_on_every_tiny_tokenizer(family):
    tokenizer = AutoProcessor.from_pretrained(tiny_model(family)).tokenizer
    marker_ids, newline_ids = resolve_marker(tokenizer, MARKER)
    assert tokenizer.decode(marker_ids) == "Query:"
    prompts = mm_embed_prompts()
    expected = [upstream_instruction_length(tokenizer, p) for p in prompts]
    for side in ("left", "right"):
        tokenizer.padding_side = side
        batch = tokenizer(prompts, padding=True, return_tensors="pt")
        pool = instruction_pool_mask(batch["input_ids"], batch["attention_mask"], marker_ids, newline_ids)
        for row, prompt in enumerate(prompts):
            real = batch["attention_mask"][row].bool()
            masked_real = (~pool[row].bool() & real).sum().item()
            assert masked_real == expected[row], (family, side, prompt)
    assert any(e > 0 for e in expected) and expected[-1] == 0


def synthetic_tokenizer(pattern: str | None, corpus: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``corpus``; ``pattern``: a Llama-3-style split regex, None: no pre-split."""
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"), byte_level])
                         if pattern else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<pad>"], show_progress=False)
    tok.train_from_iterator(corpus * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


# Llama-3 / Qwen2 pre-tokenizer pattern: punctuation absorbs the newline after it (".\n" is one token)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def test_marker_found_when_the_newline_merges_with_the_instruction():
    corpus = [f"Instruct: find it{end}\nQuery: word {end}" for end in (".", "?", "!", ")", ":", "")]
    tokenizer = synthetic_tokenizer(LLAMA3_SPLIT, corpus)
    prompt = "Instruct: Find it.\nQuery: a dog"
    offsets = tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"]
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(prompt)["input_ids"])
    newline_token = next(i for i, (a, b) in enumerate(offsets) if a <= prompt.index("\n") < b)
    assert tokens[newline_token] == ".Ċ"  # the instruction's "." and the marker's newline are one token
    marker_ids, newline_ids = resolve_marker(tokenizer, MARKER)
    batch = tokenizer([prompt, "Query: a dog"], padding=True, return_tensors="pt")
    pool = instruction_pool_mask(batch["input_ids"], batch["attention_mask"], marker_ids, newline_ids)
    assert pool[0].tolist() == [0] * newline_token + [1] * (len(offsets) - newline_token)
    assert pool[1].tolist() == batch["attention_mask"][1].tolist()


def test_tokenizer_merging_the_marker_word_is_refused():
    # no pre-split: BPE learns "\nQuery:" across the newline, so the word has no token ids of its own
    tokenizer = synthetic_tokenizer(None, [f"Instruct: find it{end}\nQuery: word" for end in (".", "?", "")])
    with pytest.raises(ValueError, match="merges the marker word 'Query:'"):
        resolve_marker(tokenizer, MARKER)
    with pytest.raises(ValueError, match="must be a newline followed by a word"):
        resolve_marker(tokenizer, "Query: ")


# ----------------------------------------------------------------------------- whole model parity


def literal_mmembed(family, text=None, image=False, instruction=None):
    """MM-Embed's encode(): f"Instruct: {instruction}\\n{query_prefix}<image>\\n<text>" (pieces dropped as upstream)."""
    prompt = (f"Instruct: {instruction}\nQuery: " if instruction else "Query: ") + "<image>\n<text>"
    prompt = prompt if image else prompt.replace("<image>\n", "")
    return prompt.replace("<text>", text or "").replace("<image>", PLACEHOLDER[family])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_whole_model_matches_transformers_forward_and_reference_pooling(family, emoji_images):
    path = tiny_model(family)
    model = build_model(path, recipe="mmembed", pooling="latent_attention", attention="bidirectional",
                        pooling_kwargs=SMALL)
    state = {k: v.detach() for k, v in model[1].state_dict().items()}
    processor = AutoProcessor.from_pretrained(path)
    backbone = AutoModel.from_pretrained(path).eval()
    backbone.config.get_text_config().is_causal = False  # NV-Embed: the causal mask removed
    image = emoji_images[0]
    cases = [("a smiling face", None), (None, image), ("a smiling face", image)]
    for instruction in (INSTRUCTION, None):
        inputs = [text if img is None else ({"text": text, "image": img} if text else img) for text, img in cases]
        prompt = {"prompt": instruction} if instruction else {}
        got = model.encode_query(inputs, batch_size=len(inputs), **prompt)
        for (text, img), embedding in zip(cases, got):
            literal = literal_mmembed(family, text, img is not None, instruction)
            kwargs = {"images": [[img]]} if img is not None else {}
            batch = processor(text=[literal], return_tensors="pt", **kwargs)
            with torch.no_grad():
                hidden = backbone(**batch).last_hidden_state
            pool = batch["attention_mask"].float().clone()
            pool[:, : upstream_instruction_length(processor.tokenizer, literal)] = 0  # create_pool_mask
            expected = torch.nn.functional.normalize(reference_pool(state, hidden, pool, SMALL["num_heads"]), dim=-1)
            assert np.abs(embedding - expected[0].numpy()).max() <= 1e-5, (family, text, img is not None, instruction)


def test_batch_invariance_with_left_and_right_padding(emoji_images):
    model = build_model(tiny_model("llava_next"), recipe="mmembed", pooling="latent_attention",
                        attention="bidirectional", pooling_kwargs=SMALL)
    texts = ["a red heart", "a very long description of a smiling yellow face with open eyes and rosy cheeks", "dog"]
    inputs = texts + [{"text": t, "image": emoji_images[i]} for i, t in enumerate(texts)]
    results = {}
    for side in ("left", "right"):
        model[0].tokenizer.padding_side = side
        for instruction in (INSTRUCTION, "Find it."):
            one = model.encode_query(inputs, prompt=instruction, batch_size=1)
            batch = model.encode_query(inputs, prompt=instruction, batch_size=len(inputs))
            assert np.abs(one - batch).max() <= 1e-5, (side, instruction)
            results[side, instruction] = batch
        documents = model.encode_document(inputs, batch_size=len(inputs))
        assert np.abs(documents - model.encode_document(inputs, batch_size=1)).max() <= 1e-5, side
    for instruction in (INSTRUCTION, "Find it."):
        assert np.abs(results["left", instruction] - results["right", instruction]).max() <= 1e-5
    # the instruction is left out of the pool, but not out of the (bidirectional) context
    assert np.abs(results["left", INSTRUCTION] - results["left", "Find it."]).max() > 1e-4


def test_masking_changes_the_embedding_only_through_the_pool(emoji_images):
    """mask_marker (NV-Embed's rule) pools fewer tokens than MM-Embed's rule; documents are unaffected."""
    path = tiny_model("qwen2_vl")
    kwargs = dict(recipe="mmembed", pooling="latent_attention", pooling_kwargs=SMALL)
    torch.manual_seed(0)
    mm_embed = build_model(path, **kwargs)
    torch.manual_seed(0)
    nv_embed = build_model(path, **{**kwargs, "pooling_kwargs": {**SMALL, "mask_marker": True}})
    assert mm_embed[1].mask_marker is False and nv_embed[1].mask_marker is True
    query = ["a red heart"]
    assert np.abs(mm_embed.encode_query(query, prompt=INSTRUCTION) - nv_embed.encode_query(query, prompt=INSTRUCTION)).max() > 1e-4
    assert np.abs(mm_embed.encode_document(query) - nv_embed.encode_document(query)).max() == 0


def test_trains_with_gradcache_like_without(emoji_images):
    """The pooling is per row: GradCache mini-batches give the plain loss and gradients, latents included."""
    from mm_st.losses import CachedMultimodalInfoNCELoss, MultimodalInfoNCELoss

    model = build_model(tiny_model("qwen2_vl"), recipe="mmembed", pooling="latent_attention",
                        attention="bidirectional", pooling_kwargs=SMALL)
    anchors = ["a red heart", "a yellow face", "two cats", "a dog"]
    positives = emoji_images[:4]

    def loss_and_grads(loss):
        columns = [model.preprocess(anchors, prompt=INSTRUCTION), model.preprocess(positives)]
        model.zero_grad()
        value = loss(columns, None)
        value.backward()
        return value.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_value, plain = loss_and_grads(MultimodalInfoNCELoss(model, temperature=0.05))
    cached_value, cached = loss_and_grads(CachedMultimodalInfoNCELoss(model, temperature=0.05, mini_batch_size=2))
    assert cached_value == pytest.approx(plain_value, abs=1e-5)
    assert plain["1.latents"].abs().max() > 0 and set(plain) == set(cached)
    for name in plain:
        assert torch.allclose(cached[name], plain[name], atol=1e-5), name


# ----------------------------------------------------------------------------- bidirectional attention


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_bidirectional_attention_lets_a_later_token_change_an_earlier_one(family):
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    changed = ids.clone()
    changed[0, -1] = 11
    mask = torch.ones_like(ids)
    for attention, moves in (("causal", False), ("bidirectional", True)):
        backbone = build_model(tiny_model(family), recipe="mmembed", attention=attention)[0].model
        with torch.no_grad():
            first = backbone(input_ids=ids, attention_mask=mask).last_hidden_state[0, 0]
            second = backbone(input_ids=changed, attention_mask=mask).last_hidden_state[0, 0]
        difference = (first - second).abs().max().item()
        assert (difference > 1e-4) if moves else (difference == 0.0), (family, attention, difference)


def test_bidirectional_last_token_model_stays_portable(tmp_path, emoji_images):
    model = build_model(tiny_model("qwen2_vl"), recipe="mmembed", attention="bidirectional")
    inputs = ["a red heart", emoji_images[1]]
    expected = model.encode_query(inputs, prompt=INSTRUCTION)
    model.save(str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["text_config"]["is_causal"] is False
    assert not list(tmp_path.glob("*.py"))
    loaded = SentenceTransformer(str(tmp_path))  # no trust_remote_code: only sentence-transformers modules
    assert np.abs(loaded.encode_query(inputs, prompt=INSTRUCTION) - expected).max() <= 1e-6


def test_adapter_model_gets_bidirectional_attention_back_at_load(tmp_path):
    model = build_model(tiny_model("llava"), recipe="mmembed", pooling="latent_attention", attention="bidirectional",
                        pooling_kwargs=SMALL, adapter={"r": 4, "init_lora_weights": False})
    queries = ["a red heart", "two dogs"]
    expected = model.encode_query(queries, prompt=INSTRUCTION)
    model.save(str(tmp_path))
    assert not (tmp_path / "config.json").exists()  # adapter only: the base model's causal config is loaded
    loaded = SentenceTransformer(str(tmp_path), trust_remote_code=True)
    assert loaded[0].model.config.get_text_config().is_causal is False
    assert np.abs(loaded.encode_query(queries, prompt=INSTRUCTION) - expected).max() <= 1e-6
    loaded[0].model.config.get_text_config().is_causal = True  # what a load without the module would give
    assert np.abs(loaded.encode_query(queries, prompt=INSTRUCTION) - expected).max() > 1e-4


def test_bad_architecture_arguments_are_named():
    path = tiny_model("llava")
    with pytest.raises(ValueError, match="Unknown pooling 'mean'. Known poolings: lasttoken, latent_attention"):
        build_model(path, recipe="mmembed", pooling="mean")
    with pytest.raises(ValueError, match="Unknown attention 'full'"):
        build_model(path, recipe="mmembed", attention="full")
    with pytest.raises(ValueError, match="apply to pooling='latent_attention' only"):
        build_model(path, recipe="mmembed", pooling_kwargs={"num_latents": 4})
    with pytest.raises(ValueError, match=r"Unknown pooling_kwargs \['latents'\]"):
        build_model(path, recipe="mmembed", pooling="latent_attention", pooling_kwargs={"latents": 4})
    with pytest.raises(ValueError, match="needs pooling='latent_attention'"):
        build_model(path, recipe="mmembed", attention="bidirectional", adapter={"r": 4})


def test_marker_string_is_mm_embeds():
    assert templates.RECIPES["mmembed"].instruction_marker == "\nQuery: "
    assert templates.TRAIN_RECIPES["mmembed"].instruction_marker == "\nQuery: "
    assert templates.RECIPES["e5v"].instruction_marker is None


# ----------------------------------------------------------------------------- loading with and without mm_st

LOAD_WITHOUT_MM_ST = textwrap.dedent(
    """
    import json, sys
    sys.modules["mm_st"] = None  # mm_st must not be importable here
    try:
        import mm_st
        raise SystemExit("mm_st imported")
    except ImportError:
        pass
    import torch
    torch.set_num_threads(1)
    from PIL import Image
    from sentence_transformers import SentenceTransformer
    case = json.loads(sys.argv[1])
    try:
        SentenceTransformer(case["dir"])
        raise SystemExit("loaded without trust_remote_code")
    except ValueError as error:
        assert "trust_remote_code=True" in str(error), error
    model = SentenceTransformer(case["dir"], trust_remote_code=True)
    image = Image.open(case["image"]).convert("RGB")
    inputs = [case["text"], image, {"text": case["text"], "image": image}]
    out = {"query": model.encode_query(inputs, prompt=case["instruction"], batch_size=1).tolist(),
           "document": model.encode_document(inputs, batch_size=1).tolist(),
           "class": type(model[1]).__module__}
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
def test_saved_model_loads_with_trust_remote_code_with_and_without_mm_st(tmp_path, emoji_images, plain_python):
    model = build_model(tiny_model("qwen2_vl"), recipe="mmembed", pooling="latent_attention",
                        attention="bidirectional", pooling_kwargs=SMALL)
    image = emoji_images[2]
    image_path = tmp_path / "emoji.png"
    image.save(image_path)
    text = "a yellow face"
    inputs = [text, image, {"text": text, "image": image}]
    query = model.encode_query(inputs, prompt=INSTRUCTION, batch_size=1)
    document = model.encode_document(inputs, batch_size=1)
    folder = tmp_path / "model"
    model.save(str(folder))
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.base.modules.transformer.Transformer",
                                            "latent_attention.LatentAttentionPooling",
                                            "sentence_transformers.base.modules.normalize.Normalize"]
    imported = set()  # modules the travelling code file imports (its docstring examples aside)
    for node in ast.walk(ast.parse((folder / "latent_attention.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported == {"__future__", "inspect", "os", "shutil", "typing", "torch", "sentence_transformers"}
    assert "trust_remote_code=True" in (folder / "README.md").read_text()  # the card says how to load it, and why

    # where mm_st is installed
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(folder))
    loaded = SentenceTransformer(str(folder), trust_remote_code=True)
    assert np.abs(loaded.encode_query(inputs, prompt=INSTRUCTION, batch_size=1) - query).max() <= 1e-6
    # re-saved by plain sentence-transformers (dynamically loaded class), it still loads
    loaded.save(str(tmp_path / "again"))
    again = SentenceTransformer(str(tmp_path / "again"), trust_remote_code=True)
    assert np.abs(again.encode_document(inputs, batch_size=1) - document).max() <= 1e-6

    # where mm_st is not installed
    case = {"dir": str(folder), "image": str(image_path), "text": text, "instruction": INSTRUCTION}
    run = plain_python.run(LOAD_WITHOUT_MM_ST, json.dumps(case))  # its own HF_MODULES_CACHE (tests/plain_python.py)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.split("RESULT", 1)[1])
    assert result["class"].startswith("transformers_modules.")
    assert np.abs(np.array(result["query"]) - query).max() <= 1e-6
    assert np.abs(np.array(result["document"]) - document).max() <= 1e-6


def test_default_model_uses_only_sentence_transformers_modules(tmp_path):
    model = build_model(tiny_model("llava"), recipe="mmembed")
    model.save(str(tmp_path))
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)
    assert not list(tmp_path.rglob("*.py"))
    assert "trust_remote_code" not in (tmp_path / "README.md").read_text()
    SentenceTransformer(str(tmp_path))  # loads without trust_remote_code


def test_push_merges_a_latent_attention_adapter_model_with_a_local_base(tmp_path):
    """`mm_st push` of a latent-attention model whose adapter's base is local: the adapter is merged (the shipped
    module file is mm_st's own, so loading it for the merge needs no trust_remote_code) and the merged folder gives
    the adapter model's embeddings."""
    from mm_st.hub import PushError, push_model

    model = build_model(tiny_model("llava"), recipe="mmembed", pooling="latent_attention", attention="bidirectional",
                        pooling_kwargs=SMALL, adapter={"r": 4, "init_lora_weights": False})
    queries = ["a red heart", "two dogs"]
    expected = model.encode_query(queries, prompt=INSTRUCTION)
    model.save(str(tmp_path / "adapter"))
    result = push_model(tmp_path / "adapter", "org/latent-merged", dry_run=tmp_path / "out")
    assert result.kind == "merged" and "latent_attention.py" in result.files and "adapter_config.json" not in result.files
    merged = SentenceTransformer(str(tmp_path / "out"), trust_remote_code=True)
    assert np.abs(merged.encode_query(queries, prompt=INSTRUCTION) - expected).max() <= 1e-5
    # a module file that is not mm_st's own is never run to merge
    code = tmp_path / "adapter" / "latent_attention.py"
    code.write_text(code.read_text() + "\nraise SystemExit('ran')\n")
    with pytest.raises(PushError, match="latent_attention.py' \\(module LatentAttentionPooling\\) is not mm_st's own"):
        push_model(tmp_path / "adapter", "org/latent-merged", dry_run=tmp_path / "out2")
