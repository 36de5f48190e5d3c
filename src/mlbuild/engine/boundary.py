"""The one place where an expected failure becomes one line: task and path, what went wrong, no traceback.

Every entry point (doit actions and up-to-date checks, loading the tasks for
`doit list`, the `mlbuild` command) passes exceptions through `one_line`.
What it does not know (a bug) is left to propagate with its traceback. A URL's
credentials never reach the line (credentials.redact).
"""

import difflib
import errno
import os
import shutil
import tomllib
from pathlib import Path

import jinja2
from pydantic import ValidationError

from mlbuild.credentials import redact
from mlbuild.errors import MlbuildError

# Failures of the world, not of mlbuild: disks, permissions, damaged files, bad input.
EXPECTED = (MlbuildError, OSError, EOFError, UnicodeError, ValueError, tomllib.TOMLDecodeError,
            jinja2.TemplateError, ValidationError)


def one_line(error: BaseException, task: str | None = None) -> str | None:
    """The message for an expected failure, prefixed with the task it happened in; None for a bug."""
    if isinstance(error, MlbuildError):
        text = str(error)
    elif isinstance(error, OSError):
        text = describe_os_error(error)
    elif isinstance(error, UnicodeDecodeError):
        text = f"not UTF-8 text ({error.reason} at byte {error.start})"
    elif isinstance(error, ValidationError):
        from mlbuild.model.validation import field_path, user_loc  # late: validation imports pydantic models

        first = error.errors()[0]
        text = f"{error.title}: {field_path(user_loc(first['loc']))}: {first['msg']}"
    elif isinstance(error, jinja2.TemplateError):
        where = getattr(error, "filename", None) or getattr(error, "name", None)
        line = getattr(error, "lineno", None)
        text = f"{where}:{line}: {error.message}" if where else f"template error: {error.message}"
    elif isinstance(error, EXPECTED):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        return None
    text = " ".join(text.split("\n")[:1]) if not isinstance(error, MlbuildError) else text
    if task and not text.startswith(task + ":"):
        text = f"{task}: {text}"
    return redact(text)


def no_task(name: str, names, typed: str | None = None) -> str:
    """A mistyped task name, wherever it is typed: "no task 'X' (did you mean Y?); `doit list --all` shows them".

    typed: the name as the user wrote it, when name completed it (busybx-arm64 for build:busybx-arm64)."""
    close = difflib.get_close_matches(name, [known for known in names if not known.startswith("_")], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"no task {typed or name!r}{hint}; `doit list --all` shows them"


def describe_os_error(error: OSError) -> str:
    """'path: what the system said', with the free space on a full disk and a hint for the usual causes."""
    path = error.filename if error.filename is not None else None
    reason = error.strerror or type(error).__name__
    where = f"{path}: " if path is not None else ""
    if error.filename2 is not None:
        where = f"{path} -> {error.filename2}: "
    if error.errno == errno.ENOSPC:
        free = _free_space(Path(path)) if path else None
        return f"{where}no space left on the device{f' ({free} free)' if free else ''}; free some space and run again"
    if error.errno == errno.EROFS:
        return f"{where}the file system is read-only; mount it writable or choose another folder in [tool.mlbuild]"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"{where}permission denied; make it writable by {_user()} or choose another folder in [tool.mlbuild]"
    if error.errno == errno.EISDIR:
        return f"{where}is a folder where a file was expected"
    if error.errno == errno.ENOTDIR:
        return f"{where}a part of this path is a file where a folder was expected"
    return f"{where}{reason}"


def _free_space(path: Path) -> str | None:
    for folder in [path, *path.parents]:
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
            if free < 1024 or unit == "TiB":
                return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
            free /= 1024
    return None


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return f"uid {os.getuid()}"
