"""disk.img (steps/disk.py): a GPT disk with the kernel as UEFI's default loader and the root partition, made
by the real mkfs.vfat, mtools and sfdisk from a stand-in kernel and a real ext4 image; reproducible."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlbuild.model.arches import load_arch
from mlbuild.steps.disk import ESP_TYPE, LINUX_TYPE, MIB, identifiers, layout, make_disk

REPO = Path(__file__).resolve().parents[1]
TOOLS = ["mkfs.vfat", "mmd", "mcopy", "mtype", "sfdisk", "mke2fs"]
pytestmark = pytest.mark.skipif(any(shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None for tool in TOOLS),
                                reason="needs dosfstools, mtools, fdisk and e2fsprogs")
ENV = {**os.environ, "PATH": f"/usr/sbin:/sbin:{os.environ.get('PATH', '')}", "MTOOLS_SKIP_CHECK": "1"}


def _rootfs(folder: Path) -> Path:
    tree = folder / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("mlbuild-x86_64\n")
    image = folder / "rootfs.ext4"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-U", "6d6c6275-696c-4400-8000-000000000001",
                    "-E", "hash_seed=6d6c6275-696c-4400-8000-000000000001", "-d", str(tree), str(image), "8M"],
                   check=True, env={**ENV, "E2FSPROGS_FAKE_TIME": "1672531200"})
    return image


def _make(tmp: Path, kernel_bytes: bytes, name: str, umask: int = 0o022, tz: str = "UTC") -> Path:
    kernel = tmp / "kernel"
    kernel.write_bytes(kernel_bytes)
    os.utime(kernel, (2_000_000_000, 2_000_000_000))  # a build's own time: never in the disk
    disk = tmp / name
    old_umask, old_tz = os.umask(umask), os.environ.get("TZ")
    os.environ["TZ"] = tz
    try:
        with open(tmp / f"{name}.log", "w") as log:
            make_disk(kernel, tmp / "rootfs.ext4", disk, tmp / f"work-{name}", "x86_64", "BOOTX64.EFI",
                      load_arch(REPO / "arches" / "x86_64.toml", "arches/x86_64.toml").root_partuuid, "build:disk-x86_64", log)
    finally:
        os.umask(old_umask)
        os.environ.pop("TZ") if old_tz is None else os.environ.__setitem__("TZ", old_tz)
    return disk


def _dump(disk: Path) -> str:
    return subprocess.run(["sfdisk", "-d", str(disk)], capture_output=True, text=True, check=True, env=ENV).stdout


def test_the_disk_has_a_gpt_the_kernel_as_default_loader_and_the_root_partition(tmp_path):
    _rootfs(tmp_path)
    kernel = os.urandom(3 * MIB + 123)
    disk = _make(tmp_path, kernel, "disk.img")
    table = _dump(disk)
    root_partuuid = load_arch(REPO / "arches" / "x86_64.toml", "x").root_partuuid
    assert "label: gpt" in table
    sizes = layout(len(kernel), (tmp_path / "rootfs.ext4").stat().st_size)
    assert disk.stat().st_size == sizes["total"] * MIB
    partitions = [line for line in table.splitlines() if line.startswith(str(disk))]
    assert len(partitions) == 2
    assert f"type={ESP_TYPE}" in partitions[0] and "start=        2048" in partitions[0]
    assert f"type={LINUX_TYPE}" in partitions[1] and f"uuid={root_partuuid.upper()}" in partitions[1]
    # The EFI system partition is FAT32 holding EFI/BOOT/BOOTX64.EFI, byte for byte the kernel.
    esp = f"{disk}@@{MIB}"
    loader = subprocess.run(["mtype", "-i", esp, "::EFI/BOOT/BOOTX64.EFI"], capture_output=True, check=True, env=ENV).stdout
    assert loader == kernel
    assert b"FAT32" in disk.read_bytes()[MIB:MIB + 512]
    # Partition 2 is rootfs.ext4 as it is.
    start = sizes["root_start"] * MIB
    root = (tmp_path / "rootfs.ext4").read_bytes()
    with open(disk, "rb") as image:
        image.seek(start)
        assert image.read(len(root)) == root


def test_two_builds_are_bit_identical_and_the_identifiers_follow_the_contents(tmp_path):
    _rootfs(tmp_path)
    kernel = os.urandom(2 * MIB)
    first = _make(tmp_path, kernel, "first.img", umask=0o022, tz="UTC")
    second = _make(tmp_path, kernel, "second.img", umask=0o077, tz="Asia/Tokyo")
    assert first.read_bytes() == second.read_bytes()
    other = _make(tmp_path, kernel + b"x", "other.img")
    ids, other_ids = (identifiers("x86_64", k, "r") for k in ("a" * 64, "b" * 64))
    assert ids["disk"] != other_ids["disk"] and ids["esp"] != other_ids["esp"] and ids["serial"] != other_ids["serial"]
    label = [line for line in _dump(first).splitlines() if line.startswith("label-id")]
    assert label != [line for line in _dump(other).splitlines() if line.startswith("label-id")]


def test_the_shell_form_makes_the_same_disk(tmp_path):
    """`mlbuild script` prints the disk step's commands: run them here and get mlbuild's bytes."""
    from mlbuild.steps.disk import DiskStep

    _rootfs(tmp_path)
    kernel = os.urandom(MIB + 7)
    disk = _make(tmp_path, kernel, "disk.img")

    class Facts:
        root_partuuid = load_arch(REPO / "arches" / "x86_64.toml", "x").root_partuuid
        firmware = type("F", (), {"loader": "BOOTX64.EFI"})

    class Script:
        def path(self, path):
            return str(path)

    class Disk(DiskStep):  # a step without a project: the paths and the arch's facts given
        arch = "x86_64"
        output, work = tmp_path / "out", tmp_path / "shell-work"
        kernel, rootfs, facts = tmp_path / "kernel", tmp_path / "rootfs.ext4", Facts

        def __init__(self):
            pass

    text = Disk().shell(Script())
    subprocess.run(["bash", "-euo", "pipefail", "-c", text], check=True, env=ENV)
    assert (tmp_path / "out" / "disk.img").read_bytes() == disk.read_bytes()
