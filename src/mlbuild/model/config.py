"""Read the user's configuration: [tool.mlbuild] in pyproject.toml, mlbuild.local.toml, MLBUILD_* variables, doit's key=value.

Two stages, as the recipes' options are known only once the recipes are loaded (and where
they are loaded from, build_dir, is configuration): Settings.config() checks mlbuild's own
keys (models.Config), Settings.options() the rest against the options the recipes declare.
"""

import os
import tomllib
import types
import typing
from pathlib import Path

from pydantic import ValidationError

from mlbuild.credentials import redact
from mlbuild.errors import InputError
from mlbuild.model.models import FALSE_WORDS, PATTERN_HINTS, TRUE_WORDS, Config, cache_identity
from mlbuild.model.validation import describe

ENV_PREFIX = "MLBUILD_"
# MLBUILD_* variables that are not configuration keys: the engine's own switches, what
# build scripts are given (a script may run mlbuild again), and the usual home of the artifact
# cache's secret signing key (cache_signing_key = "env:MLBUILD_CACHE_KEY", docs/ci.md).
ENGINE_VARIABLES = frozenset({"MLBUILD_LOCK_WAIT", "MLBUILD_ACTION", "MLBUILD_PYTHON", "MLBUILD_TASK", "MLBUILD_CACHE_KEY"})
# key=value arguments of doit's command line meant for other tools, let through on purpose (none yet).
OTHER_TOOLS_KEYS: frozenset[str] = frozenset()
# The tree's own settings (`mlbuild set`, git-ignored): read after pyproject.toml, before the environment.
LOCAL_FILE = "mlbuild.local.toml"
PYPROJECT, LOCAL, ENVIRONMENT, COMMAND_LINE = "pyproject.toml [tool.mlbuild]", LOCAL_FILE, "environment", "command line"
TYPED = (PYPROJECT, LOCAL)  # origins that hold TOML values; the other two hold text
# Keys for one run only: a file or an exported variable would make every later run do it again.
ONE_RUN_KEYS = frozenset({"rebuild"})


def parse_text(key: str, text: str):
    """Command-line and environment values are text: split lists, leave the rest to pydantic."""
    field = Config.model_fields[key]
    annotation = field.annotation
    if isinstance(annotation, types.UnionType):  # list[...] | None (arches): the list
        annotation = next(kind for kind in typing.get_args(annotation) if kind is not type(None))
    if getattr(annotation, "__origin__", None) is list:
        return [item for item in text.replace(",", " ").split() if item]
    if getattr(field.annotation, "__origin__", None) is dict and all("=" in item for item in text.split(",") if item.strip()):
        # name=value[,name=value]: `doit override=busybox=~/src/busybox`; an empty text is an empty table.
        return dict(item.strip().split("=", 1) for item in text.split(",") if item.strip())
    if field.annotation is bool:
        return switch_word(text, text)
    if field.annotation is int and text.strip().lstrip("-").isdigit():
        return int(text)
    return text


def switch_word(text: str, otherwise):
    """True or False for the words of a switch (1, yes, on… 0, no, off…), otherwise for anything else."""
    lowered = text.strip().lower()
    return True if lowered in TRUE_WORDS else False if lowered in FALSE_WORDS else otherwise


