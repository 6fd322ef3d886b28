"""Command-line parameters made from option declarations (tnncompress.options): each declared option
becomes one typer parameter, with its flag, type, default, help and help panel; nothing is restated."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Annotated

import typer
from rich.markup import escape

from tnncompress.options import Option

METAVARS = {str: "TEXT", int: "INT", float: "FLOAT"}


def annotation(o: Option):
    """The typer annotation of a declared option, for commands that take it too (eval, inspect)."""
    return parameter(o).annotation


def parameter(o: Option) -> inspect.Parameter:
    base = next((a for a in typing.get_args(o.hint) if a is not type(None)), o.hint) \
        if type(None) in typing.get_args(o.hint) else o.hint
    item = typing.get_args(base)[0] if typing.get_origin(base) is list else base
    metavar = "|".join(map(str, o.choices)) if o.choices else METAVARS.get(item)
    if o.argument:
        info = typer.Argument(help=escape(o.help), show_default=False, metavar=o.name.upper())
    else:
        names = [f"{o.flag}/--no-{o.flag[2:]}"] if base is bool else [o.flag, *([o.short] if o.short else [])]
        # rich markup is on for --help: "[0, 1]" in a help must print as it is
        info = typer.Option(*names, help=escape(o.help), rich_help_panel=o.title, metavar=metavar,
                            show_default=o.default not in (None, []))
    default = None if o.default == [] else o.default
    return inspect.Parameter(o.flat, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[base if base is bool else base | None, info])


def command(fn: Callable[..., None], options: list[Option], extra: list[inspect.Parameter]) -> Callable[..., None]:
    """`fn(given, **extra)` as a typer command whose parameters are the declared options and `extra`; the
    options' values arrive in `given` (flat name -> value), those given on the command line only (not
    their defaults, which must not override a recipe)."""
    declared = {o.flat for o in options}

    def wrapper(ctx: typer.Context, **kwargs) -> None:
        given = {k: v for k, v in kwargs.items() if k in declared and ctx.get_parameter_source(k).name != "DEFAULT"}
        fn(given, **{k: v for k, v in kwargs.items() if k not in declared})

    params = [parameter(o) for o in options if o.argument] + [parameter(o) for o in options if not o.argument]
    ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    wrapper.__signature__ = inspect.Signature([ctx, *params, *extra])
    wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
    return wrapper
