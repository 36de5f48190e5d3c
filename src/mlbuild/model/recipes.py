"""Load recipes/*.toml into validated Recipe models and check how they refer to each other."""

import difflib
import hashlib
import json
import tomllib
from functools import cache
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from mlbuild.model.arches import Arches
from mlbuild.model.config import ENGINE_VARIABLES, ENV_PREFIX
from mlbuild.code import code_hash
from mlbuild.errors import InputError
from mlbuild.model.models import PATTERN_HINTS, Option, Recipe
from mlbuild.sealed import seal, unseal
from mlbuild.trees import write_atomic
from mlbuild.model.validation import describe


def load_recipe(path: Path, label: str, text: str | None = None) -> Recipe:
    try:
        data = tomllib.loads(path.read_text() if text is None else text)
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


def load_recipes(project: Path, templates: "Path | tuple[Path, ...]", cache_file: Path | None,
                 files: dict[str, tuple[Path, str]] | None, arches: Arches) -> dict[str, Recipe]:
    """Every recipe of the project, checked for duplicates and dangling references.

    files: {name: (file, label)} when external trees add or replace recipes (external.py);
    by default the project's recipes/*.toml. templates: the folders searched for templates.
    Validated models are cached in cache_file, keyed by the label and content of every
    recipe file and of the model and loading code, so a no-op run skips parsing.
    Versions taken from a source recipe are filled in before they are cached.
    arches: the known arches (model/arches.py), which the recipes' arch names are checked against.
    """
    if files is None:
        files = {path.stem: (path, f"recipes/{path.name}") for path in sorted((project / "recipes").glob("*.toml"))}
    texts = {label: _read_recipe_file(path, label) for path, label in files.values()}
    key = _content_key(texts)
    recipes = _read_cache(cache_file, key)
    if recipes is None:
        recipes = {}
        for path, label in files.values():
            try:
                text = texts[label].decode()
            except UnicodeDecodeError:
                raise InputError(f"{label}: not UTF-8 text") from None
            recipe = load_recipe(path, label, text)
            recipes[recipe.name] = recipe
        recipes = _inherit_versions(recipes)
        _write_cache(cache_file, key, recipes)
    options = declared_options(recipes)
    folders = (templates,) if isinstance(templates, Path) else tuple(templates)
    for name, recipe in recipes.items():
        path, label = files[name]
        _check_arches(recipe, label, arches)
        _check_references(recipe, label, recipes, path.parent / name, folders, arches)
        _check_when(recipe, label, options)
    return recipes


class DeclaredOption(NamedTuple):
    recipe: str  # the first recipe (by name) that declares it
    option: Option


def declared_options(recipes: dict[str, Recipe]) -> dict[str, DeclaredOption]:
    """Every option the recipes declare; a second recipe may declare one again only word for word."""
    found: dict[str, DeclaredOption] = {}
    for name in sorted(recipes):
        for key, option in recipes[name].options.items():
            if f"{ENV_PREFIX}{key.upper()}" in ENGINE_VARIABLES:  # the environment could not set it
                raise InputError(f"recipes/{name}.toml: options.{key}: {ENV_PREFIX}{key.upper()} is a variable of mlbuild itself; choose another name")
            first = found.setdefault(key, DeclaredOption(name, option))
            if first.option != option:
                raise InputError(f"recipes/{name}.toml: options.{key}: declared otherwise by recipes/{first.recipe}.toml; "
                                 "a recipe that reacts to another's option repeats its declaration as it is")
    return found


def _inherit_versions(recipes: dict[str, Recipe]) -> dict[str, Recipe]:
    """A recipe using another's source (source = "...") and giving no version has that recipe's."""
    for name, recipe in recipes.items():
        if recipe.version is None and recipe.source is None:
            raise InputError(f"recipes/{name}.toml: version: required field is missing (only a recipe with 'source' may leave it out)")
    resolved = dict(recipes)
    for name, recipe in recipes.items():
        if recipe.version is not None:
            continue
        owner = recipes.get(recipe.source)
        if owner is None:
            raise InputError(f"recipes/{name}.toml: source: unknown recipe {recipe.source!r}{_did_you_mean(recipe.source, recipes)}")
        if owner.version is None:  # the owner uses a source itself: _check_references refuses that, say it here already
            raise InputError(f"recipes/{name}.toml: source: recipe {recipe.source!r} has no sources of its own")
        resolved[name] = recipe.model_copy(update={"version": owner.version})
    return resolved


def _check_when(recipe: Recipe, label: str, options: dict[str, DeclaredOption]) -> None:
    """`when` names a declared switch, or a declared choice option and one of its choices."""
    if recipe.condition is None:
        return
    name, value = recipe.condition
    declared = options.get(name)
    switches = sorted(key for key, found in options.items() if found.option.is_switch)
    choices = sorted(key for key, found in options.items() if not found.option.is_switch)
    if value is None:
        if declared is None or not declared.option.is_switch:
            what = (f"a choice of recipes/{declared.recipe}.toml, not a switch (write {name}=<choice>: "
                    f"{', '.join(declared.option.choices)})" if declared else "declared by no recipe")
            known = f"; switches: {', '.join(switches)}" if switches else "; declare it: [options.<name>] with default = true or false"
            raise InputError(f"{label}: when: expected a switch a recipe declares ([options.{name}]), {name!r} is {what}{known}")
        return
    if declared is None or declared.option.is_switch:
        what = (f"a switch of recipes/{declared.recipe}.toml, not a choice (write when = {name!r})" if declared
                else "declared by no recipe")
        known = f"; choice options: {', '.join(choices)}" if choices else "; declare it: [options.<name>] with choices"
        raise InputError(f"{label}: when: expected option=choice of a choice option a recipe declares, {name!r} is {what}{known}")
    if value not in declared.option.choices:
        raise InputError(f"{label}: when: {value!r} is not a choice of {name} (recipes/{declared.recipe}.toml): "
                         f"expected one of: {', '.join(declared.option.choices)}")