class Settings:
    """What the user set, from the four origins (a later one wins), not checked yet.

    local: mlbuild.local.toml's content to use instead of reading the file (`mlbuild set` checks
    what it would write this way)."""

    def __init__(self, project: Path, command_line: dict[str, str] | None = None, environ=None, local: dict | None = None):
        environ = os.environ if environ is None else environ
        self.project = project
        self.values: dict = {}
        self.origins: dict[str, str] = {}  # key -> PYPROJECT, LOCAL, ENVIRONMENT or COMMAND_LINE
        self.default_arches: list[str] | None = None  # known once the arch files are loaded (arches())
        pyproject = project / "pyproject.toml"
        if pyproject.exists() or pyproject.is_symlink():
            self._set(_read_pyproject(pyproject), PYPROJECT)
        self._set(read_local(project / LOCAL_FILE) if local is None else local, LOCAL)
        self._set(_from_environment(environ), ENVIRONMENT)
        self._set({key: text for key, text in (command_line or {}).items() if key not in OTHER_TOOLS_KEYS}, COMMAND_LINE)

    def _set(self, values: dict, origin: str) -> None:
        for key, value in values.items():
            if key in ONE_RUN_KEYS and origin != COMMAND_LINE:
                shown = f"{ENVIRONMENT} {ENV_PREFIX}{key.upper()}" if origin == ENVIRONMENT else origin
                raise InputError(f"{shown}: {key}: a key for one run only: give it on the command line "
                                 f"(`doit {key}=build:busybox-x86_64`), or run `mlbuild {key} TASK`")
            self.values[key] = value
            self.origins[key] = origin

    def where(self, key: str) -> str:
        """Where a value came from, for an error about it."""
        origin = self.origins.get(key, PYPROJECT)
        return f"{ENVIRONMENT} {ENV_PREFIX}{key.upper()}" if origin == ENVIRONMENT else origin

    def config(self) -> Config:
        """mlbuild's own configuration; relative folders are made absolute against the project."""
        data = {key: value if self.origins[key] in TYPED else parse_text(key, value)
                for key, value in self.values.items() if key in Config.model_fields}
        try:
            config = Config.model_validate(data)
        except ValidationError as error:
            key = str(error.errors()[0]["loc"][0]) if error.errors()[0]["loc"] else ""
            raise InputError(describe(error, self.where(key), Config, PATTERN_HINTS)) from None
        self._check_trust_unsigned(config)
        folders = {
            name: (self.project / value).resolve() if not value.is_absolute() else value
            for name, value in config.model_dump().items()
            if isinstance(value, Path)
        }
        return config.model_copy(update=folders)

    def _check_trust_unsigned(self, config: Config) -> None:
        """Each cache of cache_trust_unsigned is one of `cache`: a misspelt one would exempt nothing (every entry
        refused, fail-closed) and leave the user wondering why. With `cache=` (no cache) there is nothing to exempt."""
        caches = [cache_identity(spec) for spec in config.cache]  # as the cache's lines show it, never a password
        for item in config.cache_trust_unsigned:
            if not caches or cache_identity(item) in caches:
                continue
            import difflib

            close = difflib.get_close_matches(cache_identity(item), caches, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            origin = self.where("cache") if "cache" in self.origins else "its default"
            raise InputError(f"{self.where('cache_trust_unsigned')}: cache_trust_unsigned: {redact(item)!r} is not one of "
                             f"the caches{hint}; expected a URL of cache ({origin}): {', '.join(caches)}")

    def arches(self, config: Config, known) -> list[str]:
        """The configuration's arches checked against the known ones (model/arches.py), its boot checks' too;
        every one when it sets none."""
        for index, check in enumerate(config.checks):
            for name in check.arches or []:
                if name not in known:
                    raise InputError(f"{self.where('checks')}: checks[{index}].arches: {known.unsupported(name)}")
        chosen = config.arches
        self.default_arches = known.default_names
        if chosen is None:
            return known.default_names
        for name in chosen:
            if name not in known:
                raise InputError(f"{self.where('arches')}: arches: {known.unsupported(name)}")
        return list(chosen)

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
        option, from_text = declared.option, self.origins[key] not in TYPED
        if option.is_switch:
            parsed = switch_word(value, None) if from_text else value
            if isinstance(parsed, bool):
                return parsed
        elif isinstance(value, str) and value in option.choices:
            return value
        raise InputError(f"{self.where(key)}: {key} (option of recipes/{declared.recipe}.toml): {option.expected(from_text)}, got {value!r}")

    def changed(self, config: Config, options: dict, declared: dict) -> list[tuple[str, str, str]]:
        """(key, value as set, origin) of every key whose value now differs from its default, strongest origin first."""
        found = []
        for key, value in self.values.items():
            if key in Config.model_fields:
                now, default = getattr(config, key), Config.model_fields[key].get_default(call_default_factory=True)
                if key == "arches" and self.default_arches is not None:
                    default = self.default_arches  # none named: the arch files' defaults (Arch.default)
                if isinstance(default, Path) and not default.is_absolute():
                    default = (self.project / default).resolve()
            elif key in declared:
                now, default = options.get(key), declared[key].option.default
            else:
                continue
            if now != default:
                found.append((key, shown(value), self.origins[key]))
        strength = (COMMAND_LINE, ENVIRONMENT, LOCAL, PYPROJECT)
        return sorted(found, key=lambda item: strength.index(item[2]))

    def line(self, config: Config, options: dict, declared: dict) -> str | None:
        """`settings: target_llvm=false (mlbuild.local.toml), arches=x86_64 jobs=2 (pyproject.toml)`, or None."""
        groups: dict[str, list[str]] = {}
        for key, value, origin in self.changed(config, options, declared):
            groups.setdefault(SHORT_ORIGINS[origin], []).append(f"{key}={value}")
        return "settings: " + ", ".join(f"{' '.join(keys)} ({origin})" for origin, keys in groups.items()) if groups else None


SHORT_ORIGINS = {PYPROJECT: "pyproject.toml", LOCAL: LOCAL_FILE, ENVIRONMENT: "environment", COMMAND_LINE: "command line"}
SHOWN_LENGTH = 80


def shown(value) -> str:
    """A value as the user would type it after key=, short and without credentials."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = ",".join(f"{name}={shown(item)}" for name, item in value.items()) or "{}"
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        text = f"({len(value)} {'entry' if len(value) == 1 else 'entries'})"  # users, groups, checks: tables
    elif isinstance(value, list):
        text = ",".join(str(item) for item in value) or "[]"
    else:
        text = str(value)
    text = redact(text)
    return text if len(text) <= SHOWN_LENGTH else text[:SHOWN_LENGTH - 1] + "…"


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


def read_local(path: Path) -> dict:
    """mlbuild.local.toml's keys (none when there is no such file); a file that cannot be read or parsed is one line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise InputError(f"{LOCAL_FILE}: cannot read: {error.strerror}") from None
    try:
        return tomllib.loads(data.decode())
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{LOCAL_FILE}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{LOCAL_FILE}: not UTF-8 text (byte {error.start})") from None


def _unknown_key(key: str, origin: str, declared: dict) -> str:
    """An unknown key, with the closest of mlbuild's keys and the recipes' options."""
    import difflib

    known = sorted({*Config.model_fields, *declared})
    close = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if origin == PYPROJECT:  # worded as pydantic's errors of the other fields of the table
        return f"{PYPROJECT}: {key}: unknown field{hint or ' (expected one of: ' + ', '.join(known) + ')'}"
    if origin == LOCAL:
        return f"{LOCAL_FILE}: {key}: unknown configuration key{hint}; `mlbuild unset {key}` removes it"
    shown = f"{ENV_PREFIX}{key.upper()}" if origin == ENVIRONMENT else f"{key}="
    return f"{origin}: {shown}: unknown configuration key{hint}; known keys: {', '.join(known)}"


def _from_environment(environ) -> dict[str, str]:
    """MLBUILD_<KEY> variables as {key: text}; the engine's own variables are not configuration."""
    return {
        key[len(ENV_PREFIX):].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key not in ENGINE_VARIABLES
    }
