"""mlbuild.system.cpio.write_initramfs: a newc archive owned by root, readable by cpio, reproducible."""

import os
import re
import subprocess

import pytest

from mlbuild.system.cpio import write_initramfs

MTIME = 1672531200
# a line of `cpio -itvn`: mode, links, uid, gid, size or "major, minor", date, name[ -> link target]
VERBOSE = re.compile(r"^(?P<mode>\S+)\s+\d+\s+(?P<uid>\d+)\s+(?P<gid>\d+)\s+(?P<size>\d+|\d+,\s+\d+)"
                     r"\s+\w{3}\s+\d+\s+\d{4}\s(?P<name>.+?)(?: -> .*)?$")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "dev").mkdir()
    (root / "bin" / "busybox").write_bytes(b"\x7fELF not really")
    (root / "bin" / "busybox").chmod(0o755)
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "etc" / "hostname").write_text("box\n")
    (root / "etc" / "odd size").write_text("12345")  # padding, and a space in a name
    return root


def write(root, archive):
    write_initramfs(root, archive, MTIME, {"bin/busybox": 0o4755}, {"dev/console": ("c", 5, 1), "dev/null": ("c", 1, 3)})


def cpio(archive, *flags) -> list[str]:
    with open(archive, "rb") as handle:
        result = subprocess.run(["cpio", *flags], stdin=handle, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_cpio_lists_every_file_folder_link_and_device(root, tmp_path):
    archive = tmp_path / "initramfs.cpio"
    write(root, archive)
    assert sorted(cpio(archive, "-it")) == sorted([
        "bin", "bin/busybox", "bin/sh", "dev", "dev/console", "dev/null", "etc", "etc/hostname", "etc/odd size",
    ])


def test_entries_are_owned_by_root_with_setuid_kept_and_device_nodes_present(root, tmp_path):
    archive = tmp_path / "initramfs.cpio"
    write(root, archive)
    entries = {}
    for line in cpio(archive, "-itvn"):
        match = VERBOSE.match(line)
        assert match, line
        entries[match["name"]] = match
    assert len(entries) == 9
    assert {(m["uid"], m["gid"]) for m in entries.values()} == {("0", "0")}
    assert entries["bin/busybox"]["mode"] == "-rwsr-xr-x"
    assert entries["bin/sh"]["mode"] == "lrwxrwxrwx"
    assert entries["etc/odd size"]["size"] == "5"
    assert (entries["dev/console"]["mode"], entries["dev/console"]["size"]) == ("crw-------", "5,   1")
    assert (entries["dev/null"]["mode"], entries["dev/null"]["size"]) == ("crw-------", "1,   3")


def test_contents_survive_a_round_trip(root, tmp_path):
    archive = tmp_path / "initramfs.cpio"
    write(root, archive)
    out = tmp_path / "out"
    out.mkdir()
    with open(archive, "rb") as handle:
        subprocess.run(["cpio", "-id", "--no-absolute-filenames", "--quiet", "bin/*", "etc/*"],
                       stdin=handle, cwd=out, check=True, timeout=10)
    assert (out / "etc" / "hostname").read_text() == "box\n"
    assert (out / "etc" / "odd size").read_text() == "12345"
    assert os.readlink(out / "bin" / "sh") == "busybox"


def test_two_runs_give_identical_bytes_whatever_the_files_mtimes(root, tmp_path):
    first, second = tmp_path / "1.cpio", tmp_path / "2.cpio"
    write(root, first)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (1e9, 1e9), follow_symlinks=False)
    write(root, second)
    assert first.read_bytes() == second.read_bytes()
