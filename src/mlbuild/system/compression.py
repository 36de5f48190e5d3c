"""The initramfs QEMU boots: zstd (the default), gzip, or not compressed (`initramfs_compression`).

The kernel configuration of recipes/linux.toml reads the first two (CONFIG_RD_ZSTD,
CONFIG_RD_GZIP). Both are made by their programs with fixed settings, so the same cpio
always gives the same bytes, and `mlbuild script` runs the very same commands.
"""

import subprocess
from pathlib import Path

from mlbuild.system import zstd
from mlbuild.errors import MlbuildError

FILES = {"zstd": "initramfs.cpio.zst", "gzip": "initramfs.cpio.gz", "none": "initramfs.cpio"}
PROGRAMS = {"zstd": "zstd", "gzip": "gzip", "none": None}


def booted(kind: str) -> str:
    """The file name in build/images/<arch>/ that QEMU boots."""
    return FILES[kind]


def command(kind: str, source: str, target: str) -> list[str] | None:
    """The command that writes target from source (shell words allowed); None when nothing is compressed."""
    if kind == "zstd":
        return ["zstd", "-q", f"-{zstd.LEVEL}", "-T1", "--no-progress", "-f", source, "-o", target]
    if kind == "gzip":
        # -n: no name or time in the header, so the bytes depend on the input alone.
        return ["sh", "-c", 'gzip -9 -n -c "$1" > "$2"', "gzip", source, target]
    return None


def compress(kind: str, source: Path, target: Path) -> None:
    """Write target, the compressed copy of source; one line naming both if the program fails."""
    words = command(kind, str(source), str(target))
    if words is None:
        return
    try:
        result = subprocess.run(words, capture_output=True, text=True)
    except FileNotFoundError:
        raise MlbuildError(f"compressing {source.name}: no {PROGRAMS[kind]} program (Debian/Ubuntu: apt-get install {PROGRAMS[kind]})") from None
    if result.returncode != 0:
        target.unlink(missing_ok=True)
        message = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise MlbuildError(f"compressing {source} into {target.name}: {PROGRAMS[kind]} failed (exit status {result.returncode}): {message}")


def unpacked_size(path: Path) -> int:
    """The size of the cpio inside a booted initramfs (zstd's frame header, gzip's trailer, or the file)."""
    if path.suffix == ".zst":
        return zstd.content_size(path)
    if path.suffix == ".gz":
        with open(path, "rb") as handle:
            handle.seek(-4, 2)
            return int.from_bytes(handle.read(4), "little")  # ISIZE: the size modulo 4 GiB
    return path.stat().st_size
