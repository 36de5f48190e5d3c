"""`mlbuild write-image`: a synthetic disk image written to a loop device (or a plain file standing in for one with
--to-file) and read back; each refusal one line naming the device, nothing written.

Loop devices, mounts and the root device are the real ones where this runs as root (losetup, mount); the tests
that need them are skipped elsewhere, and the file-backed ones run everywhere.
"""

import contextlib
import grp
import hashlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import base_environment

DISK = "build/disks/x86_64/disk.img"
IMAGE_SIZE = 5 * 1024 * 1024 + 12345  # more than one 4 MiB block, and not a whole number of sectors
DEVICE_SIZE = 8 * 1024 * 1024
FILL = b"\xa5"  # what the device held before: the part past the image must still hold it


@pytest.fixture
def project(project):
    """The synthetic project with a kernel (hello, as far as the graph can tell): x86_64 gets build:disk-x86_64."""
    project.update_recipe("hello", arch={"x86_64": {"kernel": "bin/hello"}})
    return project


@pytest.fixture
def image(project) -> bytes:
    """A synthetic disk image where build:disk-x86_64 puts the real one: build/disks/x86_64/disk.img."""
    data = random.Random(30).randbytes(IMAGE_SIZE)
    path = project.path(DISK)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return data


def device_file(path: Path, size: int = DEVICE_SIZE) -> Path:
    path.write_bytes(FILL * size)
    return path


def write_image(project, device, *options: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "write-image", "x86_64", str(device), *options],
                          cwd=project.root, env=base_environment(), stdin=stdin, capture_output=True, text=True,
                          timeout=120)


def assert_refused(result, device, reason: str) -> None:
    """One line on stderr, naming the device and the reason; exit 1; no traceback."""
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"mlbuild: write-image: {device}: "), result.stderr
    assert reason in result.stderr, result.stderr


def assert_written(content: bytes, image: bytes, result, before: bytes | None = None) -> None:
    """The image at the start, the rest of the device as it was (FILL unless before says otherwise), the result line."""
    assert result.returncode == 0, result
    assert content[:len(image)] == image
    assert content[len(image):] == (before or FILL * len(content))[len(image):]
    assert f"and read it back: sha256 {hashlib.sha256(image).hexdigest()} matches" in result.stdout


# --- loop devices, mounts -------------------------------------------------------------------------------

def assert_not_written(content: bytes, before: bytes, image: bytes) -> None:
    """A mounted ext4 changes its own superblock (mount count, times): its first KiB, which ext4 leaves alone, and the
    image's absence show that nothing was written."""
    assert content[:1024] == before[:1024] and not content.startswith(image[:4096])


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def loop_device(backing: Path, partitions: bool = False, read_only: bool = False):
    """A loop device over backing (losetup -f --show), detached at the end; the test is skipped without one."""
    if shutil.which("losetup") is None or os.geteuid() != 0:
        pytest.skip("loop devices need losetup and root")
    attached = _run("losetup", "-f", "--show", *(["-P"] if partitions else []), *(["-r"] if read_only else []), str(backing))
    if attached.returncode != 0:
        pytest.skip(f"no loop device here: {attached.stderr.strip()}")
    device = Path(attached.stdout.strip())
    try:
        if partitions and not Path(f"{device}p1").exists():
            _run("partx", "-a", str(device))  # where the kernel's own scan did not add them (no udev, a container)
        yield device
    finally:
        _run("losetup", "-d", str(device))


def sfdisk() -> str:
    """sfdisk (Debian's fdisk package), to give a stick partitions; the test is skipped without it."""
    return shutil.which("sfdisk") or pytest.skip("no sfdisk (fdisk) here")


MOUNT_FAILED = 99


