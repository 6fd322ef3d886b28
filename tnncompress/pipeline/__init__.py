"""The `run` pipeline: recipes (every option, versioned) and the stages threaded together."""

from .recipe import RECIPE_VERSION, Recipe, resolve
from .run import RunResult, run

__all__ = ["RECIPE_VERSION", "Recipe", "RunResult", "resolve", "run"]
