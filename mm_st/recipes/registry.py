"""The recipe registry: a recipe declares what mm_st knows about it in one :class:`RecipeSpec` and registers it with
one call, :func:`register_recipe` (as peft's ``register_peft_method``).

What a spec holds: its prompts in the two formats (:class:`Recipe`: ``inference``, what the released model is
served with, and ``train``, what the reference training code feeds), the paper's training facts its config reads
(``facts``, with their ``source``), its evaluation prompts per mteb task, the paper models mteb can build with it,
and its training config class (the class, or ``"module:Class"``, imported only by :mod:`mm_st.training`, so reading
a recipe's prompts never imports training code).

Everything else reads this registry through views that list the registered recipes:
``mm_st.templates.RECIPES`` / ``TRAIN_RECIPES`` / ``RECIPE_FACTS``, ``mm_st.training.CONFIGS``,
``mm_st.evaluation.paper_models()`` and ``mm_st.evaluation.instructions.recipe_task_prompts()``. mm_st's own recipes
are the modules of :mod:`mm_st.recipes` (one each); ``tests/training/test_add_a_recipe.py`` adds one from outside.

Example:
    >>> from mm_st.recipes import registry
    >>> spec = registry.get_spec("e5v")
    >>> spec.prompts.prompts["text"], spec.config, spec.paper_models[0].weights
    ('<sent>\\nSummary above sentence in one word: ', 'mm_st.training.e5v:E5VConfig', 'royokong/e5-v')
    >>> toy = registry.RecipeSpec("toy", registry.Recipe("toy", {"text": "<sent>"}, {"text": "{instruction} <sent>"}))
    >>> with registry.registered(toy):
    ...     "toy" in registry.names()
    True
    >>> "toy" in registry.names()
    False
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from mm_st.modality import PROMPTED as MODALITIES  # the keys of a recipe's prompts (mm_st.modality names)

INSTRUCTION = "{instruction}"


@dataclass(frozen=True)
class Recipe:
    """Exact prompt strings of one paper, in one format (``inference`` or ``train``).

    Attributes:
        prompts: ``text`` / ``image`` / ``image+text`` prompts (keyed by :mod:`mm_st.modality` names) used when no instruction is given.
        instructed: the same three, used with an instruction (``{instruction}`` is replaced by it).
        query_prompts: no-instruction prompts for queries (``task="query"``) when they differ (MM-Embed).
        instruct_documents: whether documents (``task="document"``) also get the instruction.
        image_block: how ``<image>`` is written, per family (``"*"``: every family; the value may use
            ``{placeholder}`` for the family's own), e.g. mmE5's Mllama rewrite, VLM2Vec's bare
            ``<|image_pad|>`` on Qwen2-VL. Families not listed use their placeholder.
        wrapped: whether the prompt goes inside the family's chat wrapper.
        train_wrappers: for a training format, the wrapper used in place of each detected wrapper
            (``"*"``: any other); empty: the detected wrapper.
        extra_prompts: other named full prompts of the paper (CIRR, FashionIQ, ...) for ``prompt=``.
        instruction_marker: the text that ends a query's instruction, for pooling that leaves the instruction
            out (MM-Embed's ``"\\nQuery: "``, read by ``build_model(pooling="latent_attention")``); None: none.
        video_prompts / video_instructed: ``video`` / ``video+text`` prompts (keyed by :mod:`mm_st.modality` names)
            where the recipe writes a video otherwise than an image (VLM2Vec-V2); a key not given: the video takes
            the prompt of an image (``image`` / ``image+text``).
    """

    name: str
    prompts: dict[str, str]
    instructed: dict[str, str]
    query_prompts: dict[str, str] = field(default_factory=dict)
    instruct_documents: bool = True
    image_block: dict[str, str] = field(default_factory=dict)
    wrapped: bool = False
    train_wrappers: dict[str, str] = field(default_factory=dict)
    extra_prompts: dict[str, str] = field(default_factory=dict)
    instruction_marker: str | None = None
    video_prompts: dict[str, str] = field(default_factory=dict)
    video_instructed: dict[str, str] = field(default_factory=dict)
    fmt: str = "inference"
    source: str = ""

    @property
    def uses_instruction(self) -> bool:
        """Whether an instruction reaches the model (False for E5-V)."""
        return any(INSTRUCTION in p for p in self.instructed.values())


def rows_as_written(recipe: Recipe, source: str) -> Recipe:
    """The training format of a recipe whose training code feeds the rows as written: its inference prompts without
    their final ``\\n`` (which only inference adds)."""

    def strip(prompts: dict[str, str]) -> dict[str, str]:
        return {k: p[:-1] if p.endswith("\n") else p for k, p in prompts.items()}

    return replace(recipe, prompts=strip(recipe.prompts), instructed=strip(recipe.instructed), fmt="train", source=source)


@dataclass(frozen=True)
class PaperModel:
    """Public weights of the paper that mm_st's recipe builds (an mteb model entry named ``name``)."""

    name: str  # e.g. "mm_st/e5-v"
    weights: str  # Hub id of the released weights
    training_code: str  # URL of the public training code
    use_instructions: bool | None = None  # None: whether the recipe's prompts use an instruction


@dataclass(frozen=True)
class RecipeSpec:
    """Everything mm_st knows about one recipe; :func:`register_recipe` makes it known everywhere.

    Attributes:
        prompts: the inference format (``fmt="inference"``).
        train_prompts: the training format (what the reference training code feeds); default: ``prompts`` as ``train``.
        config: its training config class (a ``mm_st.training.RecipeConfig`` subclass whose ``recipe`` is ``name``),
            or ``"module:Class"``; None: a recipe for inference and evaluation only.
        facts: the paper's training values its config reads, with a ``source`` entry.
        task_prompts: ``{mteb task name: {"query": ..., "document": ...}}`` replacing the task's prompts for this
            recipe (a value may hold ``{instruction}``: the task's own instruction for that side).
        mmeb_instructions: whether the M-BEIR tasks that have an MMEB counterpart get MMEB's wording
            (:mod:`mm_st.evaluation.instructions`), under ``task_prompts``.
        paper_models: the paper's released weights that mteb can build with this recipe.
        processor_settings: ``{family: {processor attribute: {setting: value}}}``: what the paper's code sets on
            the backbone's processor (``"image_processor"`` / ``"video_processor"``), set by ``build_model`` and
            saved with the model (VLM2Vec-V2's Qwen2-VL pixel bounds); a family not listed keeps its own.
    """

    name: str
    prompts: Recipe
    train_prompts: Recipe | None = None
    config: type | str | None = None
    facts: Mapping[str, object] = field(default_factory=dict)
    task_prompts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    mmeb_instructions: bool = False
    paper_models: tuple[PaperModel, ...] = ()
    processor_settings: Mapping[str, Mapping[str, Mapping[str, object]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prompts.name != self.name:
            raise ValueError(f"recipe {self.name!r}: its prompts are named {self.prompts.name!r}.")
        if self.train_prompts is None:
            object.__setattr__(self, "train_prompts", replace(self.prompts, fmt="train"))
        if (self.prompts.fmt, self.train_prompts.fmt) != ("inference", "train"):
            raise ValueError(f"recipe {self.name!r}: prompts must be fmt 'inference' and train_prompts fmt 'train'.")
        configured = getattr(self.config, "recipe", self.name)
        if configured != self.name:
            raise ValueError(f"recipe {self.name!r}: its config class {self.config.__name__} says recipe {configured!r}.")


_SPECS: dict[str, RecipeSpec] = {}


def register_recipe(spec: RecipeSpec) -> RecipeSpec:
    """Make a recipe known to templates, training, evaluation and mteb; a name already registered is refused."""
    if spec.name in _SPECS:
        raise ValueError(f"A recipe named {spec.name!r} is already registered ({_SPECS[spec.name].prompts.source}).")
    _SPECS[spec.name] = spec
    return spec


def unregister_recipe(name: str) -> RecipeSpec:
    """Remove a registered recipe (a test's toy recipe); returns its spec."""
    if name not in _SPECS:
        raise KeyError(f"No recipe named {name!r} is registered. Known recipes: {', '.join(sorted(_SPECS))}.")
    return _SPECS.pop(name)


@contextmanager
def registered(spec: RecipeSpec) -> Iterator[RecipeSpec]:
    """``spec`` registered for the ``with`` block, unregistered after it (also when the block raises)."""
    register_recipe(spec)
    try:
        yield spec
    finally:
        unregister_recipe(spec.name)


def get_spec(name: str) -> RecipeSpec:
    if name not in _SPECS:
        raise ValueError(f"Unknown recipe {name!r}. Known recipes: {', '.join(sorted(_SPECS))}.")
    return _SPECS[name]


def names() -> list[str]:
    """The registered recipes, in registration order."""
    return list(_SPECS)


def specs() -> list[RecipeSpec]:
    return list(_SPECS.values())


class Lazy(Mapping):
    """A read-only mapping built by ``build()`` on first use (a recipe's table read from a module that ``import
    mm_st`` should not load, e.g. the evaluation's dataset list)."""

    def __init__(self, build: Callable[[], Mapping[str, Any]]) -> None:
        self._build, self._items = build, None

    def _table(self) -> Mapping[str, Any]:
        if self._items is None:
            self._items = dict(self._build())
        return self._items

    def __getitem__(self, key: str) -> Any:
        return self._table()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


class View(Mapping):
    """A read-only mapping ``recipe name -> part of its spec`` over the registered recipes (recipes whose part is
    empty are left out); it follows later registrations."""

    def __init__(self, part: Callable[[RecipeSpec], Any], what: str) -> None:
        self._part, self._what = part, what

    def _items(self) -> dict[str, Any]:
        return {spec.name: value for spec in _SPECS.values() if (value := self._part(spec))}

    def __getitem__(self, name: str) -> Any:
        items = self._items()
        if name not in items:
            raise KeyError(name)
        return items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return f"<{self._what}: {self._items()!r}>"
