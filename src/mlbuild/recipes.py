"""Load recipes/*.toml into validated Recipe models and check how they refer to each other."""

import difflib
import tomllib
from pathlib import Path

from pydantic import ValidationError

from .errors import InputError
from .models import PATTERN_HINTS, Recipe
from .validation import describe


def load_recipe(path: Path, label: str) -> Recipe:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{label}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{label}: cannot read: {error}") from None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        raise InputError(describe(error, label, Recipe, PATTERN_HINTS)) from None
    if recipe.name != path.stem:
        raise InputError(f"{label}: name: expected {path.stem!r} (the file's name), got {recipe.name!r}")
    return recipe


def load_recipes(project: Path, templates: Path) -> dict[str, Recipe]:
    """Every recipe of the project, checked for duplicates and dangling references."""
    recipes: dict[str, Recipe] = {}
    labels: dict[str, str] = {}
    for path in sorted((project / "recipes").glob("*.toml")):
        label = f"recipes/{path.name}"
        recipe = load_recipe(path, label)
        recipes[recipe.name] = recipe
        labels[recipe.name] = label
    for name, recipe in recipes.items():
        _check_references(recipe, labels[name], recipes, project, templates)
    return recipes


def _check_references(recipe: Recipe, label: str, recipes: dict, project: Path, templates: Path) -> None:
    if recipe.source is not None:
        owner = recipes.get(recipe.source)
        if owner is None:
            raise InputError(f"{label}: source: unknown recipe {recipe.source!r}{_did_you_mean(recipe.source, recipes)}")
        if not owner.sources:
            raise InputError(f"{label}: source: recipe {recipe.source!r} has no sources of its own")
    for arch in recipe.arches:
        for index, dep in enumerate(recipe.for_arch(arch).depends):
            field = "depends" if dep in recipe.depends else f"arch.{arch}.depends"
            if dep not in recipes:
                raise InputError(f"{label}: {field}: unknown recipe {dep!r}{_did_you_mean(dep, recipes)}")
            if not recipes[dep].build:
                raise InputError(f"{label}: {field}: {dep!r} is a source-only recipe; use source = {dep!r}")
            if arch not in recipes[dep].arches:
                raise InputError(f"{label}: {field}: {dep!r} is not built for {arch}")
    if recipe.build:
        _template_exists(templates, f"build/{recipe.build}.sh.j2", label, "build")
    for field, names in [("files", recipe.files)] + [(f"arch.{a}.files", o.files) for a, o in recipe.arch.items()]:
        for name in names:
            _template_exists(templates, name, label, field)
    for patch in recipe.patches:
        _file_inside(project / "recipes" / recipe.name, patch, label, "patches")


def _template_exists(templates: Path, name: str, label: str, field: str) -> None:
    _file_inside(templates, name, label, field)


def _file_inside(folder: Path, name: str, label: str, field: str) -> None:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise InputError(f"{label}: {field}: {name!r} points outside {folder.name}/")
    if not path.is_file():
        raise InputError(f"{label}: {field}: no file {folder.name}/{name}")


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
