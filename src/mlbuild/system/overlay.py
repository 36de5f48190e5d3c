"""Rootfs overlays: folders whose files land in the target as they are (like Buildroot's BR2_ROOTFS_OVERLAY).

Files, folders and symbolic links are copied byte for byte with their modes; a link is
copied as a link, never followed. Only a file whose name ends in `.j2` is rendered with
jinja (and lands without the suffix): a binary file or a script full of `${#1}` is safe.
Rendered in render.py's sandbox, like every template.
"""

import hashlib
import os
import stat
from pathlib import Path
from typing import NamedTuple

import jinja2

from mlbuild.errors import InputError
from mlbuild.render import refusal, sandboxed_environment
from mlbuild.trees import check_no_link_on_the_way, hash_file


class Entry(NamedTuple):
    """One thing an overlay puts into the target."""

    path: str  # relative to the target root (a template's without .j2)
    kind: str  # "dir", "file", "link" or "template"
    mode: int  # permission bits, set-id and sticky included (0 for a link)
    source: Path  # where it is in the overlay


def scan(folder: Path, origin: str) -> list[Entry]:
    """Every entry of an overlay folder, in name order; origin names the folder in errors ("overlays/base")."""
    if not folder.is_dir():
        raise InputError(f"{origin}: expected a folder (an overlay), found {'nothing' if not folder.exists() else 'a file'}")
    entries = []
    for current, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(current, name)
            relative = path.relative_to(folder).as_posix()
            info = path.lstat()
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                entries.append(Entry(relative, "link", 0, path))
            elif stat.S_ISDIR(info.st_mode):
                entries.append(Entry(relative, "dir", mode, path))
            elif stat.S_ISREG(info.st_mode) and name.endswith(".j2"):
                entries.append(Entry(relative.removesuffix(".j2"), "template", mode, path))
            elif stat.S_ISREG(info.st_mode):
                entries.append(Entry(relative, "file", mode, path))
            else:
                raise InputError(f"{origin}/{relative}: expected a file, folder or symbolic link (device nodes and fifos "
                                 "are not copied; declare devices in the image instead)")
        # os.walk lists a link to a folder among dirs but does not enter it (followlinks=False): it stays a link.
    return sorted(entries, key=lambda entry: entry.path)


def render_template(entry: Entry, overlay: Path, origin: str, context: dict, about: str | None = None) -> str:
    """A .j2 entry rendered as plain text; an error names the file and line in its overlay (and about: the task)."""
    name = entry.source.relative_to(overlay).as_posix()
    try:
        template = _environment(overlay).get_template(name)
        return template.render(context)
    except jinja2.TemplateSyntaxError as error:
        raise InputError(f"{origin}/{name}:{error.lineno}: {error.message}") from None
    except (jinja2.UndefinedError, jinja2.exceptions.SecurityError) as error:
        words = refusal(error, context, about) or error.message
        raise InputError(f"{origin}/{name}:{_line_of(error, entry.source)}: {words}") from None
    except UnicodeDecodeError:
        raise InputError(f"{origin}/{name}: a .j2 file must be UTF-8 text (drop the .j2 to copy it as it is)") from None
    except Exception as error:  # the template's own code failed
        raise InputError(f"{origin}/{name}:{_line_of(error, entry.source)}: {type(error).__name__}: {error}") from None


def _line_of(error: Exception, path: Path) -> str:
    line, trace = "?", error.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == str(path):
            line = str(trace.tb_lineno)
        trace = trace.tb_next
    return line


_environments: dict[Path, jinja2.Environment] = {}


def _environment(overlay: Path) -> jinja2.Environment:
    if overlay not in _environments:
        _environments[overlay] = sandboxed_environment(jinja2.FileSystemLoader(str(overlay)))
    return _environments[overlay]


def fingerprint(entry: Entry, rendered: str | None = None) -> str:
    """What decides an entry's result in the target: kind, mode and content (rendered text for a template)."""
    if entry.kind == "link":
        return f"link {os.readlink(entry.source)}"
    if entry.kind == "dir":
        return f"dir {entry.mode:o}"
    content = hashlib.sha256(rendered.encode()).hexdigest() if entry.kind == "template" else hash_file(entry.source)
    return f"file {entry.mode:o} {content}"


def install(entry: Entry, root: Path, rendered: str | None = None, origin: str = "an overlay",
            owners: dict[str, str] | None = None) -> str | None:
    """Put an entry into root; returns what it replaced ("file", "link"), or None when nothing was there.

    Never through a symbolic link of root (a component's `usr/share -> /elsewhere`): a folder on
    the entry's way, or the folder the entry would merge into, is refused when it is a link;
    owners ({path: who brought it}) names who made it. A file or link may replace a link."""
    check_no_link_on_the_way(root, entry.path, origin, owners or {}, itself=entry.kind == "dir")
    target = root / entry.path
    replaced = None
    if target.is_symlink() or target.exists():
        if target.is_dir() and not target.is_symlink():
            if entry.kind == "dir":
                return None  # folders merge; the existing folder keeps its mode
            raise InputError(f"{entry.source}: would replace the folder /{entry.path} of the target with a {entry.kind}")
        if entry.kind == "dir":
            raise InputError(f"{entry.source}: a folder where the target has a file /{entry.path}")
        replaced = "link" if target.is_symlink() else "file"
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == "dir":
        target.mkdir()
    elif entry.kind == "link":
        target.symlink_to(os.readlink(entry.source))
        return replaced
    elif entry.kind == "template":
        target.write_text(rendered)
    else:
        _copy_bytes(entry.source, target)
    os.chmod(target, entry.mode)
    return replaced


def _copy_bytes(source: Path, target: Path) -> None:
    with open(source, "rb") as reading, open(target, "wb") as writing:
        while block := reading.read(1 << 20):
            writing.write(block)
