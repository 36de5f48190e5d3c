"""Read the user's configuration: [tool.mlbuild] in pyproject.toml, MLBUILD_* variables, doit's key=value."""

import os
import tomllib
from pathlib import Path

from pydantic import ValidationError

from .errors import InputError
from .models import PATTERN_HINTS, Config
from .validation import describe

ENV_PREFIX = "MLBUILD_"
# MLBUILD_* variables that are not configuration keys: the engine's own switches and what
# build scripts are given (a script may run mlbuild again).
ENGINE_VARIABLES = frozenset({"MLBUILD_LOCK_WAIT", "MLBUILD_ACTION", "MLBUILD_PYTHON", "MLBUILD_TASK"})
# key=value arguments of doit's command line meant for other tools, let through on purpose (none yet).
OTHER_TOOLS_KEYS: frozenset[str] = frozenset()


def _parse_override(key: str, text: str):
    """Command-line and environment values are text: split lists, leave the rest to pydantic."""
    field = Config.model_fields[key]
    if getattr(field.annotation, "__origin__", None) is list:
        return [item for item in text.replace(",", " ").split() if item]
    if getattr(field.annotation, "__origin__", None) is dict and all("=" in item for item in text.split(",") if item.strip()):
        # name=value[,name=value]: `doit override=busybox=~/src/busybox`; an empty text is an empty table.
        return dict(item.strip().split("=", 1) for item in text.split(",") if item.strip())
    if field.annotation is bool:
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
    if field.annotation is int and text.strip().lstrip("-").isdigit():
        return int(text)
    return text


def load_config(project: Path, command_line: dict[str, str] | None = None, environ=None) -> Config:
    """The configuration; relative folders are made absolute against the project."""
    environ = os.environ if environ is None else environ
    data: dict = {}
    pyproject = project / "pyproject.toml"
    if pyproject.exists() or pyproject.is_symlink():
        data = _read_pyproject(pyproject)
    for origin, values in (("environment", _from_environment(environ)), ("command line", command_line or {})):
        for key, text in values.items():
            if key not in Config.model_fields:
                if origin == "command line" and key in OTHER_TOOLS_KEYS:
                    continue
                raise InputError(_unknown_key(key, origin))
            data[key] = _parse_override(key, text)
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise InputError(describe(error, _origin_of(error, data, environ, command_line or {}), Config, PATTERN_HINTS)) from None
    folders = {
        name: (project / value).resolve() if not value.is_absolute() else value
        for name, value in config.model_dump().items()
        if isinstance(value, Path)
    }
    return config.model_copy(update=folders)


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


def _unknown_key(key: str, origin: str) -> str:
    import difflib

    known = sorted(Config.model_fields)
    close = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = f"{ENV_PREFIX}{key.upper()}" if origin == "environment" else f"{key}="
    return f"{origin}: {shown}: unknown configuration key{hint}; known keys: {', '.join(known)}"


def _from_environment(environ) -> dict[str, str]:
    """MLBUILD_<KEY> variables as {key: text}; the engine's own variables are not configuration."""
    return {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key not in ENGINE_VARIABLES
    }


def _origin_of(error: ValidationError, data, environ, command_line) -> str:
    """Say where the offending value came from."""
    key = str(error.errors()[0]["loc"][0]) if error.errors()[0]["loc"] else ""
    if key in command_line:
        return "command line"
    if f"{ENV_PREFIX}{key.upper()}" in environ:
        return f"environment {ENV_PREFIX}{key.upper()}"
    return "pyproject.toml [tool.mlbuild]"
