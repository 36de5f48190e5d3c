"""Read the user's configuration: [tool.mlbuild] in pyproject.toml, MLBUILD_* variables, doit's key=value.

Two stages, as the recipes' options are known only once the recipes are loaded (and where
they are loaded from, build_dir, is configuration): Settings.config() checks mlbuild's own
keys (models.Config), Settings.options() the rest against the options the recipes declare.
"""

import os
import tomllib
from pathlib import Path

from pydantic import ValidationError

from mlbuild.errors import InputError
from mlbuild.model.models import FALSE_WORDS, PATTERN_HINTS, TRUE_WORDS, Config
from mlbuild.model.validation import describe

ENV_PREFIX = "MLBUILD_"
# MLBUILD_* variables that are not configuration keys: the engine's own switches, what
# build scripts are given (a script may run mlbuild again), and the usual home of the artifact
# cache's secret signing key (cache_signing_key = "env:MLBUILD_CACHE_KEY", docs/ci.md).
ENGINE_VARIABLES = frozenset({"MLBUILD_LOCK_WAIT", "MLBUILD_ACTION", "MLBUILD_PYTHON", "MLBUILD_TASK", "MLBUILD_CACHE_KEY"})
# key=value arguments of doit's command line meant for other tools, let through on purpose (none yet).
OTHER_TOOLS_KEYS: frozenset[str] = frozenset()
PYPROJECT, ENVIRONMENT, COMMAND_LINE = "pyproject.toml [tool.mlbuild]", "environment", "command line"


def _parse_override(key: str, text: str):
    """Command-line and environment values are text: split lists, leave the rest to pydantic."""
    field = Config.model_fields[key]
    if getattr(field.annotation, "__origin__", None) is list:
        return [item for item in text.replace(",", " ").split() if item]
    if getattr(field.annotation, "__origin__", None) is dict and all("=" in item for item in text.split(",") if item.strip()):
        # name=value[,name=value]: `doit override=busybox=~/src/busybox`; an empty text is an empty table.
        return dict(item.strip().split("=", 1) for item in text.split(",") if item.strip())
    if field.annotation is bool:
        return _switch_word(text, text)
    if field.annotation is int and text.strip().lstrip("-").isdigit():
        return int(text)
    return text


def _switch_word(text: str, otherwise):
    """True or False for the words of a switch (1, yes, on… 0, no, off…), otherwise for anything else."""
    lowered = text.strip().lower()
    return True if lowered in TRUE_WORDS else False if lowered in FALSE_WORDS else otherwise


class Settings:
    """What the user set, from the three origins (a later one wins), not checked yet."""

    def __init__(self, project: Path, command_line: dict[str, str] | None = None, environ=None):
        environ = os.environ if environ is None else environ
        self.project = project
        self.values: dict = {}
        self.origins: dict[str, str] = {}  # key -> PYPROJECT, ENVIRONMENT or COMMAND_LINE
        pyproject = project / "pyproject.toml"
        if pyproject.exists() or pyproject.is_symlink():
            self._set(_read_pyproject(pyproject), PYPROJECT)
        self._set(_from_environment(environ), ENVIRONMENT)
        self._set({key: text for key, text in (command_line or {}).items() if key not in OTHER_TOOLS_KEYS}, COMMAND_LINE)

    def _set(self, values: dict, origin: str) -> None:
        for key, value in values.items():
            self.values[key] = value
            self.origins[key] = origin

    def where(self, key: str) -> str:
        """Where a value came from, for an error about it."""
        origin = self.origins.get(key, PYPROJECT)
        return f"{ENVIRONMENT} {ENV_PREFIX}{key.upper()}" if origin == ENVIRONMENT else origin

    def config(self) -> Config:
        """mlbuild's own configuration; relative folders are made absolute against the project."""
        data = {key: value if self.origins[key] == PYPROJECT else _parse_override(key, value)
                for key, value in self.values.items() if key in Config.model_fields}
        try:
            config = Config.model_validate(data)
        except ValidationError as error:
            key = str(error.errors()[0]["loc"][0]) if error.errors()[0]["loc"] else ""
            raise InputError(describe(error, self.where(key), Config, PATTERN_HINTS)) from None
        folders = {
            name: (self.project / value).resolve() if not value.is_absolute() else value
            for name, value in config.model_dump().items()
            if isinstance(value, Path)
        }
        return config.model_copy(update=folders)

    def options(self, declared: dict) -> dict[str, bool | str]:
        """The value of every option the recipes declare ({name: DeclaredOption}); any other key is unknown."""
        values = {name: found.option.default for name, found in declared.items()}
        for key, value in self.values.items():
            if key in Config.model_fields:
                continue
            if key not in declared:
                raise InputError(_unknown_key(key, self.origins[key], declared))
            values[key] = self._option_value(key, value, declared[key])
        return values

    def _option_value(self, key: str, value, declared):
        option, from_text = declared.option, self.origins[key] != PYPROJECT
        if option.is_switch:
            parsed = _switch_word(value, None) if from_text else value
            if isinstance(parsed, bool):
                return parsed
        elif isinstance(value, str) and value in option.choices:
            return value
        raise InputError(f"{self.where(key)}: {key} (option of recipes/{declared.recipe}.toml): {option.expected(from_text)}, got {value!r}")


def load_config(project: Path, command_line: dict[str, str] | None = None, environ=None) -> Config:
    """mlbuild's own configuration (the recipes' options: Settings.options, once they are loaded)."""
    return Settings(project, command_line, environ).config()


def _read_pyproject(pyproject: Path) -> dict:
    """[tool.mlbuild] of pyproject.toml; a file that cannot be read or parsed is one line."""
    try:
        document = tomllib.loads(pyproject.read_bytes().decode())
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"pyproject.toml: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"pyproject.toml: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise InputError(f"pyproject.toml: cannot read: {error.strerror}") from None
    tool = document.get("tool", {})
    section = tool.get("mlbuild", {}) if isinstance(tool, dict) else None
    if not isinstance(section, dict):
        raise InputError("pyproject.toml: tool.mlbuild: expected a table ([tool.mlbuild])")
    return dict(section)


def _unknown_key(key: str, origin: str, declared: dict) -> str:
    """An unknown key, with the closest of mlbuild's keys and the recipes' options."""
    import difflib

    known = sorted({*Config.model_fields, *declared})
    close = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if origin == PYPROJECT:  # worded as pydantic's errors of the other fields of the table
        return f"{PYPROJECT}: {key}: unknown field{hint or ' (expected one of: ' + ', '.join(known) + ')'}"
    shown = f"{ENV_PREFIX}{key.upper()}" if origin == ENVIRONMENT else f"{key}="
    return f"{origin}: {shown}: unknown configuration key{hint}; known keys: {', '.join(known)}"


def _from_environment(environ) -> dict[str, str]:
    """MLBUILD_<KEY> variables as {key: text}; the engine's own variables are not configuration."""
    return {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key not in ENGINE_VARIABLES
    }
