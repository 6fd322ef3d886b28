"""The `run` pipeline: recipes (every option, declared once, versioned), the stages, and the atomic,
locked output directory they write."""

from .recipe import OPTIONS, RECIPE_VERSION, STAGES, Recipe, read_recipe, resolve
from .run import RunResult, default_out, run

__all__ = ["OPTIONS", "RECIPE_VERSION", "STAGES", "Recipe", "RunResult", "default_out", "read_recipe", "resolve", "run"]