def _content_key(texts: dict[str, bytes]) -> str:
    # This module too: the cached models are what it made of the files (inherited versions).
    # Labels, not absolute paths: a copy of the project (and its external trees) elsewhere hits the cache.
    digest = hashlib.sha256(code_hash(__name__).encode())
    for label, data in texts.items():
        digest.update(f"{label}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()


def _read_recipe_file(path: Path, label: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:  # a folder, a dangling link, unreadable: the file's problem, in one line
        reason = "a dangling symbolic link" if path.is_symlink() and not path.exists() else (
            "a folder, not a file" if path.is_dir() else error.strerror)
        raise InputError(f"{label}: cannot read: {reason}") from None


# The cache is data only (JSON, validated again when read), and sealed (sealed.py): a file planted
# in build/cache, even with the right key, is not this user's mlbuild's and is not read. Anything
# unexpected in it: parsed again and rewritten.
def _read_cache(cache_file: Path | None, key: str) -> dict | None:
    if cache_file is None:
        return None
    try:
        payload = unseal("recipes", cache_file.read_bytes())
        if payload is None:
            return None
        stored = json.loads(payload)
        if not isinstance(stored, dict) or stored.get("key") != key or not isinstance(stored.get("recipes"), dict):
            return None
        return {name: Recipe.model_validate(data) for name, data in stored["recipes"].items()}
    except (OSError, ValueError, TypeError, ValidationError):
        return None


def _write_cache(cache_file: Path | None, key: str, recipes: dict) -> None:
    if cache_file is None:
        return
    data = {"key": key, "recipes": {name: recipe.model_dump(mode="json") for name, recipe in recipes.items()}}
    sealed = seal("recipes", json.dumps(data, separators=(",", ":")).encode())
    if sealed is None:
        return  # no secret to seal with: a file nobody could trust is not written
    try:
        write_atomic(cache_file, sealed)
    except OSError:
        pass  # only a cache: the next run parses the recipes again


def _check_arches(recipe: Recipe, label: str, arches: Arches) -> None:
    """The arches a recipe names are known ones (arches/<name>.toml): its own, and its checks'."""
    fields = [("arches", recipe.arches or []), ("arch", recipe.arch)]
    fields += [(f"checks[{index}].arches", check.arches or []) for index, check in enumerate(recipe.checks)]
    for field, names in fields:
        for name in names:
            if name not in arches:
                raise InputError(f"{label}: {field}: {arches.unsupported(name)}")


def _check_references(recipe: Recipe, label: str, recipes: dict, patches: Path, templates: tuple[Path, ...],
                      arches: Arches) -> None:
    if recipe.source is not None:
        owner = recipes.get(recipe.source)
        if owner is None:
            raise InputError(f"{label}: source: unknown recipe {recipe.source!r}{_did_you_mean(recipe.source, recipes)}")
        if not owner.sources:
            raise InputError(f"{label}: source: recipe {recipe.source!r} has no sources of its own")
    for arch in (arch for arch in arches if recipe.built_for(arch)):
        for index, dep in enumerate(recipe.depends_for(arch)):
            field = "depends" if dep in recipe.depends else f"arch.{arch}.depends"
            if dep not in recipes:
                raise InputError(f"{label}: {field}: unknown recipe {dep!r}{_did_you_mean(dep, recipes)}")
            if not recipes[dep].build:
                raise InputError(f"{label}: {field}: {dep!r} is a source-only recipe; use source = {dep!r}")
            if recipes[dep].host != recipe.host:
                kinds = {True: "a host (toolchain) recipe", False: "a target recipe"}
                raise InputError(f"{label}: {field}: {dep!r} is {kinds[recipes[dep].host]}, {recipe.name!r} is {kinds[recipe.host]}")
            if not recipe.host and not recipes[dep].built_for(arch):
                raise InputError(f"{label}: {field}: {dep!r} is not built for {arch}")
    for dep in recipe.sysroots:
        if dep not in recipes:
            raise InputError(f"{label}: sysroots: unknown recipe {dep!r}{_did_you_mean(dep, recipes)}")
        if recipes[dep].host or not recipes[dep].build:
            raise InputError(f"{label}: sysroots: {dep!r} is not a target recipe with a build; sysroots are built for the target arches")
    if recipe.build:
        _template_inside(templates, f"build/{recipe.build}.sh.j2", label, "build")
    for field, names in [("files", recipe.files)] + [(f"arch.{a}.files", o.files) for a, o in recipe.arch.items()]:
        for name in names:
            _template_inside(templates, name, label, field)
    for patch in recipe.patches:
        _file_inside(patches, patch, label, "patches")


def _template_inside(folders: tuple[Path, ...], name: str, label: str, field: str) -> None:
    """The template is in one of the folders searched (external trees' first); else the project's problem."""
    if any(_file_problem(folder, name) is None for folder in folders[:-1]):
        return
    _file_inside(folders[-1], name, label, field)


def _file_inside(folder: Path, name: str, label: str, field: str) -> None:
    problem = _file_problem(folder, name)
    if problem:
        raise InputError(f"{label}: {field}: {problem}")


@cache
def _file_problem(folder: Path, name: str) -> str | None:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        return f"{name!r} points outside {folder.name}/"
    if not path.is_file():
        return f"no file {folder.name}/{name}"
    return None


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
