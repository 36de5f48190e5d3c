"""Read the user's configuration: [tool.mlbuild] in pyproject.toml, MLBUILD_* variables, doit's key=value."""

import os
import tomllib
from pathlib import Path

from pydantic import ValidationError

from .errors import InputError
from .models import PATTERN_HINTS, Config
from .validation import describe

ENV_PREFIX = "MLBUILD_"


def _parse_override(key: str, text: str):
    """Command-line and environment values are text: split lists, leave the rest to pydantic."""
    field = Config.model_fields[key]
    if getattr(field.annotation, "__origin__", None) is list:
        return [item for item in text.replace(",", " ").split() if item]
    if field.annotation is bool:
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
    return text


def load_config(project: Path, command_line: dict[str, str] | None = None, environ=None) -> Config:
    """The configuration; relative folders are made absolute against the project."""
    environ = os.environ if environ is None else environ
    data: dict = {}
    pyproject = project / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = dict(tomllib.loads(pyproject.read_text()).get("tool", {}).get("mlbuild", {}))
        except tomllib.TOMLDecodeError as error:
            raise InputError(f"pyproject.toml: not valid TOML: {error}") from None
    for values in (_from_environment(environ), command_line or {}):
        for key, text in values.items():
            if key not in Config.model_fields:
                continue  # doit's own variables and other tools' settings pass through
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


def _from_environment(environ) -> dict[str, str]:
    return {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX):].lower() in Config.model_fields
    }


def _origin_of(error: ValidationError, data, environ, command_line) -> str:
    """Say where the offending value came from."""
    key = str(error.errors()[0]["loc"][0]) if error.errors()[0]["loc"] else ""
    if key in command_line:
        return "command line"
    if f"{ENV_PREFIX}{key.upper()}" in environ:
        return f"environment {ENV_PREFIX}{key.upper()}"
    return "pyproject.toml [tool.mlbuild]"
