"""`mlbuild set`, `unset` and `settings`: the tree's own settings in mlbuild.local.toml, and what is in effect.

mlbuild.local.toml is read after pyproject.toml's [tool.mlbuild] and before MLBUILD_*
variables and key=value (model/config.py), by every doit and mlbuild command. `set`
checks what it would write as the run would, with the file's other keys, and writes
the whole file at once, with its mode (tomlkit keeps its comments); a refused value
leaves it as it was.
"""

import difflib
import os
import stat
from pathlib import Path

from mlbuild.errors import InputError
from mlbuild.frontend.project import Project
from mlbuild.model.config import (ENV_PREFIX, LOCAL, LOCAL_FILE, ONE_RUN_KEYS, SHORT_ORIGINS, parse_text, read_local, shown,
                                  switch_word)
from mlbuild.model.models import Config
from mlbuild.credentials import redact

HEADER = (
    "This tree's own settings, written by `mlbuild set KEY=VALUE` (`mlbuild unset KEY` removes one,",
    "`mlbuild settings` shows every setting in effect and where it comes from). Git ignores this file.",
    "They override pyproject.toml's [tool.mlbuild]; MLBUILD_* variables and key=value override them.",
)


def add_parsers(commands) -> None:
    setter = commands.add_parser("set", help="keep settings for this tree in mlbuild.local.toml: mlbuild set target_llvm=0 jobs=2")
    # KEY=VALUE words are taken before argparse sees them (cli.main): what is left here is not one.
    setter.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    setter.set_defaults(handler=cmd_set, before_project=True)
    unsetter = commands.add_parser("unset", help="remove settings from mlbuild.local.toml: mlbuild unset target_llvm")
    unsetter.add_argument("keys", nargs="+", metavar="KEY")
    unsetter.set_defaults(handler=cmd_unset, before_project=True)
    listing = commands.add_parser("settings", help="the settings in effect that differ from their defaults, and where each is set")
    listing.add_argument("--all", action="store_true", help="every key, the defaults too")
    listing.set_defaults(handler=cmd_settings)


def cmd_set(root: Path, args, pairs: dict[str, str]) -> int:
    """Check KEY=VALUE as a run would take them, then write them into mlbuild.local.toml."""
    if args.pairs:
        raise InputError(f"set: {args.pairs[0]!r}: expected KEY=VALUE with a lowercase key, as in target_llvm=0")
    if not pairs:
        raise InputError("set: expected KEY=VALUE…, as in `mlbuild set target_llvm=0`")
    for key in pairs:
        if key in ONE_RUN_KEYS:
            raise InputError(f"set: {key}: a key for one run only, not kept in {LOCAL_FILE}: `mlbuild {key} TASK`")
    path = root / LOCAL_FILE
    current = read_local(path)
    # The project without the caller's MLBUILD_* variables: what is checked is what the file will say.
    base = Project(root, {}, environ={}, local=current)
    typed = {key: _typed(base, key, text) for key, text in pairs.items()}
    try:
        Project(root, {}, environ={}, local={**current, **typed})
    except InputError as error:
        message = str(error)
        for key, text in pairs.items():  # about a value given now: named as it was typed, not as the file's
            if message.startswith(f"{LOCAL_FILE}: {key}"):
                message = f"{key}={text}" + message.removeprefix(f"{LOCAL_FILE}: {key}").removeprefix(f": {key}")
        raise InputError(f"set: {message}; {LOCAL_FILE} not changed") from None
    document = _document(path)
    for key, value in typed.items():
        document[key] = _item(value)
    _write(path, document)
    for key, value in typed.items():
        print(f"{LOCAL_FILE}: {key} = {redact(_item(value).as_string())}")
        variable = f"{ENV_PREFIX}{key.upper()}"
        if variable in os.environ:
            print(f"note: {variable} is set in this shell and wins over {LOCAL_FILE} while it is")
    return 0


def _typed(project: Project, key: str, text: str):
    """A key=value's value as the TOML value it is written as (true, 2, ["x86_64"], "toybox")."""
    if key in Config.model_fields:
        return parse_text(key, text)
    declared = project.declared_options.get(key)
    if declared is None:
        raise InputError(f"set: {key}: unknown configuration key{_did_you_mean(key, _known(project))}; "
                         f"`mlbuild settings --all` lists them; {LOCAL_FILE} not changed")
    option = declared.option
    value = switch_word(text, None) if option.is_switch else text if text in option.choices else None
    if value is None:
        raise InputError(f"set: {key} (option of recipes/{declared.recipe}.toml): {option.expected(True)}, "
                         f"got {text!r}; {LOCAL_FILE} not changed")
    return value


