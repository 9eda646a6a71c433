"""The recipe hooks are typed: what a recipe config must define is abstract (a config lacking it cannot be built, and
the error names the hook), and the ``prepare`` hook gets a :class:`~mm_st.training.config.StageContext` naming what
it may use of the running stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from mm_st.training import E5VConfig, MME5Config, MMEmbedConfig, VLM2VecConfig
from mm_st.training.config import REQUIRED_HOOKS, RecipeConfig, StageContext
from mm_st.training.data import Sources
from mm_st.training.multistage import StageSpec
from mm_st.training.outputs import RunFolder
from mm_st.training.plan import Plan
from mm_st.training.stage import StageConfig


@dataclass
class NoReader(StageConfig):
    """A recipe of one stage that says where its data is but not how it is read."""

    recipe: ClassVar[str] = "no-reader"

    def sources(self, output_dir: Path, write: bool = True) -> Sources:
        return Sources("data.jsonl", None, None)


def test_a_recipe_config_without_a_required_hook_cannot_be_built_and_the_error_names_it():
    with pytest.raises(TypeError) as error:
        NoReader()
    assert str(error.value) == ("NoReader is not a complete recipe config: it does not define load_datasets() (how its "
                                "data is read); every recipe config defines sources(), load_datasets(), run(), "
                                "plan_lines().")
    with pytest.raises(TypeError) as error:
        RecipeConfig()  # nor how it trains: a recipe is a StageConfig or a MultiStageConfig
    assert error.match(r"sources\(\) \(where its data comes from\), load_datasets\(\) \(how its data is read\), run\(\) "
                       r"\(how it trains: derive from mm_st.training.stage.StageConfig \(one stage\) or "
                       r"mm_st.training.multistage.MultiStageConfig \(several\)\), plan_lines\(\)")
    assert set(REQUIRED_HOOKS) == set(RecipeConfig.__abstractmethods__)


def test_every_recipe_defines_the_required_hooks():
    assert issubclass(E5VConfig, StageConfig) and not issubclass(MMEmbedConfig, StageConfig)
    for cls in (E5VConfig, VLM2VecConfig, MME5Config, MMEmbedConfig):
        assert not cls.__abstractmethods__, cls
        assert cls().recipe == cls.recipe


def test_a_stage_whose_config_reads_no_data_is_refused_when_the_stages_are_listed():
    @dataclass
    class ReadsNothing(MMEmbedConfig):  # inherits the whole recipe's refusal to read data
        pass

    with pytest.raises(TypeError, match=r"stage 1 \(ReadsNothing\) does not define sources\(\) \(where its data comes "
                                        r"from\), load_datasets\(\) \(how its data is read\)"):
        StageSpec(1, "nothing", ReadsNothing)


def test_the_whole_multi_stage_recipe_reads_no_data_itself():
    with pytest.raises(TypeError, match="MMEmbedConfig is a recipe of stages: each stage reads its own data"):
        MMEmbedConfig().sources(Path("out"))


def test_the_prepare_hook_gets_the_stage_context_and_nothing_else_of_the_plan(tmp_path):
    folder = RunFolder(tmp_path)
    plan = Plan(config=E5VConfig(), output_dir=tmp_path, model="m", family="llava_next",
                sources=Sources("d", None, None), rows={"nli": 8}, world_size=1, per_device_batch=8, steps=1, loss="L",
                folder=folder)
    context = plan.context()
    assert isinstance(context, StageContext)
    assert [f.name for f in dataclasses.fields(context)] == ["output_dir", "work_dir", "load_model"]
    assert context.output_dir == tmp_path
    assert context.work_dir("mining-cache") == tmp_path / "mining-cache"
    assert "mining-cache" in RunFolder(tmp_path).recorded  # a folder the hook uses is the run's own


def test_a_recipe_prepare_hook_uses_the_context(tmp_path):
    """mmE5's mining model comes from ``context.load_model`` and its cache from ``context.work_dir``."""
    import datasets

    asked = []

    def load_model(path):
        asked.append(("load_model", path))
        raise RuntimeError("stop here")

    def work_dir(name):
        asked.append(("work_dir", name))
        return tmp_path / name

    named = {"ImageNet_1K": datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]})}
    with pytest.raises(RuntimeError, match="stop here"):
        MME5Config(mining_model="miner").prepare(None, named, StageContext(tmp_path, work_dir, load_model))
    assert asked == [("load_model", "miner")]
