"""A task's output as a deterministic .tar.zst with a manifest, and its verified restore.

The archive is the same bytes for the same tree: names sorted, owners 0/root-less,
one fixed mtime, every regular file stored whole (no hard links). The manifest
names the task's signature and lists every entry with its mode and sha256, so a
restore can check the download, refuse an entry made for another signature, and
put back exactly the tree the engine hashed (tarfile's safe 'data' filter drops
modes of folders and some file bits; they are set again from the manifest, read and
checked as a whole by manifest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from mlbuild.errors import MlbuildError
from mlbuild.trees import hash_file, remove_tree, walk_relative
from mlbuild.sources.unpack import unpack
from mlbuild.engine.cache.entry import FORMAT, EntryError

if TYPE_CHECKING:  # the model is built where a manifest is read, not on every run that imports this module
    from mlbuild.engine.cache.manifest import Entry, Manifest

ARCHIVE_MTIME = 1672531200  # the build's SOURCE_DATE_EPOCH; restored files get the time of the restore
ZSTD_LEVEL = 3  # about as fast as the disk; higher levels cost more than they save on a loopback or LAN cache


def tree_entries(root: Path, hash_files: bool = True) -> dict[str, dict]:
    """Every path under root: kind, mode, and the sha256 of files or the target of links.

    hash_files=False leaves the files' sha256 to pack(), which hashes them as it reads them."""
    entries = {}
    base = str(root)
    for relative in walk_relative(base):
        path = os.path.join(base, relative)
        info = os.lstat(path)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            entries[relative] = {"kind": "link", "target": os.readlink(path)}
        elif stat.S_ISDIR(info.st_mode):
            entries[relative] = {"kind": "dir", "mode": mode}
        elif stat.S_ISREG(info.st_mode):
            entries[relative] = {"kind": "file", "mode": mode, "size": info.st_size}
            if hash_files:
                entries[relative]["sha256"] = hash_file(path)
        else:
            raise MlbuildError(f"{path}: only files, folders and symbolic links can be cached")
    return dict(sorted(entries.items()))


