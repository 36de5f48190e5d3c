"""initramfs_compression: the initramfs QEMU boots is zstd (default), gzip or the cpio itself."""

import gzip

from conftest import x86
from test_script_export import _run_exported

from mlbuild.system.compression import unpacked_size
from mlbuild.boot.qemu import guest_memory_mib


def _images(project):
    return project.path("build/images/x86_64")


def test_gzip_repacks_only_the_images_and_its_copy_unpacks_to_the_cpio(built):
    result = built.doit("initramfs_compression=gzip")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("images")
    images = _images(built)
    assert sorted(path.name for path in images.iterdir()) == ["initramfs.cpio", "initramfs.cpio.gz", "rootfs.ext4"]
    packed = (images / "initramfs.cpio.gz").read_bytes()
    assert gzip.decompress(packed) == (images / "initramfs.cpio").read_bytes()
    assert packed[4:8] == b"\0\0\0\0"  # no time in the header: the same cpio gives the same bytes
    assert unpacked_size(images / "initramfs.cpio.gz") == (images / "initramfs.cpio").stat().st_size
    assert built.doit("initramfs_compression=gzip").executed == set()
    # Back to the default: zstd again, and gzip's copy is gone with the old output.
    assert built.doit().executed == x86("images")
    assert sorted(path.name for path in images.iterdir()) == ["initramfs.cpio", "initramfs.cpio.zst", "rootfs.ext4"]


def test_none_boots_the_cpio_itself_and_the_guest_gets_room_for_it(built):
    result = built.doit("initramfs_compression=none")
    assert result.returncode == 0, result.stdout + result.stderr
    images = _images(built)
    assert sorted(path.name for path in images.iterdir()) == ["initramfs.cpio", "rootfs.ext4"]
    assert guest_memory_mib(images / "initramfs.cpio") >= 256


def test_a_bad_value_is_one_line(built):
    result = built.doit("initramfs_compression=xz")
    assert result.returncode != 0
    assert "initramfs_compression" in result.stderr and "'zstd', 'gzip' or 'none'" in result.stderr, result.stderr


def test_the_exported_script_compresses_with_the_same_command(built, tmp_path):
    assert built.doit("initramfs_compression=gzip").returncode == 0
    exported = built.cli("script", "build:images-x86_64", "initramfs_compression=gzip")
    assert exported.returncode == 0, exported.stderr
    out = _run_exported(exported.stdout, tmp_path)
    for name in ("initramfs.cpio", "initramfs.cpio.gz", "rootfs.ext4"):
        assert (out / "images/x86_64" / name).read_bytes() == (_images(built) / name).read_bytes(), name
