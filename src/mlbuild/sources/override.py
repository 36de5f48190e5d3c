"""Local source overrides: a recipe's source taken from a folder of the user's (`override` in the configuration).

Like Buildroot's <PKG>_OVERRIDE_SRCDIR or Yocto's `devtool modify`: fetch:<recipe> copies
the folder in (no download, no checksum, no patches) and the folder's content hash is its
input, so an edit there rebuilds that component and what depends on it.

Hashing a large tree on every no-op would cost seconds, so a file's content hash is
reused while its (size, mtime_ns, ctime_ns, inode, mode) are those recorded with it in
build/cache/override-<recipe>.json; any difference reads the file again. A no-op then
costs one lstat per entry. ctime cannot be set back by a program (mtime can, `touch -d`),
and a file changed less than RACY_SECONDS before it was hashed is not recorded: on a file
system with coarse timestamps a later edit in the same tick would keep its stat. The hashes
decide the fetch's output hash, so the file is sealed (sealed.py): one this user's mlbuild
did not write (planted in build/, with the right stats and other hashes) is not read.
"""

import difflib
import json
import os
import stat
import time
from pathlib import Path
from typing import NamedTuple

from mlbuild.errors import InputError, MlbuildError
from mlbuild.sealed import seal, unseal
from mlbuild.trees import hash_file, hash_tree, special_kind, write_if_changed

SKIP = frozenset({".git"})  # a checkout's history is not its source (and may be large)
RACY_SECONDS = 2
PURPOSE = "override"


class SourceOverride(NamedTuple):
    recipe: str
    text: str  # as configured (~/src/busybox): what messages show
    path: Path  # resolved
    cache_file: Path  # the stat cache of its content hashes

    def tree_hash(self) -> str:
        """trees.hash_tree of the folder without .git, the stat cache answering for unchanged files."""
        return _CachedHashes(self).tree_hash()


def resolve(overrides: dict[str, str], recipes: dict, root: Path, build_dir: Path) -> dict[str, SourceOverride]:
    """The configuration's overrides, checked: {recipe name: SourceOverride}; one line naming the key otherwise."""
    resolved = {}
    for name, text in overrides.items():
        key = f"configuration: override.{name}"
        recipe = recipes.get(name)
        if recipe is None:
            close = difflib.get_close_matches(name, list(recipes), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{key}: no recipe {name!r}{hint}; expected the name of a recipe in recipes/")
        if recipe.source:
            raise InputError(f"{key}: recipe {name} uses the source of recipe {recipe.source} (source = {recipe.source!r}); "
                             f"override {recipe.source} instead")
        path = Path(os.path.expanduser(text))
        path = (root / path if not path.is_absolute() else path).resolve()
        shown = text if str(path) == text else f"{text} ({path})"
        if not path.exists():
            raise InputError(f"{key}: {shown} does not exist; expected a folder holding {name}'s source")
        if not path.is_dir():
            raise InputError(f"{key}: {shown} is not a folder; expected a folder holding {name}'s source")
        build = build_dir.resolve()
        if build == path or path in build.parents:
            raise InputError(f"{key}: {shown} holds the build folder {build}; expected a folder outside it")
        if build in path.parents:  # build/src/<recipe> itself would be replaced by its own copy
            raise InputError(f"{key}: {shown} is inside the build folder {build}, which mlbuild rewrites; "
                             "expected a folder outside it")
        resolved[name] = SourceOverride(name, text, path, build_dir / "cache" / f"override-{name}.json")
    return resolved


class _CachedHashes:
    def __init__(self, override: SourceOverride):
        self.override = override
        self.started = time.time_ns()
        self.old = self._read()
        self.new: dict[str, list] = {}

    def _read(self) -> dict:
        try:
            payload = unseal(PURPOSE, self.override.cache_file.read_bytes())
            record = json.loads(payload) if payload is not None else None
        except (OSError, ValueError):
            return {}  # only a cache: a missing, damaged or unsealed one means hashing everything once
        if not isinstance(record, dict) or record.get("root") != str(self.override.path) or not isinstance(record.get("files"), dict):
            return {}
        return record["files"]

    def tree_hash(self) -> str:
        try:
            digest = hash_tree(self.override.path, SKIP, self._file_hash)
        except FileNotFoundError as error:  # the folder itself, or a file deleted while it was read
            raise MlbuildError(f"fetch:{self.override.recipe}: source override {self.override.text}: "
                               f"{error.filename} vanished while it was read; run again") from None
        if self.new != self.old:  # a no-op rewrites nothing
            record = {"root": str(self.override.path), "files": self.new}
            sealed = seal(PURPOSE, json.dumps(record, sort_keys=True, separators=(",", ":")).encode())
            if sealed is not None:  # else no secret to seal with: nobody could trust the file
                write_if_changed(self.override.cache_file, sealed.decode())
        return digest

    def _file_hash(self, path: str, info: os.stat_result, relative: str) -> str:
        if not stat.S_ISREG(info.st_mode):
            raise MlbuildError(f"fetch:{self.override.recipe}: source override {self.override.text}: {path}: "
                               f"expected a file, folder or symbolic link, found a {special_kind(info.st_mode)}")
        key = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_mode]
        cached = self.old.get(relative)
        if isinstance(cached, list) and cached[:-1] == key:
            content = cached[-1]
        else:
            content = hash_file(path)
        if max(info.st_mtime_ns, info.st_ctime_ns) < self.started - RACY_SECONDS * 10**9:
            self.new[relative] = key + [content]
        return content
