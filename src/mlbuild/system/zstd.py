"""A zstd-compressed copy of an initramfs, as the kernel's unpacker reads it (CONFIG_RD_ZSTD).

zstd rather than xz: about as small at the level used here, and it unpacks
many times faster, which counts at every boot of an emulated guest holding a
compiler. The `zstd` program does the work (compression.py runs it): one
thread (its output then depends only on the input, the level and zstd's
version), the input's size recorded in the frame header (read back by
content_size).
"""

from pathlib import Path

from mlbuild.errors import MlbuildError

# -12: within a few per cent of -19's size at a tenth of its time (measured on
# LLVM's binaries); its 4 MiB window is all the guest kernel allocates to unpack.
LEVEL = 12
MAGIC = b"\x28\xb5\x2f\xfd"


def content_size(path: Path) -> int:
    """The uncompressed size that a zstd file's first frame header records (RFC 8878, 3.1.1.1)."""
    with open(path, "rb") as handle:
        header = handle.read(18)
    if header[:4] != MAGIC or len(header) < 6:
        raise MlbuildError(f"{path}: not a zstd file")
    descriptor = header[4]
    single_segment = descriptor >> 5 & 1
    size_bytes = {0: single_segment, 1: 2, 2: 4, 3: 8}[descriptor >> 6]
    if not size_bytes:
        raise MlbuildError(f"{path}: its zstd frame header records no content size")
    offset = 5 + (0 if single_segment else 1) + {0: 0, 1: 1, 2: 2, 3: 4}[descriptor & 3]
    size = int.from_bytes(header[offset:offset + size_bytes], "little")
    return size + 256 if size_bytes == 2 else size
