"""Recipes: per-method training settings for a setting the published schedules do not fit.

The numbered experiments (scripts/flags/) carry each paper's end-to-end schedule:
backbone learning-rate multipliers and step decays sized for fine-tuning AlexNet or
VGG16 on images. A hash head trained on frozen features (`--backbone=features`) needs
other settings: a few thousand feature rows overfit a head in tens of epochs, and some
published learning rates diverge without the backbone's slower updates. A recipe is a
flagfile of such settings (`wsdhash/recipes/<kind>/default.flags`, with a method's own
`<kind>/<method>.flags` on top), chosen on a validation carve of the training rows,
never on the queries; each file names the data and the command it was chosen with.

`python -m wsdhash.train` applies a recipe as defaults: a flag given on the command line
or in a flagfile keeps its value, every other flag the recipe names takes the recipe's.
So a recipe changes nothing a user asked for, and `flags.txt` records the values used.

This package holds data and its reader only (no flags: they live in the entry points).
"""

from __future__ import annotations

import dataclasses
import os

KINDS = ("features",)
_HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One method's recipe.

    Attributes:
        kind: what it is for ("features": a head on frozen features).
        method: the registered method.
        path: the flagfile it was read from.
        values: flag name -> value as written (strings, parsed by the flag), in order.
    """

    kind: str
    method: str
    path: str
    values: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.method}"


def recipe_path(kind: str, method: str) -> str:
    """Where the recipe of `method` for `kind` lives (it may not exist)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown recipe kind {kind!r}; expected one of {KINDS}.")
    return os.path.join(_HERE, kind, f"{method}.flags")


def parse_flagfile_lines(path: str, lines) -> dict[str, str]:
    """{flag: value} of `--name=value` lines ('#' comments and blank lines skipped;
    `--name` alone is a boolean set to true, `--noname` one set to false).

    Raises:
        ValueError: a line that is not a flag, or a nested --flagfile (a recipe is one
            file, so that what it sets can be listed).
    """
    values = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("--"):
            raise ValueError(f"{path}:{number}: expected --flag=value, got {line!r}.")
        name, has_value, value = line[2:].partition("=")
        if name == "flagfile":
            raise ValueError(f"{path}:{number}: a recipe cannot include another flagfile.")
        if not has_value:
            name, value = (name[2:], "false") if name.startswith("no") else (name, "true")
        values[name] = value
    return values


DEFAULT = "default"  # <kind>/default.flags: what every method's recipe starts from


def _read(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as file:
        return parse_flagfile_lines(path, file)


def load_recipe(kind: str, method: str) -> Recipe | None:
    """The recipe of `method` for `kind`: `<kind>/default.flags` with `<kind>/<method>.flags`
    on top (the method's file wins); None when neither exists."""
    default, own = recipe_path(kind, DEFAULT), recipe_path(kind, method)
    paths = [path for path in (default, own) if os.path.exists(path)]
    if not paths:
        return None
    values = {}
    for path in paths:
        values.update(_read(path))
    return Recipe(kind, method, " + ".join(paths), values)
