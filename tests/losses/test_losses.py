"""MultimodalInfoNCELoss: hand-checked values, content keys, a short real training run, bad input."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from mm_st import build_model
from mm_st.data import load_emoji
from mm_st.inputs import content_key
from mm_st.losses import MultimodalInfoNCELoss
from mm_st.testing import tiny_model
from tests.synthesis_support import free_port

TAU = 0.1


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_model("qwen2_vl"), recipe="e5v")


def fixed_embeddings(batch=4, negatives=1, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, dim, generator=g) for _ in range(2 + negatives)]


def cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def reference(embeddings, keys=None, scope="shared", modalities=None, modality_weight=0.0, symmetric=False):
    """Loss by the formula, one query and one candidate at a time."""
    q, cols = embeddings[0], embeddings[1:]
    batch = q.size(0)
    cands = [(c, j) for c in range(len(cols)) for j in range(batch)]  # (column, row)
    total, wrong_terms = 0.0, 0.0
    for i in range(batch):
        kept = []
        for c, j in cands:
            own_positive = (c, j) == (0, i)
            if not own_positive and keys is not None and keys[c][j] == keys[0][i]:
                continue
            if not own_positive and scope == "own" and c > 0 and j != i:
                continue
            kept.append((c, j))
        exps = {cj: math.exp(cos(q[i], cols[cj[0]][cj[1]]) / TAU) for cj in kept}
        z = sum(exps.values())
        total += -math.log(exps[(0, i)] / z)
        if modalities is not None:
            wrong = sum(v for (c, j), v in exps.items() if modalities[c][j] != modalities[0][i]) / z
            wrong_terms += -math.log(1 - wrong)
    loss = total / batch
    if symmetric:
        back = 0.0
        for i in range(batch):
            kept = [j for j in range(batch) if j == i or keys is None or keys[0][j] != keys[0][i]]
            exps = {j: math.exp(cos(q[j], cols[0][i]) / TAU) for j in kept}
            back += -math.log(exps[i] / sum(exps.values()))
        loss = (loss + back / batch) / 2
    return loss + modality_weight * wrong_terms / batch


def as_tensors(lists):
    return [torch.tensor(x) for x in lists]


def test_plain_and_shared_hard_negatives_match_formula(model):
    emb = fixed_embeddings(negatives=2)
    loss = MultimodalInfoNCELoss(model, temperature=TAU, mask_duplicates=False)
    assert loss.compute_multimodal_loss(emb).item() == pytest.approx(reference(emb), rel=1e-5)


def test_duplicates_are_masked(model):
    emb = fixed_embeddings(negatives=1)
    keys = [[7, 8, 7, 9], [1, 7, 2, 3]]  # positives 0 and 2 identical; negative row 1 equals them too
    got = MultimodalInfoNCELoss(model, temperature=TAU).compute_multimodal_loss(emb, as_tensors(keys))
    assert got.item() == pytest.approx(reference(emb, keys=keys), rel=1e-5)
    unmasked = MultimodalInfoNCELoss(model, temperature=TAU, mask_duplicates=False).compute_multimodal_loss(emb)
    assert got.item() < unmasked.item()


def test_own_hard_negatives(model):
    emb = fixed_embeddings(negatives=3)
    got = MultimodalInfoNCELoss(model, temperature=TAU, hard_negative_scope="own", mask_duplicates=False)
    assert got.compute_multimodal_loss(emb).item() == pytest.approx(reference(emb, scope="own"), rel=1e-5)
    shared = MultimodalInfoNCELoss(model, temperature=TAU, mask_duplicates=False).compute_multimodal_loss(emb)
    assert shared.item() != pytest.approx(got.compute_multimodal_loss(emb).item())


def test_modality_term(model):
    emb = fixed_embeddings(negatives=1)
    modalities = [[1, 1, 0, 2], [0, 1, 1, 0]]
    keys = [[1, 2, 3, 4], [5, 6, 7, 8]]
    loss = MultimodalInfoNCELoss(model, temperature=TAU, modality_weight=0.5)
    got = loss.compute_multimodal_loss(emb, as_tensors(keys), as_tensors(modalities))
    assert got.item() == pytest.approx(reference(emb, keys=keys, modalities=modalities, modality_weight=0.5), rel=1e-5)
    same = [[1] * 4, [1] * 4]
    assert loss.compute_multimodal_loss(emb, as_tensors(keys), as_tensors(same)).item() == pytest.approx(
        reference(emb, keys=keys), rel=1e-5
    )


def test_symmetric(model):
    emb = fixed_embeddings(negatives=1)
    keys = [[3, 4, 3, 5], [6, 7, 8, 9]]
    loss = MultimodalInfoNCELoss(model, temperature=TAU, symmetric=True)
    assert loss.compute_multimodal_loss(emb, as_tensors(keys)).item() == pytest.approx(
        reference(emb, keys=keys, symmetric=True), rel=1e-5
    )


def test_content_keys_are_exact(emoji_images):
    a, b = emoji_images[0], emoji_images[1]
    assert content_key("goldfish") == content_key("goldfish")
    assert content_key("goldfish") != content_key("goldfish ")
    assert content_key(a) == content_key(a.copy()) and content_key(a) != content_key(b)
    assert content_key({"text": "x", "image": a}) == content_key({"text": "x", "image": a.copy()})
    assert [content_key(x)[1] for x in ("t", a, {"text": "t", "image": a})] == [0, 1, 2]


def test_keys_reach_the_loss_and_never_the_backbone(model, emoji_images, monkeypatch):
    """preprocess adds content keys (the trainer's collator calls it); the backbone never receives them."""
    seen = []
    backbone_forward = model[0].model.forward  # sentence-transformers calls it with the features as kwargs

    def spy(**kwargs):
        seen.append(sorted(kwargs))
        return backbone_forward(**kwargs)

    monkeypatch.setattr(model[0].model, "forward", spy)
    for batch in (["yes", "no", "yes"], ["yes", emoji_images[0], "yes"]):  # one sub-batch; grouped
        features = model.preprocess(batch)
        assert features["mm_st_content_key"][0] == features["mm_st_content_key"][2]
        assert features["mm_st_content_key"][0] != features["mm_st_content_key"][1]
        out = model(features)
        assert seen and "input_ids" in seen[-1] and not any(key.startswith("mm_st_") for key in seen[-1]), seen
        assert out["sentence_embedding"].shape == (3, 64)
        assert out is features  # filled in place, as sentence-transformers' forward does
    assert len(seen) == 3  # one backbone call for the text batch, one per modality for the mixed one


def test_encode_never_hashes_and_a_loss_leaves_the_model_alone(model, emoji_images, monkeypatch):
    import mm_st.inputs
    import mm_st.model

    before = dict(vars(model))
    MultimodalInfoNCELoss(model, temperature=0.05, modality_weight=0.1)
    assert vars(model) == before

    def no_hashing(item):
        raise AssertionError("content_key called")

    monkeypatch.setattr(mm_st.model, "content_key", no_hashing)
    monkeypatch.setattr(mm_st.inputs, "content_key", no_hashing)
    assert model.encode(["yes", emoji_images[0], {"text": "cat", "image": emoji_images[1]}]).shape == (3, 64)
    with torch.inference_mode():
        assert not any(key.startswith("mm_st_content") for key in model.preprocess(["yes", emoji_images[0]]))
    assert "mm_st_content_key" not in model.preprocess(["yes"], content_keys=False)


def test_keys_come_back_in_caller_order_on_a_mixed_batch(model, emoji_images):
    batch = [emoji_images[0], "yes", {"text": "cat", "image": emoji_images[1]}, "yes", emoji_images[0]]
    features = model.preprocess(batch)
    assert [rows.tolist() for rows in features["mm_st_group_rows"]] == [[1, 3], [0, 4], [2]]
    assert features["mm_st_content_key"].tolist() == [content_key(x)[0] for x in batch]
    assert features["mm_st_modality"].tolist() == [1, 0, 2, 0, 1]


def test_keys_hash_the_text_before_truncation(emoji_images):
    """Two long texts that differ only past the token limit: truncated alike, yet different keys."""
    model = build_model(tiny_model("qwen2_vl"), recipe="e5v", max_length=40)
    long_text = "word " * 60
    batch = [{"text": long_text + "one", "image": emoji_images[0]}, {"text": long_text + "two", "image": emoji_images[0]}]
    features = model.preprocess(batch)
    assert features["input_ids"][0].tolist() == features["input_ids"][1].tolist()  # the model sees the same input
    assert features["mm_st_content_key"].tolist() == [content_key(x)[0] for x in batch]
    assert features["mm_st_content_key"][0] != features["mm_st_content_key"][1]


def test_missing_keys_are_a_clear_error(model):
    columns = [["a", "b"], ["c", "d"], ["e", "f"]]
    features = [model.preprocess(columns[0]), model.preprocess(columns[1]), model.preprocess(columns[2], content_keys=False)]
    with pytest.raises(ValueError, match="Column 2 has no content keys .'mm_st_content_key', 'mm_st_modality'.") as info:
        MultimodalInfoNCELoss(model, temperature=TAU)(features, None)
    assert "pass mask_duplicates=False, modality_weight=0" in str(info.value)
    no_keys = [model.preprocess(column, content_keys=False) for column in columns]
    unmasked = MultimodalInfoNCELoss(model, temperature=TAU, mask_duplicates=False)
    assert unmasked(no_keys, None).item() == pytest.approx(unmasked([model.preprocess(c) for c in columns], None).item())
    emb = fixed_embeddings()
    with pytest.raises(ValueError, match=r"mask_duplicates needs candidate_keys: one tensor per candidate column \(2\), got None"):
        MultimodalInfoNCELoss(model, temperature=TAU).compute_multimodal_loss(emb)
    with pytest.raises(ValueError, match=r"modality_weight needs candidate_modalities"):
        MultimodalInfoNCELoss(model, temperature=TAU, modality_weight=0.1).compute_multimodal_loss(emb, as_tensors([[1] * 4] * 2))
    with pytest.raises(ValueError, match=r"candidate_keys must hold 2 tensor\(s\) of shape \(4,\), one per candidate column; got \[\(4,\), \(3,\)\]"):
        MultimodalInfoNCELoss(model, temperature=TAU).compute_multimodal_loss(emb, as_tensors([[1] * 4, [1] * 3]))
    from sentence_transformers import SentenceTransformer

    with pytest.raises(TypeError, match="need a model from mm_st.build_model or mm_st.load_model .got SentenceTransformer."):
        MultimodalInfoNCELoss(SentenceTransformer(modules=[torch.nn.Identity()]))


def test_the_trainers_default_collator_brings_the_keys(model, tmp_path):
    """SentenceTransformerTrainer's own collator + collect_features: keys per column, masking applied."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    rows = {"anchor": ["q1", "q2", "q3", "q4"], "positive": ["grin", "heart", "grin", "sun"], "negative": ["a", "b", "heart", "c"]}
    loss = MultimodalInfoNCELoss(model, temperature=TAU)
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=loss)
    batch = trainer.data_collator([dict(zip(rows, values)) for values in zip(*rows.values())])
    assert batch["positive_mm_st_content_key"].tolist() == [content_key(x)[0] for x in rows["positive"]]
    features, _ = trainer.collect_features(batch)
    with torch.no_grad():
        got = loss(features, None).item()
        embeddings = [model.encode(rows[c], convert_to_tensor=True) for c in rows]
    keys = [[content_key(x)[0] for x in rows[c]] for c in ("positive", "negative")]
    assert got == pytest.approx(reference(embeddings, keys=keys), rel=1e-4)
    assert got != pytest.approx(reference(embeddings), rel=1e-4)  # the duplicates did change the value


def mixed_columns(images):
    """(anchor, positive, negative) columns, each mixing text, image and image+text rows; a duplicate positive."""
    anchors = [images[0], "query one", {"text": "q", "image": images[1]}, "query three", images[2], "query five"]
    positives = ["grin", {"text": "cat", "image": images[6]}, "grin", images[3], {"text": "sun", "image": images[4]}, "moon"]
    negatives = [{"text": "dog", "image": images[7]}, "tree", images[5], "car", {"text": "sun", "image": None}, "star"]
    return anchors, positives, negatives


def test_grouping_leaves_loss_gradients_and_minibatches_unchanged(emoji_images):
    """Mixed columns: grouped == ungrouped loss and gradients, plain and GradCache (mini-batches straddle
    modality groups), and each GradCache mini-batch's embeddings are the rows of the whole column."""
    from sentence_transformers.base.losses.gradcache import _create_minibatch

    from mm_st.losses import CachedMultimodalInfoNCELoss

    # float64: only padding-dependent rounding (float32 rotary angles) remains between the two layouts, ~1e-9
    model = build_model(tiny_model("llava_next"), recipe="e5v", dtype=torch.float64)
    columns = mixed_columns(emoji_images + [img.rotate(90) for img in emoji_images])
    kwargs = dict(temperature=0.5, hard_negative_scope="own", modality_weight=0.3, symmetric=True)

    def loss_and_grads(loss, grouped):
        model.group_modalities = grouped
        features = [model.preprocess(col) for col in columns]
        assert all(("mm_st_groups" in f) == grouped for f in features)
        model.zero_grad()
        value = loss(features, None)
        value.backward()
        return value.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    try:
        reference, reference_grads = loss_and_grads(MultimodalInfoNCELoss(model, **kwargs), grouped=False)
        for loss, grouped in [(MultimodalInfoNCELoss(model, **kwargs), True),
                              (CachedMultimodalInfoNCELoss(model, mini_batch_size=4, **kwargs), True),
                              (CachedMultimodalInfoNCELoss(model, mini_batch_size=4, **kwargs), False)]:
            value, grads = loss_and_grads(loss, grouped)
            assert value == pytest.approx(reference, abs=1e-7), (type(loss).__name__, grouped)
            assert set(grads) == set(reference_grads) and any(g.abs().max() > 0 for g in grads.values())
            for name in grads:
                assert torch.allclose(grads[name], reference_grads[name], rtol=1e-6, atol=1e-7), (type(loss).__name__, grouped, name)
        model.group_modalities = True
        features = model.preprocess(columns[1])
        with torch.no_grad():
            whole = model(dict(features))["sentence_embedding"]
            for begin, end in [(0, 4), (4, 6), (1, 3), (3, 4)]:
                part = model(_create_minibatch(features, begin, end))["sentence_embedding"]
                assert torch.allclose(part, whole[begin:end], atol=1e-7), (begin, end)
    finally:
        model.group_modalities = True


@pytest.mark.slow
def test_short_training_run_learns(tmp_path):
    """50 steps on emoji image <-> name: loss falls and held-out Recall@10 rises well above chance."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    model = build_model(tiny_model("qwen2_vl", seed=1), recipe="e5v")
    emoji = load_emoji()
    train = Dataset.from_dict({"image": emoji["train"]["image"][:960], "name": emoji["train"]["name_en"][:960]})
    train = train.cast_column("image", emoji["train"].features["image"])
    test = emoji["test"]

    def recalls():
        """Held-out image -> name Recall@1 and Recall@10 over the 391 test emoji."""
        img = model.encode(test["image"], convert_to_tensor=True)
        txt = model.encode(test["name_en"], convert_to_tensor=True)
        hits = (img @ txt.T).topk(10, dim=1).indices == torch.arange(len(test)).unsqueeze(1)
        return hits[:, 0].float().mean().item(), hits.any(dim=1).float().mean().item()

    before_r1, before = recalls()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path), max_steps=50, per_device_train_batch_size=32, learning_rate=2e-3,
        logging_steps=5, save_strategy="no", report_to="none", seed=0, use_cpu=True,
    )
    loss = MultimodalInfoNCELoss(model, temperature=0.05)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    after_r1, after = recalls()
    chance = 10 / len(test)
    assert np.mean(losses[-2:]) < losses[0]
    print(f"Recall@1 {before_r1:.4f} -> {after_r1:.4f}, Recall@10 {before:.4f} -> {after:.4f}, chance {chance:.4f}")
    assert after > 2 * chance and after > before, (before, after)
    assert after_r1 > 1 / len(test), (before_r1, after_r1)  # Recall@1 above chance (1/391)


def test_bad_input(model):
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        MultimodalInfoNCELoss(model, temperature=0)
    with pytest.raises(ValueError, match="hard_negative_scope must be 'shared' or 'own'"):
        MultimodalInfoNCELoss(model, hard_negative_scope="mine")
    loss = MultimodalInfoNCELoss(model, temperature=TAU)
    emb = fixed_embeddings()
    with pytest.raises(ValueError, match="Column 2 has 3 rows but the anchor column has 4"):
        loss.compute_multimodal_loss([emb[0], emb[1], emb[2][:3]])
    with pytest.raises(ValueError, match="Input 1 is None"):
        model.preprocess(["a negative", None])


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_next"])
def test_cached_equals_non_cached_with_images_and_lora(family, emoji_images):
    """GradCache: same loss and same LoRA gradients as the plain loss, on image / image+text columns."""
    from mm_st.losses import CachedMultimodalInfoNCELoss

    model = build_model(tiny_model(family), recipe="e5v", adapter={"r": 4, "lora_alpha": 8})
    images = emoji_images + [img.rotate(90) for img in emoji_images]
    anchors = [images[i] for i in range(6)]
    positives = ["grin", "grin", "heart", {"text": "cat", "image": images[6]}, "sun", "moon"]  # a duplicate
    negatives = [{"text": "dog", "image": images[7]}, "tree", "grin", "car", {"text": "sun", "image": None}, "star"]

    def loss_and_grads(loss):
        columns = [model.preprocess(col) for col in (anchors, positives, negatives)]
        model.zero_grad()
        value = loss(columns, None)
        value.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        return value.item(), grads

    kwargs = dict(temperature=0.05, hard_negative_scope="own", modality_weight=0.3, symmetric=True)
    plain_value, plain_grads = loss_and_grads(MultimodalInfoNCELoss(model, **kwargs))
    cached = CachedMultimodalInfoNCELoss(model, mini_batch_size=2, **kwargs)
    state = dict(vars(cached))
    cached_value, cached_grads = loss_and_grads(cached)
    assert vars(cached) == state  # no per-batch state kept on the loss
    assert cached_value == pytest.approx(plain_value, abs=1e-5)
    assert plain_grads and set(plain_grads) == set(cached_grads)
    assert any(g.abs().max() > 0 for g in plain_grads.values())
    for name in plain_grads:
        assert torch.allclose(cached_grads[name], plain_grads[name], atol=1e-5), name


def dist_batch():
    """8 (anchor, positive, negative) rows; duplicate positives sit on different ranks (rows 1 and 6)."""
    from PIL import Image

    images = [Image.new("RGB", (48, 48), (30 * i, 255 - 30 * i, 90)) for i in range(8)]
    anchors = [images[i] if i % 2 else f"query {i}" for i in range(8)]
    positives = ["grin", "heart", {"text": "cat", "image": images[3]}, "sun", images[5], "moon", "heart", "star"]
    negatives = ["dog", {"text": "tree", "image": images[0]}, "heart", "car", "sun", images[2], "leaf", "rain"]
    return anchors, positives, negatives


@pytest.mark.slow
def test_gather_across_two_processes_matches_one_process(tmp_path):
    """torchrun --nproc_per_node=2 (gloo, CPU): loss and averaged gradients equal the single-process batch."""
    import os
    import subprocess
    import sys

    path = tiny_model("qwen2_vl")
    out = tmp_path / "dist.pt"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         os.path.join(root, "tests", "dist_loss_worker.py"), path, str(out)],
        capture_output=True, text=True, env=env, cwd=root, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    distributed = torch.load(out)

    model = build_model(path, recipe="e5v", dtype=torch.float64).eval()  # float64: no summation-order noise
    loss_fn = MultimodalInfoNCELoss(model, temperature=0.05, symmetric=True, hard_negative_scope="own", modality_weight=0.3)
    features = [model.preprocess(col) for col in dist_batch()]
    assert all("mm_st_groups" in f for f in features)  # mixed columns: the gather sees grouped embeddings
    value = loss_fn(features, None)
    value.backward()
    assert distributed["loss"].item() == pytest.approx(value.item(), abs=1e-9)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == set(distributed) - {"loss"}
    for name, grad in grads.items():
        assert torch.allclose(distributed[name], grad, rtol=1e-7, atol=1e-9), (name, (distributed[name] - grad).abs().max().item(), grad.abs().max().item())
