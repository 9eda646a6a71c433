"""The recipe registry (mm_st.recipes): each recipe registers once, and the lists other layers read are views of it
with the contents they always had (issue 31 item 1)."""

import pytest

from mm_st import templates
from mm_st.recipes import PaperModel, Recipe, RecipeSpec, get_spec, register_recipe, registered, unregister_recipe
from mm_st.recipes.registry import specs
from mm_st.training import CONFIGS, E5VConfig, MME5Config, MMEmbedConfig, VLM2VecConfig, VLM2VecV2Config, config_class

BUILT_IN = ["e5v", "mme5", "mmembed", "vlm2vec", "vlm2vec_v2"]


def test_the_built_in_recipes_are_registered_once_each():
    assert sorted(spec.name for spec in specs()) == BUILT_IN


def test_templates_views_equal_the_registry():
    assert dict(templates.RECIPES) == {spec.name: spec.prompts for spec in specs()}
    assert dict(templates.TRAIN_RECIPES) == {spec.name: spec.train_prompts for spec in specs()}
    assert dict(templates.RECIPE_FACTS) == {spec.name: spec.facts for spec in specs() if spec.facts}
    assert all(templates.TRAIN_RECIPES[name].fmt == "train" for name in BUILT_IN)
    assert sorted(templates.RECIPE_FACTS) == ["e5v", "mme5", "vlm2vec", "vlm2vec_v2"]  # MM-Embed published no training values


def test_training_configs_view_equals_the_registry():
    assert dict(CONFIGS) == {"e5v": E5VConfig, "vlm2vec": VLM2VecConfig, "vlm2vec_v2": VLM2VecV2Config, "mme5": MME5Config,
                             "mmembed": MMEmbedConfig}
    assert dict(CONFIGS) == {spec.name: config_class(spec) for spec in specs()}


def test_paper_values_have_one_home_the_recipe_declaration():
    assert E5VConfig().lora_r == get_spec("e5v").facts["lora_r"] == 64
    assert VLM2VecConfig().max_steps == get_spec("vlm2vec").facts["steps"] == 2000
    assert MME5Config().learning_rate == get_spec("mme5").facts["learning_rate"] == 1e-5
    assert all(spec.facts["source"] for spec in specs() if spec.facts)


def test_evaluation_views_equal_the_registry():
    from mm_st.evaluation.instructions import VLM2VEC_MMEB_PROMPTS, recipe_task_prompts
    from mm_st.evaluation.model import paper_models

    assert [m.name for m in paper_models()] == [p.name for spec in specs() for p in spec.paper_models]
    assert {m.name: m.loader_kwargs["recipe"] for m in paper_models()} == {
        "mm_st/e5-v": "e5v", "mm_st/mmE5-mllama-11b-instruct": "mme5", "mm_st/VLM2Vec-LLaVa-Next": "vlm2vec",
        "mm_st/VLM2Vec-V2.0": "vlm2vec_v2"}
    tables = recipe_task_prompts()
    assert sorted(tables) == BUILT_IN
    for spec in specs():
        assert {task: tables[spec.name][task] for task in spec.task_prompts} == dict(spec.task_prompts)
    assert get_spec("vlm2vec").task_prompts is VLM2VEC_MMEB_PROMPTS
    # VLM2Vec-V2: v1's image tasks, and its own text on the 45 video and visual-document tasks
    from mm_st.recipes.vlm2vec_v2 import MMEB_V2_PROMPTS

    assert get_spec("vlm2vec_v2").task_prompts == {**VLM2VEC_MMEB_PROMPTS, **MMEB_V2_PROMPTS}
    assert len(MMEB_V2_PROMPTS) == 45 and not set(MMEB_V2_PROMPTS) & set(VLM2VEC_MMEB_PROMPTS)
    assert tables["mmembed"]["MSCOCOT2IRetrieval"] == {"query": templates.MBEIR_INSTRUCTIONS["MSCOCOT2IRetrieval"]}


def _toy(**changes):
    return RecipeSpec("toy", Recipe("toy", {"text": "<sent>"}, {"text": "<sent>"}), **changes)


def test_a_name_registers_once_and_unregistering_an_unknown_name_says_which():
    with pytest.raises(ValueError, match="A recipe named 'e5v' is already registered"):
        register_recipe(RecipeSpec("e5v", templates.RECIPES["e5v"]))
    with pytest.raises(KeyError, match="No recipe named 'toy' is registered"):
        unregister_recipe("toy")
    with pytest.raises(ValueError, match="Unknown recipe 'toy'. Known recipes: e5v, mme5, mmembed, vlm2vec"):
        get_spec("toy")


def test_a_spec_that_contradicts_itself_is_refused():
    with pytest.raises(ValueError, match="recipe 'toy': its prompts are named 'other'"):
        RecipeSpec("toy", Recipe("other", {}, {}))
    with pytest.raises(ValueError, match="recipe 'toy': its config class E5VConfig says recipe 'e5v'"):
        _toy(config=E5VConfig)
    with pytest.raises(ValueError, match="recipe 'toy': its config class mm_st.training.e5v:E5VConfig says recipe 'e5v'"):
        config_class(_toy(config="mm_st.training.e5v:E5VConfig"))


def test_registered_removes_the_recipe_even_when_the_block_fails():
    spec = _toy(paper_models=(PaperModel("mm_st/toy", "org/toy", "https://example.org"),))
    with pytest.raises(RuntimeError), registered(spec):
        assert templates.get_recipe("toy", "train").fmt == "train"
        raise RuntimeError("boom")
    assert "toy" not in templates.RECIPES
