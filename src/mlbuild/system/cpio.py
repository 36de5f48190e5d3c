"""Write a cpio "newc" archive (an initramfs) with chosen owners and modes, no root needed.

Modes are normalised (see normal_mode): the builder's umask never reaches an image.
"""

import os
import stat
from pathlib import Path

TRAILER = "TRAILER!!!"


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, name: str, rdev=(0, 0), owner=(0, 0)) -> bytes:
    fields = [ino, mode, owner[0], owner[1], nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name.encode()) + 1, 0]
    header = b"070701" + b"".join(f"{value:08X}".encode() for value in fields) + name.encode() + b"\0"
    return header + b"\0" * (-len(header) % 4)


def normal_mode(st_mode: int) -> int:
    """The permission bits a file of the tree gets in an image, whatever umask it was created under.

    0755 for folders and for files with any execute bit, 0644 for other files, 0777 for
    links; set-id and sticky bits are kept (only an explicit chmod sets them, never a umask).
    """
    if stat.S_ISLNK(st_mode):
        return 0o777
    special = st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)
    executable = stat.S_ISDIR(st_mode) or st_mode & 0o111
    return special | (0o755 if executable else 0o644)


def write_initramfs(root: Path, archive: Path, mtime: int, modes: dict[str, int], devices: dict[str, tuple],
                    owners: dict[str, tuple[int, int]] | None = None) -> None:
    """Pack root owned by root:root with normal modes; modes overrides permission bits, owners {path: (uid, gid)}
    the owner, devices adds nodes {path: ('c', major, minor)}."""
    owners = owners or {}
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            entries.append(Path(folder, name))
    ino = 1
    with open(archive, "wb") as out:
        for path in sorted(entries, key=lambda p: p.relative_to(root).as_posix()):
            name = path.relative_to(root).as_posix()
            info = path.lstat()
            mode = stat.S_IFMT(info.st_mode) | modes.get(name, normal_mode(info.st_mode))
            if stat.S_ISLNK(info.st_mode):
                data = os.readlink(path).encode()
            elif stat.S_ISREG(info.st_mode):
                data = path.read_bytes()
            else:
                data = b""
            nlink = 2 if stat.S_ISDIR(info.st_mode) else 1
            out.write(_header(ino, mode, nlink, mtime, len(data), name, owner=owners.get(name, (0, 0))) + data + b"\0" * (-len(data) % 4))
            ino += 1
        for name, (kind, major, minor) in sorted(devices.items()):
            kind_bits = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
            out.write(_header(ino, kind_bits | 0o600, 1, mtime, 0, name, (major, minor)))
            ino += 1
        out.write(_header(ino, 0, 1, 0, 0, TRAILER))
