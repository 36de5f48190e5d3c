"""Files and folders: written atomically, hashed, merged and replaced whole."""

import filecmp
import hashlib
import os
import shutil
import stat
import threading
from pathlib import Path

from mlbuild.errors import MlbuildError


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_if_changed(path: Path, text: str) -> bool:
    """Write text unless the file already holds it (nothing downstream sees a new file)."""
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_atomic(path, text.encode())
    return True


def hash_tree(root: Path, skip: frozenset[str] = frozenset(), file_hash=None) -> str:
    """A hash of a folder's names, kinds, modes, link targets and contents (not mtimes).

    skip: names left out at every depth (a source override's .git); file_hash(path, lstat, relative):
    a regular file's content hash, for a caller that can answer from a cache (sources/override.py).
    Strings, not Path objects: pathlib's overhead was most of a no-op on a 20,000-file tree."""
    digest = hashlib.sha256()
    base = str(root)
    # Sorted by parts, as Path objects sort: the order (so every stamp's output hash) is unchanged.
    for relative in sorted(walk_relative(base, skip), key=lambda name: name.split("/")):
        path = os.path.join(base, relative)
        info = os.lstat(path)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            digest.update(f"L {relative} {os.readlink(path)}\n".encode())
        elif stat.S_ISDIR(info.st_mode):
            digest.update(f"D {relative} {mode:o}\n".encode())
        else:
            content = file_hash(path, info, relative) if file_hash else hash_file(path)
            digest.update(f"F {relative} {mode:o} {content}\n".encode())
    return digest.hexdigest()