def write_image_while_mounted(project, mount: Path, folder: Path, device: Path, *options: str):
    """write-image of device while mount is mounted on folder, in a mount namespace of its own (unshare): the mount
    ends with the command, and the sandboxes of builds running beside the test (bubblewrap copies the mount table
    it starts from) never see it, so the loop device can be detached at the end."""
    if shutil.which("unshare") is None or _run("unshare", "--mount", "true").returncode != 0:
        pytest.skip("no mount namespaces here (unshare)")
    folder.mkdir()
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'mount "$1" "$2" || exit {MOUNT_FAILED}; shift 2; exec "$@"', "sh", str(mount), str(folder),
               sys.executable, "-m", "mlbuild.frontend.cli", "write-image", "x86_64", str(device), *options]
    result = subprocess.run(command, cwd=project.root, env=base_environment(), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    if result.returncode == MOUNT_FAILED:
        pytest.skip(f"cannot mount here: {result.stderr.strip()}")
    return result


def test_writes_the_image_to_a_loop_device_and_verifies_it(project, image, tmp_path):
    backing = device_file(tmp_path / "stick")
    with loop_device(backing) as device:
        result = write_image(project, device, "--yes")
        shown = result.stdout.splitlines()[0]
        assert shown.startswith(f"{device}: loop device backed by {backing}, 8.0 MiB (8388608 bytes)"), result.stdout
        assert result.stdout.splitlines()[1] == "  no partitions"
        assert_written(backing.read_bytes(), image, result)
        assert result.stdout.splitlines()[-1] == (f"write-image: {device}: wrote build/disks/x86_64/disk.img (5.0 MiB) "
                                                  f"and read it back: sha256 {hashlib.sha256(image).hexdigest()} matches")


def test_asks_for_the_device_name_again_on_a_terminal(project, image, tmp_path):
    """The question on a real terminal (a pty): the name typed writes, another name writes nothing."""
    backing = device_file(tmp_path / "stick")
    with loop_device(backing) as device:
        for typed, written in ((b"sdz\n", False), (device.name.encode() + b"\n", True)):
            controller, terminal = os.openpty()
            try:
                os.write(controller, typed)  # waits in the terminal's line buffer until the question reads it
                result = write_image(project, device, stdin=terminal)
            finally:
                os.close(terminal)
                os.close(controller)
            assert f"Everything on {device} will be lost. Type its name again" in result.stdout
            if written:
                assert_written(backing.read_bytes(), image, result)
            else:
                assert_refused(result, device, "'sdz' is not its name; nothing written")
                assert backing.read_bytes() == FILL * DEVICE_SIZE


def test_refuses_a_mounted_device(project, image, tmp_path):
    backing = device_file(tmp_path / "stick")
    assert _run("mke2fs", "-q", "-F", "-t", "ext4", str(backing)).returncode == 0
    before = backing.read_bytes()
    folder = tmp_path / "mnt"
    with loop_device(backing) as device:
        result = write_image_while_mounted(project, device, folder, device, "--yes")
        assert_refused(result, device, f"{device.name} is mounted at {folder}; unmount it first")
    assert_not_written(backing.read_bytes(), before, image)


def test_refuses_a_device_one_of_whose_partitions_is_mounted_and_a_partition_itself(project, image, tmp_path):
    backing = device_file(tmp_path / "stick")
    layout = subprocess.run([sfdisk(), "-q", str(backing)], input="label: gpt\n,2M\n,\n", capture_output=True, text=True)
    assert layout.returncode == 0, layout.stderr
    with loop_device(backing, partitions=True) as device:
        partition = Path(f"{device}p1")
        if not partition.exists():
            pytest.skip("the loop device's partitions have no device nodes here")
        assert _run("mke2fs", "-q", "-F", "-t", "ext4", str(partition)).returncode == 0
        before = backing.read_bytes()
        folder = tmp_path / "mnt"
        result = write_image_while_mounted(project, partition, folder, device, "--yes")
        assert_refused(result, device, f"{partition.name} is mounted at {folder}; unmount it first")
        whole = write_image(project, partition, "--yes")
        assert_refused(whole, partition, f"is a partition ({partition.name}) of {device}; give the whole device")
        assert_not_written(backing.read_bytes(), before, image)


def test_shows_the_partitions_the_device_has_before_writing_over_them(project, image, tmp_path):
    backing = device_file(tmp_path / "stick")
    layout = subprocess.run([sfdisk(), "-q", str(backing)], input="label: gpt\n,4M\n", capture_output=True, text=True)
    assert layout.returncode == 0, layout.stderr
    with loop_device(backing, partitions=True) as device:
        if not Path(f"{device}p1").exists():
            pytest.skip("the loop device's partitions have no device nodes here")
        if shutil.which("mkfs.vfat") is None:
            pytest.skip("no mkfs.vfat (dosfstools) here")
        assert _run("mkfs.vfat", "-n", "STICK", f"{device}p1").returncode == 0
        before = backing.read_bytes()
        result = write_image(project, device, "--yes")
        assert result.stdout.splitlines()[1] == f"  {device.name}p1  4.0 MiB  vfat  STICK", result.stdout
        assert_written(backing.read_bytes(), image, result, before)


def test_refuses_a_device_the_kernel_holds_open_exclusively(project, image, tmp_path):
    """In use where neither mountinfo nor lsblk show it (another mount namespace, a RAID member): the exclusive
    open is the kernel's refusal. Held here by an exclusive open of this process."""
    backing = device_file(tmp_path / "stick")
    with loop_device(backing) as device:
        holder = os.open(device, os.O_RDONLY | os.O_EXCL)
        try:
            result = write_image(project, device, "--yes")
        finally:
            os.close(holder)
        assert_refused(result, device, "in use by the system (mounted, perhaps in another namespace, swap, RAID or LVM): device busy")
    assert backing.read_bytes() == FILL * DEVICE_SIZE


def test_refuses_a_read_only_device(project, image, tmp_path):
    backing = device_file(tmp_path / "stick")
    with loop_device(backing, read_only=True) as device:
        assert_refused(write_image(project, device, "--yes"), device, "is read-only (a write-protect switch?)")
    assert backing.read_bytes() == FILL * DEVICE_SIZE


def test_refuses_a_device_larger_than_the_size_limit(project, image, tmp_path):
    backing = device_file(tmp_path / "stick")
    with loop_device(backing) as device:
        result = write_image(project, device, "--yes", "--size-limit", "4M")
        assert_refused(result, device, "8.0 MiB is larger than the size limit 4.0 MiB (a USB stick, not a disk?); "
                                       "--force-size writes to it anyway")
        assert backing.read_bytes() == FILL * DEVICE_SIZE
        forced = write_image(project, device, "--yes", "--size-limit", "4M", "--force-size")
        assert_written(backing.read_bytes(), image, forced)


def _root_device() -> str | None:
    """The block device mounted at / here, as mountinfo names it; None when / is not on one (an overlay)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        source = fields[fields.index("-") + 2]
        if fields[4] == "/" and source.startswith("/dev/") and Path(source).is_block_device():
            return source
    return None


def test_refuses_the_device_holding_the_root_file_system(project):
    """Safe whatever the code does: no image to write, no --yes and no terminal; the root refusal comes first."""
    root = _root_device()
    if root is None:
        pytest.skip("/ is not on a block device here")
    whole = Path(f"/sys/class/block/{Path(root).resolve().name}")
    device = f"/dev/{whole.resolve().parent.name}" if (whole / "partition").exists() else root
    result = write_image(project, device)
    assert_refused(result, device, "holds the running system's root file system (")
    assert "is mounted at /)" in result.stderr


# --- a plain file standing in for a device --------------------------------------------------------------

def test_writes_to_a_file_standing_in_for_a_device_with_to_file(project, image, tmp_path):
    stick = device_file(tmp_path / "stick.img")
    result = write_image(project, stick, "--yes", "--to-file")
    assert_written(stick.read_bytes(), image, result)
    assert result.stdout.splitlines()[0] == f"{stick}: a regular file standing in for a device (--to-file), 8.0 MiB (8388608 bytes)"


def test_refuses_a_regular_file_without_to_file(project, image, tmp_path):
    stick = device_file(tmp_path / "stick.img")
    assert_refused(write_image(project, stick, "--yes"), stick,
                   "is a regular file, not a block device; --to-file writes to a file standing in for one")
    assert stick.read_bytes() == FILL * DEVICE_SIZE


@pytest.mark.parametrize("what", ["missing", "character", "folder"])
def test_refuses_what_is_not_a_block_device(project, image, tmp_path, what):
    device = {"missing": tmp_path / "sdz", "character": Path("/dev/null"), "folder": tmp_path}[what]
    reason = {"missing": "no such device or file (lsblk lists the block devices)",
              "character": "is not a block device (a character device)", "folder": "is not a block device (a folder)"}[what]
    assert_refused(write_image(project, device, "--yes", "--to-file"), device, reason)
    assert not (tmp_path / "sdz").exists()  # a mistyped name is not made into a file


def test_refuses_a_large_sparse_file_unless_force_size(project, image, tmp_path):
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as made:
        made.truncate(200 * 1024 ** 3)  # sparse: 200 GiB that take no room
    assert_refused(write_image(project, disk, "--yes", "--to-file"), disk,
                   "200.0 GiB is larger than the size limit 128.0 GiB (a USB stick, not a disk?)")
    forced = write_image(project, disk, "--yes", "--to-file", "--force-size")
    assert forced.returncode == 0, forced
    with open(disk, "rb") as written:
        assert written.read(len(image)) == image


def test_refuses_a_device_smaller_than_the_image(project, image, tmp_path):
    small = device_file(tmp_path / "small.img", 1024 * 1024)
    assert_refused(write_image(project, small, "--yes", "--to-file"), small,
                   "1.0 MiB is smaller than build/disks/x86_64/disk.img (5.0 MiB)")
    assert small.read_bytes() == FILL * 1024 * 1024


def test_refuses_a_missing_image_naming_the_task_that_builds_it(project, tmp_path):
    stick = device_file(tmp_path / "stick.img")
    assert_refused(write_image(project, stick, "--yes", "--to-file"), stick,
                   "no image to write: build/disks/x86_64/disk.img is not built; build it with `doit build:disk-x86_64`")


def test_refuses_an_arch_with_no_disk_image(project, tmp_path):
    project.update_recipe("hello", arch={})  # no kernel in the system: no build:disk-x86_64
    stick = device_file(tmp_path / "stick.img")
    assert_refused(write_image(project, stick, "--yes", "--to-file"), stick,
                   "x86_64 has no disk image (arches/x86_64.toml has no [firmware], or no recipe of its system declares a kernel)")


def test_refuses_without_a_terminal_and_without_yes(project, image, tmp_path):
    stick = device_file(tmp_path / "stick.img")
    result = write_image(project, stick, "--to-file")
    assert_refused(result, stick, "no terminal to ask on (standard input is not one); --yes writes without asking, for scripts")
    assert result.stdout == "" and stick.read_bytes() == FILL * DEVICE_SIZE


def test_refuses_the_image_itself(project, image):
    own = project.path(DISK)
    assert_refused(write_image(project, own, "--yes", "--to-file"), own, "is the image itself")
    assert own.read_bytes() == image


def test_refuses_a_file_a_loop_device_uses(project, image, tmp_path):
    backing = device_file(tmp_path / "stick")
    with loop_device(backing) as device:
        assert_refused(write_image(project, backing, "--yes", "--to-file"), backing,
                       f"is the backing file of {device}; `losetup -d {device}` it first")
    assert backing.read_bytes() == FILL * DEVICE_SIZE


def test_an_unknown_arch_and_a_bad_size_limit_are_one_line(project, tmp_path):
    stick = device_file(tmp_path / "stick.img")
    unknown = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "write-image", "mips", str(stick)],
                             cwd=project.root, env=base_environment(), capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and unknown.stderr == "mlbuild: write-image: no arch 'mips' in this configuration (arches: x86_64)\n"
    bad = write_image(project, stick, "--size-limit", "lots")
    assert bad.returncode == 2 and bad.stderr.startswith("mlbuild: write-image: --size-limit 'lots': expected a number of bytes")


def test_refuses_a_device_it_may_not_write_before_asking(project, image, tmp_path, monkeypatch, capsys):
    """As root every file is writable, and no other user can run this checkout's venv here: os.access answers as it
    would for a user outside the device's group (the one mock of this file)."""
    from mlbuild.frontend import cli

    stick = device_file(tmp_path / "stick.img")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == stick else real_access(path, mode))
    assert cli.main(["-C", str(project.root), "write-image", "x86_64", str(stick), "--to-file", "--yes"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"mlbuild: write-image: {stick}: not writable by ")
    assert err.endswith(f": run it as root or as a member of the {grp.getgrgid(stick.stat().st_gid).gr_name} group\n")
    assert stick.read_bytes() == FILL * DEVICE_SIZE


def test_ctrl_c_while_writing_is_one_line_saying_what_the_device_holds(project, image, tmp_path,
                                                                                      monkeypatch, capsys, request):
    """A real SIGINT, sent to this process at the moment the written blocks are synced (where a long write spends
    its time): one line, exit status 130, as for any interrupted mlbuild command; then an uninterrupted write."""
    import signal

    # Python's own handler, as in the mlbuild command (a pytest-xdist worker ignores SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    from mlbuild.frontend import cli

    stick = device_file(tmp_path / "stick.img")
    real_fsync = os.fsync

    def interrupted_fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}") == str(stick):  # not the project's own files, which it syncs too
            os.kill(os.getpid(), signal.SIGINT)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    assert cli.main(["-C", str(project.root), "write-image", "x86_64", str(stick), "--to-file", "--yes"]) == 130
    err = capsys.readouterr().err
    assert err == (f"mlbuild: write-image: {stick}: interrupted before the image written was read back: "
                   "it is not verified; write it again\n")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert cli.main(["-C", str(project.root), "write-image", "x86_64", str(stick), "--to-file", "--yes"]) == 0
    assert stick.read_bytes()[:len(image)] == image