class _Hashing:
    """A file passed through, read or written, and hashed on the way: one pass instead of two."""

    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def pack(root: Path, archive: Path, entries: dict[str, dict]) -> str:
    """Write root as a deterministic tar.zst; returns the archive's sha256.

    Files are hashed as they are read: an entry without a sha256 gets it, one with a sha256
    must still match it (else the tree changed under the pack: an error)."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    base = str(root)
    with open(archive, "wb") as file, compressor.stream_writer(raw := _Hashing(file), closefd=False) as compressed:
        with tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for name, entry in entries.items():
                info = tarfile.TarInfo(name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = ARCHIVE_MTIME, 0, 0, "", ""
                if entry["kind"] == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, entry["mode"]
                    tar.addfile(info)
                elif entry["kind"] == "link":
                    info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry["target"], 0o777
                    tar.addfile(info)
                else:
                    info.mode, info.size = entry["mode"], entry["size"]
                    with open(os.path.join(base, name), "rb") as handle:
                        reader = _Hashing(handle)
                        tar.addfile(info, reader)
                    if entry.setdefault("sha256", reader.digest.hexdigest()) != reader.digest.hexdigest():
                        raise MlbuildError(f"{root / name}: changed while it was packed")
    return raw.digest.hexdigest()


def make_manifest(step, signature: str, output_hash: str, entries: dict, archive_sha256: str, archive_size: int, seconds: float) -> dict:
    recipe = getattr(step, "recipe", None)
    return {
        "format": FORMAT,
        "signature": signature,
        "task": step.stamp,
        "recipe": recipe.name if recipe else None,
        "version": recipe.version if recipe else None,
        "output_hash": output_hash,
        "archive": f"{archive_sha256}.tar.zst",
        "archive_sha256": archive_sha256,
        "archive_size": archive_size,
        "size": sum(entry.get("size", 0) for entry in entries.values()),
        "build_seconds": round(seconds, 1),
        "created": int(time.time()),
        "entries": entries,
    }


def check_archive(archive: Path, manifest: Manifest) -> None:
    size = archive.stat().st_size
    if size != manifest.archive_size:
        raise EntryError(f"its archive is {size} bytes, the manifest says {manifest.archive_size} (truncated or corrupt)")
    if hash_file(archive) != manifest.archive_sha256:
        raise EntryError("its archive's sha256 differs from the manifest's (corrupt)")


def restore(archive: Path, staging: Path, manifest: Manifest, output_hash_of, label: str, restore_modes=None) -> None:
    """Unpack a checked archive into staging (which must not exist) and verify every entry.

    restore_modes(staging), when given, sets the modes the task's own inputs declare (a target's
    setuid files): set-id bits come from the signature's recipes, never from the cache's bytes.
    On any failure staging is removed and EntryError or OSError raised."""
    tar_file = archive.with_name(archive.name + ".tar")
    try:
        try:
            with open(archive, "rb") as raw, open(tar_file, "wb") as plain:
                zstandard.ZstdDecompressor().copy_stream(raw, plain)
        except zstandard.ZstdError as error:
            raise EntryError(f"its archive does not decompress ({error})") from None
        try:
            unpack(tar_file, staging, 0, label)  # the source unpacker's checks: no escapes, no links out, no devices
        except MlbuildError as error:
            raise EntryError(str(error).removeprefix(f"{label}: ")) from None
        tar_file.unlink()
        _verify_and_fix(staging, manifest.entries)
        if restore_modes is not None:
            try:
                restore_modes(staging)
            except MlbuildError as error:
                raise EntryError(str(error)) from None
        # Every file's sha256 was just checked against the manifest: the tree hash reuses them.
        verified = {name: entry["sha256"] for name, entry in manifest.entries.items() if entry["kind"] == "file"}
        if output_hash_of(staging, file_hash=lambda path, info, relative: verified[relative]) != manifest.output_hash:
            raise EntryError("the unpacked tree's hash differs from the manifest's output hash")
    except BaseException:
        remove_tree(staging)
        raise
    finally:
        tar_file.unlink(missing_ok=True)


def _verify_and_fix(root: Path, expected: dict[str, Entry]) -> None:
    """Every entry as the manifest says, nothing more: modes reset, files hashed, mtimes now."""
    found = _kinds(root)
    if set(found) != set(expected):
        extra = sorted(set(found) - set(expected)) or sorted(set(expected) - set(found))
        raise EntryError(f"its archive and manifest list different files (first: {extra[0]})")
    now = time.time()
    base = str(root)
    for name, entry in expected.items():
        path = os.path.join(base, name)  # strings: pathlib's parsing was a fifth of a restore of small files
        kind = entry["kind"]
        if found[name] != kind:
            raise EntryError(f"{name}: the archive has a {found[name]}, the manifest a {kind}")
        if kind == "link":
            if os.readlink(path) != entry["target"]:
                raise EntryError(f"{name}: the link's target differs from the manifest's")
            continue
        if kind == "file" and hash_file(path) != entry["sha256"]:
            raise EntryError(f"{name}: its sha256 differs from the manifest's")
        # Never setuid or setgid from a cache; the sticky bit of a folder (tmp/) is harmless.
        os.chmod(path, entry["mode"] & (0o1777 if kind == "dir" else 0o777))
        os.utime(path, (now, now))


def _kinds(root: Path) -> dict[str, str]:
    kinds = {}
    base = str(root)
    for relative in walk_relative(base):
        mode = os.lstat(os.path.join(base, relative)).st_mode
        kinds[relative] = "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"
    return kinds


def scan_archive(archive: Path, manifest: Manifest) -> None:
    """Check an entry without unpacking it: the archive's hash, and each member's content against the manifest."""
    check_archive(archive, manifest)
    seen = set()
    try:
        with open(archive, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as plain:
            with tarfile.open(fileobj=plain, mode="r|") as tar:
                for member in tar:
                    entry = manifest.entries.get(member.name)
                    if entry is None:
                        raise EntryError(f"{member.name}: in the archive but not in the manifest")
                    seen.add(member.name)
                    if member.isfile():
                        digest = hashlib.sha256()
                        handle = tar.extractfile(member)
                        for block in iter(lambda: handle.read(1 << 20), b""):
                            digest.update(block)
                        if entry["kind"] != "file" or digest.hexdigest() != entry["sha256"]:
                            raise EntryError(f"{member.name}: its sha256 differs from the manifest's")
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as error:
        raise EntryError(f"its archive is not a readable tar.zst ({error})") from None
    if seen != set(manifest.entries):
        raise EntryError("its archive lacks entries the manifest lists")


def manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


