"""docs/architecture.md "Add a recipe", followed step by step: a toy recipe declared in one module's worth of code
(its prompts, paper facts, training config class, evaluation prompts and paper model, registered with one call), its
dry run on the embedded default, and the views that list it -- until it is unregistered."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets
import pytest

from mm_st import templates
from mm_st.modality import IMAGE, IMAGE_TEXT, TEXT
from mm_st.recipes import PaperModel, Recipe, RecipeSpec, registered
from mm_st.training import CONFIGS
from mm_st.training.cli import main
from mm_st.training.config import EMBEDDED_COMMON, config_field
from mm_st.training.data import MMEBTrainData, Sources
from mm_st.training.stage import StageConfig

# -- the recipe's module: steps 1-4 of the guide -------------------------------------------------------------------

# 1. its prompts, exactly as the paper's code writes them (the training format defaults to the same text)
PROMPTS = Recipe(
    "toy",
    prompts={TEXT: "Toy text: <sent>", IMAGE: "<image>\nToy image.", IMAGE_TEXT: "<image>\nToy: <sent>"},
    instructed={k: "<image>\n{instruction}: <sent>" for k in (TEXT, IMAGE, IMAGE_TEXT)},
    source="Toy paper (this test), section 3",
)

# 2. the paper's training values, with their source
FACTS = {"temperature": 0.07, "learning_rate": 3e-4, "source": "Toy paper, table 9"}


# 3. its training config: the paper's values as defaults (each with its source) and where its data comes from
@dataclass
class ToyConfig(MMEBTrainData, StageConfig):
    """The toy recipe: MMEB-train layout, in-batch negatives."""

    recipe: ClassVar[str] = "toy"
    embedded_overrides: ClassVar[dict[str, Any]] = {
        **EMBEDDED_COMMON, "global_batch_size": 8, "max_steps": 3, "max_rows_per_dataset": 16,
        "data_configs": ["ImageNet_1K", "MSCOCO_t2i"],
    }

    temperature: float = config_field(FACTS["temperature"], FACTS["source"])
    learning_rate: float = config_field(FACTS["learning_rate"], FACTS["source"])

    def sources(self, output_dir: Path, write: bool = True) -> Sources:
        return self.mmeb_sources(output_dir, write)

    def check_sources(self, sources: Sources) -> None:
        super().check_sources(sources)
        self.check_mmeb_sources(sources)

    def load_datasets(self, sources: Sources) -> dict[str, datasets.Dataset]:
        return self.load_mmeb(sources, self.num_negatives)


# 4. one declaration, registered with one call (here for the test only: `registered` removes it afterwards)
SPEC = RecipeSpec(
    "toy", PROMPTS, config=ToyConfig, facts=FACTS,
    task_prompts={"MSCOCOT2IRetrieval": {"query": "Find the toy picture of this caption."}},
    paper_models=(PaperModel("mm_st/toy-7b", "org/toy-7b", "https://github.com/org/toy"),),
)


@pytest.fixture
def toy():
    with registered(SPEC):
        yield SPEC
    assert "toy" not in templates.RECIPES and "toy" not in CONFIGS  # cleaned up


# -- what the guide says you get ------------------------------------------------------------------------------------


@pytest.mark.slow  # writes the embedded data and tiny backbone (several seconds)
def test_the_dry_run_of_the_embedded_default_prints_the_checked_plan(toy, tmp_path, capsys):
    assert main(ToyConfig, ["--dry-run", "--output-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mm_st toy recipe (embedded default: offline, CPU)\n")
    assert "data: ImageNet_1K 16 rows, MSCOCO_t2i 16 rows = 32 rows" in out
    assert "steps: 3 optimizer steps" in out
    assert "  temperature = 0.07   (Toy paper, table 9)" in out
    assert "  learning_rate = 0.001   (embedded default (tiny backbone, bundled emoji data, CPU-sized))" in out
    assert out.rstrip().endswith("dry run: plan checked, nothing trained")
    assert not (tmp_path / "run" / "model").exists()  # nothing trained


def test_the_recipe_shows_up_in_every_view_and_its_prompts_render(toy):
    from mm_st.evaluation.instructions import recipe_task_prompts
    from mm_st.evaluation.model import paper_models

    assert templates.RECIPES["toy"] is PROMPTS and templates.TRAIN_RECIPES["toy"].fmt == "train"
    assert templates.RECIPE_FACTS["toy"] == FACTS and CONFIGS["toy"] is ToyConfig
    assert recipe_task_prompts()["toy"]["MSCOCOT2IRetrieval"] == {"query": "Find the toy picture of this caption."}
    (meta,) = [m for m in paper_models() if m.name == "mm_st/toy-7b"]
    assert meta.loader_kwargs == {"model_path": "org/toy-7b", "recipe": "toy"} and meta.use_instructions
    assert templates.render_prompt("toy", "llava_next", text="a cat") == "Toy text: a cat"
    assert templates.render_prompt("toy", "llava_next", text="a cat", instruction="Find it") == "Find it: a cat"


def test_the_recipe_is_gone_from_the_views_once_unregistered():
    from mm_st.evaluation.instructions import recipe_task_prompts
    from mm_st.evaluation.model import paper_models

    with registered(SPEC):
        assert "toy" in recipe_task_prompts()
    assert "toy" not in templates.RECIPES and "toy" not in templates.RECIPE_FACTS and "toy" not in CONFIGS
    assert "toy" not in recipe_task_prompts() and "mm_st/toy-7b" not in [m.name for m in paper_models()]
    with pytest.raises(ValueError, match="Unknown recipe 'toy'"):
        templates.get_recipe("toy")
