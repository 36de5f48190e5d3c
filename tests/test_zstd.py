"""mlbuild.system.zstd: the compressed initramfs QEMU boots: the real zstd reads it back, same bytes each run, size known."""

import random
import subprocess

import pytest

from mlbuild.system.cpio import write_initramfs
from mlbuild.errors import MlbuildError
from mlbuild.boot.qemu import guest_memory_mib
from mlbuild.system.compression import compress as compress_as
from mlbuild.system.zstd import content_size


def compress(source, target):
    compress_as("zstd", source, target)

MTIME = 1672531200


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    # like a program: repetitive, but not trivially so
    rng = random.Random(1)
    words = [bytes(rng.randrange(256) for _ in range(16)) for _ in range(64)]
    (root / "usr" / "bin" / "llvm").write_bytes(b"".join(rng.choice(words) for _ in range(40_000)))
    (root / "usr" / "bin" / "clang").symlink_to("llvm")
    (root / "init").write_text("#!/bin/sh\n")
    archive = tmp_path / "initramfs.cpio"
    write_initramfs(root, archive, MTIME, {}, {"dev/console": ("c", 5, 1)})
    return archive


def test_zstd_unpacks_it_to_the_archive_cpio_lists(archive, tmp_path):
    compressed = tmp_path / "initramfs.cpio.zst"
    compress(archive, compressed)
    assert compressed.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    unpacked = subprocess.run(["zstd", "-d", "-c", compressed], capture_output=True, check=True).stdout
    assert unpacked == archive.read_bytes()
    listing = subprocess.run(["cpio", "-it"], input=unpacked, capture_output=True, check=True).stdout.decode().split()
    assert sorted(listing) == ["dev/console", "init", "usr", "usr/bin", "usr/bin/clang", "usr/bin/llvm"]
    assert compressed.stat().st_size < archive.stat().st_size / 3


def test_two_runs_give_identical_bytes(archive, tmp_path):
    first, second = tmp_path / "1.zst", tmp_path / "2.zst"
    compress(archive, first)
    compress(archive, second)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("size", [0, 100, 300, 65_791, 65_792, 1_000_000])
def test_the_frame_header_records_the_unpacked_size(tmp_path, size):
    """Every width of zstd's size field: 1 byte (single segment), 2 bytes (+256), 4 bytes; 0 too."""
    source, target = tmp_path / "data", tmp_path / "data.zst"
    source.write_bytes(random.Random(size).randbytes(size))
    compress(source, target)
    assert content_size(target) == size


def test_guest_memory_counts_the_unpacked_initramfs_too(tmp_path):
    big = tmp_path / "initramfs.cpio"
    big.write_bytes(bytes(300 * 2**20))  # zeros: a tiny .zst that unpacks to 300 MiB
    compressed = tmp_path / "initramfs.cpio.zst"
    compress(big, compressed)
    assert compressed.stat().st_size < 2**20
    assert guest_memory_mib(compressed) == 576  # (held 0 + unpacked 300 + 256) MiB, up to a multiple of 64
    assert guest_memory_mib(big) == 896  # uncompressed: held and unpacked, 300 each


def test_a_file_that_is_not_zstd_is_named(tmp_path):
    plain = tmp_path / "initramfs.cpio"
    plain.write_bytes(b"070701" + bytes(100))
    with pytest.raises(MlbuildError, match=rf"^{plain}: not a zstd file$"):
        content_size(plain)


def test_without_the_zstd_program_one_line_says_what_to_install(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    target = tmp_path / "initramfs.cpio.zst"
    with pytest.raises(MlbuildError, match=r"^compressing initramfs.cpio: no zstd program \(Debian/Ubuntu: apt-get install zstd\)$"):
        compress(archive, target)
    assert not target.exists()


def test_a_failing_zstd_leaves_no_file_and_says_why(tmp_path):
    missing = tmp_path / "initramfs.cpio"
    target = tmp_path / "initramfs.cpio.zst"
    with pytest.raises(MlbuildError, match=r"^compressing .*initramfs.cpio into initramfs.cpio.zst: zstd failed \(exit status 1\): .*No such file"):
        compress(missing, target)
    assert not target.exists()