def walk_relative(base: str, skip: frozenset[str] = frozenset()):
    """Relative names ("a/b.c") below base."""
    for folder, dirs, files in os.walk(base):
        dirs[:] = [name for name in dirs if name not in skip]  # not entered either
        prefix = folder[len(base) + 1:]
        for name in dirs + files:
            if name not in skip:
                yield f"{prefix}/{name}" if prefix else name


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_tree(source: Path, destination: Path, skip: frozenset[str] = frozenset()) -> None:
    """Copy a folder into an existing empty one: modes and mtimes kept, links as links, skip left out.

    mtimes are kept so that an incremental build (make in a kept work folder) recompiles only what
    changed. A fifo, socket or device refuses the copy: reading one would hang or mean nothing."""
    folders = [(source, destination)]
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(name for name in dirs if name not in skip)
        target = destination / Path(folder).relative_to(source)
        for name in dirs + sorted(name for name in files if name not in skip):
            path, copy = Path(folder, name), target / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                copy.symlink_to(os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                copy.mkdir()
                folders.append((path, copy))
            elif stat.S_ISREG(info.st_mode):
                shutil.copy2(path, copy)
            else:
                raise MlbuildError(f"{path}: expected a file, folder or symbolic link, found a {special_kind(info.st_mode)}")
    # Folders' modes and mtimes last, deepest first: adding files changes a folder's mtime, a read-only one refuses them.
    for path, copy in reversed(folders):
        shutil.copystat(path, copy)


def special_kind(mode: int) -> str:
    kinds = {stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device"}
    return kinds.get(stat.S_IFMT(mode), "special file")


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def merge_tree(source: Path, destination: Path, owner: str, owners: dict[str, str]) -> None:
    """Copy a folder into another, refusing a path that an earlier source (in owners) already brought.

    Never through a symbolic link an earlier source brought: one component's `usr/share -> /elsewhere`
    (or `-> ../../elsewhere`) would otherwise take the next one's usr/share/… out of the tree. Each
    folder is checked as the walk enters it, so no folder below a link is ever reached."""
    if not source.is_dir():
        raise MlbuildError(f"{owner}: its output {source} is missing; run again")
    if destination.is_symlink():
        raise MlbuildError(f"{owner}: its output would be merged into {destination}, which is a symbolic link "
                           f"(-> {os.readlink(destination)}); refusing to write through it")
    for folder, dirs, names in os.walk(source):
        relative = Path(folder).relative_to(source)
        target_folder = destination / relative
        if relative.parts:
            _enter_folder(target_folder, relative.as_posix(), sorted(names + dirs), owner, owners)
        else:
            target_folder.mkdir(exist_ok=True)
        shutil.copymode(folder, target_folder)
        for name in names + [d for d in dirs if Path(folder, d).is_symlink()]:
            key = (relative / name).as_posix()
            if key in owners:
                raise MlbuildError(f"{owner}: installs {key}, which {owners[key]} installs too")
            target = target_folder / name
            src = Path(folder, name)
            if os.path.lexists(target):  # not in owners: a folder of an earlier source
                kind = "a symbolic link" if src.is_symlink() else "a file"
                raise MlbuildError(f"{owner}: installs {key} as {kind}, where {folder_owner(key, owners)} installs a folder")
            owners[key] = owner
            if src.is_symlink():
                target.symlink_to(os.readlink(src))
            else:
                shutil.copy2(src, target)


def _enter_folder(folder: Path, key: str, inside: list[str], owner: str, owners: dict[str, str]) -> None:
    """Make or reuse destination folder key, refusing one that an earlier source brought as a link or a file."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        folder.mkdir()
        return
    if stat.S_ISDIR(info.st_mode):
        return
    what = f"{key}/{inside[0]}" if inside else f"the folder {key}"
    if stat.S_ISLNK(info.st_mode):
        raise MlbuildError(through_link(owner, what, key, os.readlink(folder), owners.get(key, "an earlier input")))
    raise MlbuildError(f"{owner}: installs {what}, but {owners.get(key, 'an earlier input')} installs {key} as a file")


def through_link(writer: str, path: str, link: str, target: str, maker: str) -> str:
    """The one line for a write refused because a folder on its way is a symbolic link another input made."""
    return (f"{writer}: installs {path}, but {link} is a symbolic link (-> {target}) that {maker} installs; "
            "refusing to write through another input's link")


def folder_owner(key: str, owners: dict[str, str]) -> str:
    """Who brought something below folder key (an error's wording: folders themselves have no owner)."""
    prefix = key + "/"
    return next((owner for path, owner in owners.items() if path.startswith(prefix)), "an earlier input")


def check_no_link_on_the_way(root: Path, relative: str, writer: str, owners: dict[str, str], itself: bool = False) -> None:
    """Refuse to write root/relative when a folder on its way (and, itself=True, the path itself) is a symbolic link.

    For what is written into a merged tree after the merge (mlbuild's own files, overlays): a link an
    input brought is never followed by another input's write. owners names who brought each path."""
    parts = relative.split("/")
    for end in range(1, len(parts) + (1 if itself else 0)):
        link = "/".join(parts[:end])
        if os.path.islink(os.path.join(root, link)):
            raise MlbuildError(through_link(writer, relative, link, os.readlink(os.path.join(root, link)),
                                            owners.get(link, "an earlier input")))


def keep_unchanged_mtimes(staging: Path, old: Path) -> int:
    """Give every regular file of staging whose bytes equal old's file of the same name old's mtime.

    A rebuilt or restored output is a new folder, so every file in it would look new to the
    make or ninja of a dependent's kept build folder (clang's depends on the sysroot's headers):
    one rebuilt musl with the same headers would recompile all of clang. A file with the same
    bytes keeps the time it had; anything that changed is new. Returns how many were kept."""
    if not old.is_dir():
        return 0
    kept = 0
    base = str(staging)
    for relative in walk_relative(base):
        new_path, old_path = os.path.join(base, relative), os.path.join(old, relative)
        try:
            new_info, old_info = os.lstat(new_path), os.lstat(old_path)
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(new_info.st_mode) and stat.S_ISREG(old_info.st_mode)):
            continue
        if new_info.st_size != old_info.st_size or new_info.st_mtime_ns <= old_info.st_mtime_ns:
            continue
        if filecmp.cmp(new_path, old_path, shallow=False):
            os.utime(new_path, ns=(new_info.st_atime_ns, old_info.st_mtime_ns), follow_symlinks=False)
            kept += 1
    return kept


def replace_tree(staging: Path, final: Path) -> None:
    """Put staging where final is: the old tree is moved aside first, then deleted."""
    old = final.with_name(f".{final.name}.old")
    remove_tree(old)
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(staging, final)
    remove_tree(old)