def cmd_unset(root: Path, args, pairs: dict[str, str]) -> int:
    """Remove keys from mlbuild.local.toml; a key that is not there is said, a key that does not exist refused."""
    if pairs:
        raise InputError(f"unset: {next(iter(pairs))}=: expected a KEY alone, as in `mlbuild unset target_llvm`")
    path = root / LOCAL_FILE
    current = read_local(path)
    remaining = {key: value for key, value in current.items() if key not in args.keys}
    try:  # what is known, and what each key will be once removed (a broken file is still fixed by unset)
        project = Project(root, {}, environ={}, local=remaining)
        known = _known(project)
    except InputError:
        project, known = None, set(Config.model_fields)
    for key in args.keys:
        if key not in current and key not in known:
            raise InputError(f"unset: {key}: unknown configuration key{_did_you_mean(key, known | set(current))}; "
                             f"{LOCAL_FILE} not changed")
    if remaining != current:
        document = _document(path)
        for key in args.keys:
            if key in document:
                del document[key]
        _write(path, document)
    for key in args.keys:
        if key not in current:
            print(f"{LOCAL_FILE}: {key} was not set")
        else:
            now = _now(project, key)
            print(f"{LOCAL_FILE}: {key} removed" + (f"; now {now}" if now else ""))
    return 0


def _now(project: Project | None, key: str) -> str | None:
    """key's value once the file no longer sets it (pyproject.toml's or the default); None for a key of nothing."""
    if project is None:
        return None
    settings = project.settings
    if key in settings.values:
        return f"{shown(settings.values[key])} ({SHORT_ORIGINS[settings.origins[key]]})"
    if key in Config.model_fields:
        return f"{shown(_default(key))} (the default)"
    if key in project.declared_options:
        return f"{shown(project.declared_options[key].option.default)} (the default)"
    return None


def cmd_settings(project: Project, args) -> int:
    """The settings in effect that differ from their defaults and where each is set; --all: every key."""
    settings = project.settings
    if not args.all:
        changed = settings.changed(project.config, project.options, project.declared_options)
        rows = [(f"{key}={value}", SHORT_ORIGINS[origin]) for key, value, origin in changed]
        # What the file says is always shown, also a value that happens to be the default (jobs=2 on 2 CPUs).
        rows += [(f"{key}={shown(value)}", f"{LOCAL_FILE}, the default too") for key, value in settings.values.items()
                 if settings.origins[key] == LOCAL and key not in {key for key, _, _ in changed}]
        if not rows:
            print("every key has its default (`mlbuild settings --all` lists them)")
    else:
        rows = []
        for key in sorted(Config.model_fields.keys() - ONE_RUN_KEYS):
            value = settings.values[key] if key in settings.values else _default(key)
            rows.append((f"{key}={shown(value)}", SHORT_ORIGINS.get(settings.origins.get(key), "default")))
        for key, found in sorted(project.declared_options.items()):
            origin = SHORT_ORIGINS.get(settings.origins.get(key), "default")
            rows.append((f"{key}={shown(project.options[key])}", f"{origin}, option of recipes/{found.recipe}.toml"))
    width = max((len(text) for text, _ in rows), default=0)
    for text, origin in rows:
        print(f"{text:{width}}  ({origin})")
    return 0


def _default(key: str):
    value = Config.model_fields[key].get_default(call_default_factory=True)
    return str(value) if isinstance(value, Path) else value


def _known(project: Project) -> set[str]:
    return set(Config.model_fields) | set(project.declared_options)


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key.lower(), sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _document(path: Path):
    """The file as tomlkit reads it (comments kept), or a new one that says what it is."""
    import tomlkit

    if path.exists():
        return tomlkit.parse(path.read_text())  # read_local has parsed it already: it is valid TOML
    document = tomlkit.document()
    for line in HEADER:
        document.add(tomlkit.comment(line))
    return document


def _item(value):
    """A TOML item; a table is written inline, so later keys never land inside it."""
    import tomlkit

    if isinstance(value, dict):
        table = tomlkit.inline_table()
        table.update(value)
        return table
    return tomlkit.item(value)


def _write(path: Path, document) -> None:
    """The whole file at once (a temporary file renamed over it), with the mode it had: chmod 600 stays."""
    import tomlkit

    text = tomlkit.dumps(document)
    data = (text if text.endswith("\n") else text + "\n").encode()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # nothing half-written stays beside the file
        raise
