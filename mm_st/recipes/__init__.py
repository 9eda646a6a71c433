"""mm_st's recipes: one module each declares a recipe (prompts, paper facts, evaluation prompts, paper models, its
training config class) and registers it with one call (:func:`~mm_st.recipes.registry.register_recipe`); importing
this package registers them. ``docs/architecture.md`` ("Add a recipe") says how to add one.
"""

from mm_st.recipes import e5v, mme5, mmembed, vlm2vec, vlm2vec_v2  # noqa: F401  (each registers its recipe)
from mm_st.recipes.registry import (PaperModel, Recipe, RecipeSpec, get_spec, register_recipe, registered,
                                    unregister_recipe)

__all__ = ["PaperModel", "Recipe", "RecipeSpec", "get_spec", "register_recipe", "registered", "unregister_recipe"]
