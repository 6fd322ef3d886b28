"""Options declared once.

Each stage owns a configuration: a `Section` (a dataclass) whose fields are declared with `option()`,
which carries the default, the help, the constraints and the flat name; the annotation is the type.
The command line's flags (cli/options.py), the recipe keys (nested by section, or flat), `--set`,
validation and the documentation's option table all come from these declarations: a new option is one
field.

Names: field `steps` of section `distill` (flat prefix `kd_`) is `distill.steps` in a recipe, `kd_steps`
as a flat key (the recipe format of version 1, still read) and `--kd-steps` on the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import operator
from dataclasses import dataclass, field

from .errors import UsageError, brief, opt
from .registry import suggestion
from .schema import coerce, hints


@dataclass(frozen=True)
class Option:
    help: str
    flat: str | None = None  # default: the section's prefix + the field name
    short: str | None = None  # a one-letter alias on the command line, e.g. "-f"
    choices: tuple | None = None
    minimum: float | None = None  # bounds: inclusive minimum/maximum, exclusive above/below
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    execution: bool = False  # changes how a run executes, not what it computes (a resumed run may change it)
    reuse: bool = True  # a batch reuses a completed run only with the same value; False: the option changes no
    # artifact and no measured figure (the gates, which are judged again; data-loading workers)
    argument: bool = False  # the command's positional argument
    # filled in when the section is declared:
    section: str = ""
    title: str = ""
    name: str = ""
    hint: object = None
    default: object = None

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def flag(self) -> str:
        return "--" + self.flat.replace("_", "-")

    def check(self, value: object) -> None:
        for v in (value if isinstance(value, list) else [value]) if value is not None else []:
            if self.choices is not None and v not in self.choices:
                names = [str(c) for c in self.choices]
                raise UsageError(f"{opt(self.flat)} {brief(v)}: use one of {', '.join(names)}{suggestion(v, names)}")
            for bound, ok, words in ((self.minimum, operator.ge, "at least"), (self.maximum, operator.le, "at most"),
                                     (self.above, operator.gt, "greater than"), (self.below, operator.lt, "less than")):
                if bound is not None and not ok(v, bound):
                    raise UsageError(f"{opt(self.flat)} must be {words} {bound:g}, got {brief(v)}")


def option(default, help: str, **kwargs) -> dataclasses.Field:  # noqa: A002 (the natural name)
    """A dataclass field that is an option (a list default is copied per instance)."""
    meta = {"option": Option(help=help, **kwargs)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


class Section:
    """A stage's configuration. Subclasses are dataclasses, declared with their recipe key, the title of
    their options in --help and the docs, and the prefix of their flat names:
    `class DistillConfig(Section, name="distill", title="Distillation", prefix="kd_")`."""

    NAME, TITLE, OPTIONS = "", "", ()

    def __init_subclass__(cls, name: str = "", title: str = "", prefix: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        dataclass(cls)
        cls.NAME, cls.TITLE, types = name, title, hints(cls)
        cls.OPTIONS = tuple(
            dataclasses.replace(f.metadata["option"], flat=f.metadata["option"].flat or prefix + f.name, section=name,
                                title=title, name=f.name, hint=types[f.name],
                                default=f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls) if "option" in f.metadata)

    def check(self):
        """Validate every option's constraints, then the section's own rules (`validate`); returns self."""
        for o in self.OPTIONS:
            o.check(getattr(self, o.name))
        self.validate()
        return self

    def validate(self) -> None:
        """Rules between options of the section; raise UsageError."""


class OptionSet:
    """The options of several sections, looked up by flat or dotted name."""

    def __init__(self, sections: list[type[Section]]):
        self.sections = {s.NAME: s for s in sections}
        self.options = [o for s in sections for o in s.OPTIONS]
        self._by_key: dict[str, Option] = {}
        self.lookup = self._by_key.get
        for o in self.options:
            for key in {o.flat, o.dotted}:
                if key in self._by_key:
                    raise ValueError(f"option name {key!r} declared twice ({self._by_key[key].dotted}, {o.dotted})")
                self._by_key[key] = o

    def flatten(self, mapping: dict, source: str) -> dict[str, object]:
        """{dotted name: checked value} from a mapping whose keys are flat or dotted names, or section names
        holding a mapping of their fields."""
        items = []
        for key, value in mapping.items():
            if key and key in self.sections and isinstance(value, dict):
                items += [(f"{key}.{k}", v) for k, v in value.items()]
            else:
                items.append((str(key), value))
        unknown = [k[:40] for k, _ in items if k not in self._by_key]
        if unknown:
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            # Suggest near names rather than list every option: the list grows with each option and a
            # message must stay one readable line.
            near = sorted({m for k in unknown[:5] for m in difflib.get_close_matches(k, self._by_key, n=2)})
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise UsageError(f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:5])}{more} "
                             f"({hint}see `tnncompress run --help` for the options, by flat name or section.field)")
        return {self._by_key[k].dotted: coerce(v, self._by_key[k].hint, f"{source}: {k}") for k, v in items}

    def build(self, values: dict[str, object], section: type[Section], **more) -> Section:
        """An instance of `section` from {dotted name: value} (absent options keep their defaults)."""
        return section(**{o.name: values[o.dotted] for o in section.OPTIONS if o.dotted in values}, **more)
