"""A recipe's processor settings (RecipeSpec.processor_settings): set by build_model, saved, reloaded by plain
sentence-transformers. VLM2Vec-V2 (TIGER-AI-Lab/VLM2Vec @ 6e1e1d4): src/model/processor.py:121-133 load_processor
gives Qwen2-VL's image processor size={"shortest_edge": resize_min_pixels, "longest_edge": resize_max_pixels},
src/arguments.py:45-46 defaults 28*28*4 = 3136 and 28*28*1280 = 1003520; video frames go through that image
processor (vlm_backbone/qwen2_vl/processing_qwen2_vl.py:145), so mm_st's video processor gets the same bounds."""

from types import SimpleNamespace

import pytest
from PIL import Image
from sentence_transformers import SentenceTransformer
from transformers import AutoProcessor

from mm_st import build_model
from mm_st.builder import use_recipe_processor_settings
from mm_st.recipes import registry
from mm_st.templates import get_family
from mm_st.testing import tiny_model

V2_SIZE = {"shortest_edge": 3136, "longest_edge": 1003520}


def _sizes(processor):
    return [{k: getattr(processor, part).size[k] for k in V2_SIZE} for part in ("image_processor", "video_processor")]


def _grids(processor):
    image = Image.new("RGB", (1200, 1000), "white")  # over 1003520 pixels: the bounds decide its grid
    frames = [Image.new("RGB", (30, 20), "white")] * 2  # under 3136 pixels
    return (processor.image_processor(images=[image], return_tensors="np")["image_grid_thw"].tolist(),
            processor.video_processor(videos=[frames], return_tensors="np")["video_grid_thw"].tolist())


def test_vlm2vec_v2_sets_vlm2vec_s_pixel_bounds_and_a_plain_reload_keeps_them(tmp_path):
    model = build_model(tiny_model("qwen2_vl"), recipe="vlm2vec_v2")
    assert _sizes(model[0].processor) == [V2_SIZE, V2_SIZE]
    assert model[0].processor.video_processor.cap_pixels_per_frame is False  # per frame only, as an image processor
    grids = _grids(model[0].processor)
    # smart_resize, factor 28: 1000 x 1200 over 1003520 pixels -> 896 x 1092 (64 x 78 patches of 14); 20 x 30 under
    # 3136 -> 56 x 84 (4 x 6)
    assert grids == ([[1, 64, 78]], [[1, 4, 6]])
    assert _grids(AutoProcessor.from_pretrained(tiny_model("qwen2_vl"))) != grids  # the checkpoint's own sizes
    model.save(str(tmp_path))
    reloaded = SentenceTransformer(str(tmp_path))[0].processor
    assert _sizes(reloaded) == [V2_SIZE, V2_SIZE] and _grids(reloaded) == grids


def test_settings_for_a_processor_the_backbone_lacks_are_refused_naming_it():
    toy = registry.RecipeSpec("toy_sizes", registry.Recipe("toy_sizes", {"text": "<sent>"}, {"text": "<sent>"}),
                              processor_settings={"qwen2_vl": {"video_processor": {"size": V2_SIZE}}})
    transformer = SimpleNamespace(processor=SimpleNamespace(image_processor=object()))
    with registry.registered(toy), pytest.raises(ValueError, match="sets the video_processor of qwen2_vl processors"):
        use_recipe_processor_settings(transformer, "toy_sizes", get_family("qwen2_vl"))
    use_recipe_processor_settings(transformer, "vlm2vec", get_family("qwen2_vl"))  # v1 declares none: nothing set
