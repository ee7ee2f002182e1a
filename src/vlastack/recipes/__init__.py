"""Named, fully specified presets: ``get_recipe(name, **overrides) -> Recipe``; ``RECIPES``.

See ``presets.py`` for each system's paper and what was scaled down to train on a CPU.
"""

from vlastack.recipes import flower as _flower  # noqa: F401  (FLOWER)
from vlastack.recipes import hierarchy as _hierarchy  # noqa: F401  (System 2 / System 1)
from vlastack.recipes import presets as _presets  # noqa: F401  (registers the recipes)
from vlastack.recipes.base import RECIPES, TRAIN_KEYS, Recipe, get_recipe

__all__ = ["RECIPES", "TRAIN_KEYS", "Recipe", "get_recipe"]
