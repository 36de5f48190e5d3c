"""`mlbuild write-image <arch> DEVICE`: the arch's disk image onto a USB stick or SD card, checked, confirmed, verified.

Before anything is written it refuses, in one line naming the device and the reason: a path that is not a
block device (a regular file only with --to-file), a partition, a read-only device, the device holding / or
anything else mounted or used as swap (block_devices.py), a device larger than the size limit (a USB stick,
not a disk: --force-size), then an arch with no disk image (build:disk-<arch>, steps/disk.py) and an image
missing or larger than the device. It shows the device's
model, size and partitions and asks for its name again (--yes: no question, for scripts; without a terminal
and without --yes it refuses). It writes in large blocks with plain writes on an exclusive open (the kernel
refuses a device in use), fsyncs, drops the written pages from the cache and reads the image back, comparing
its sha256 with the one read from the image while writing.
"""

import errno
import fcntl
import getpass
import grp
import hashlib
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlbuild import block_devices
from mlbuild.errors import InputError, MlbuildError
from mlbuild.model.graph import disk_task
from mlbuild.model.models import SIZE_FORMS, parse_size
from mlbuild.reporting.size import human_size
from mlbuild.steps.disk import FILE_NAME

SIZE_LIMIT = "128G"  # larger is a disk, not a stick: refused without --force-size
BLOCK = 4 * 1024 * 1024
BLKRRPART = 0x125F  # <linux/fs.h> _IO(0x12, 95): read the partition table again


class Interrupted(MlbuildError):
    exit_status = 130


def add_parser(commands) -> None:
    parser = commands.add_parser("write-image", help="write the arch's disk image to a USB stick or SD card and verify it")
    parser.add_argument("arch", help="the arch whose disk image (build:disk-<arch>: build/disks/<arch>/disk.img) is written, e.g. x86_64")
    parser.add_argument("device", help="the whole device, e.g. /dev/sdb or /dev/disk/by-id/usb-…")
    parser.add_argument("--yes", action="store_true", help="write without asking for the device's name again (scripts)")
    parser.add_argument("--size-limit", default=SIZE_LIMIT, metavar="SIZE",
                        help=f"refuse a device larger than SIZE (default {SIZE_LIMIT}; K, M, G, T: powers of 1024)")
    parser.add_argument("--force-size", action="store_true", help="write to a device larger than the size limit")
    parser.add_argument("--to-file", action="store_true",
                        help="DEVICE is a regular file standing in for a device of its size (tests, VM disks): it must "
                             "exist (truncate -s 8G FILE makes one) and is written from its start, as a device would be")
    parser.set_defaults(handler=cmd_write_image)


@dataclass
class Target:
    """Where the image goes: a block device, or with --to-file a regular file standing in for one."""
    label: str  # as typed
    path: Path
    size: int
    block: bool
    shown: list[str] = field(default_factory=list)  # what is shown before the question
    names: set[str] = field(default_factory=set)  # what may be typed to confirm


def cmd_write_image(project, args) -> int:
    """Write the arch's disk image to a USB stick or SD card, after checks and a confirmation; verify it."""
    if args.arch not in project.config.arches:
        raise InputError(f"write-image: no arch {args.arch!r} in this configuration (arches: {', '.join(project.config.arches)})")
    try:
        limit = parse_size(args.size_limit)
    except ValueError:
        raise InputError(f"write-image: --size-limit {args.size_limit!r}: expected {SIZE_FORMS}") from None
    target = _target(args)  # the device's refusals come first: they hold whatever the image is
    if target.size > limit and not args.force_size:
        _refuse(target, f"{human_size(target.size)} is larger than the size limit {human_size(limit)} "
                        "(a USB stick, not a disk?); --force-size writes to it anyway")
    step = project.steps.get(disk_task(args.arch))
    if step is None:
        _refuse(target, f"{args.arch} has no disk image (arches/{args.arch}.toml has no [firmware], "
                        "or no recipe of its system declares a kernel)")
    image = step.output / FILE_NAME
    if not image.is_file():
        _refuse(target, f"no image to write: {project.relative(image)} is not built; build it with `doit {step.name}`")
    # One open file from the checks to the last byte: a build replacing the disk image meanwhile changes nothing here.
    with open(image, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        if size > target.size:
            _refuse(target, f"{human_size(target.size)} is smaller than {project.relative(image)} ({human_size(size)})")
        if not target.block and os.path.samefile(image, target.path):
            _refuse(target, "is the image itself")
        _confirm(args, target, project.relative(image))
        digest = _write(source, size, target)
    print(f"write-image: {target.label}: wrote {project.relative(image)} ({human_size(size)}) "
          f"and read it back: sha256 {digest} matches")
    return 0


def _refuse(target: "Target | str", reason: str):
    raise MlbuildError(f"write-image: {target.label if isinstance(target, Target) else target}: {reason}")


def _target(args) -> Target:
    label, path = args.device, Path(args.device)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        _refuse(label, "no such device" + (" or file" if args.to_file else "") + " (lsblk lists the block devices)")
    if stat.S_ISREG(info.st_mode):
        if not args.to_file:
            _refuse(label, "is a regular file, not a block device; --to-file writes to a file standing in for one")
        _writable(label, path, info)
        loops = block_devices.loops_backed_by(path)
        if loops:
            _refuse(label, f"is the backing file of /dev/{loops[0]}; `losetup -d /dev/{loops[0]}` it first")
        return Target(label, path, info.st_size, False, [f"{label}: a regular file standing in for a device (--to-file), "
                                                         f"{_bytes(info.st_size)}"], {label, str(path.resolve())})
    if not stat.S_ISBLK(info.st_mode):
        _refuse(label, "is not a block device (" + ("a folder" if stat.S_ISDIR(info.st_mode) else "a character device"
                                                   if stat.S_ISCHR(info.st_mode) else "a pipe or socket") + ")")
    _writable(label, path, info)
    device = block_devices.describe(path)
    if device.partition_of:
        _refuse(label, f"is a partition ({device.name}) of /dev/{device.partition_of}; give the whole device: "
                       "the image holds its own partition table")
    uses = block_devices.uses(device)
    root = next((use for use in uses if use.holds_root), None)
    if root:
        _refuse(label, f"holds the running system's root file system ({root.name} is mounted at /)")
    if uses:
        use = uses[0]
        _refuse(label, f"{use.name} is in use as swap; swapoff it first" if use.where == "swap"
                else f"{use.name} is mounted at {use.where}; unmount it first")
    if device.read_only:
        _refuse(label, "is read-only (a write-protect switch?)")
    shown = [f"{label}: {device.model or 'no model given'}, {_bytes(device.size)}"
             + (", removable" if device.removable else "")]
    for part in device.partitions or [None]:
        shown.append("  ".join(["", part.name, human_size(part.size), part.fstype, part.label]).rstrip()
                     if part else "  no partitions")
    return Target(label, path, device.size, True, shown, {label, str(path.resolve()), device.name, f"/dev/{device.name}"})


def _writable(label: str, path: Path, info: os.stat_result) -> None:
    """Checked before the question, not found out after it (a device is usually root's and the disk group's)."""
    if not os.access(path, os.W_OK):
        try:
            group = grp.getgrgid(info.st_gid).gr_name
        except KeyError:
            group = str(info.st_gid)
        _refuse(label, f"not writable by {getpass.getuser()}: run it as root or as a member of the {group} group")


def _bytes(size: int) -> str:
    return f"{human_size(size)} ({size} bytes)"


def _confirm(args, target: Target, image: str) -> None:
    if not args.yes and not sys.stdin.isatty():
        _refuse(target, "no terminal to ask on (standard input is not one); --yes writes without asking, for scripts")
    for line in target.shown:
        print(line)
    if args.yes:
        return
    try:
        typed = input(f"Everything on {target.label} will be lost. Type its name again to write {image} to it: ").strip()
    except EOFError:
        typed = ""
    if typed not in target.names:
        _refuse(target, f"{typed!r} is not its name; nothing written" if typed else "no name typed; nothing written")


def _write(source, size: int, target: Target) -> str:
    """Write the image (size bytes of source) at the start of target, fsync, read it back; the sha256 both had."""
    try:  # O_EXCL on a block device: the kernel refuses it while mounted (in any namespace), swap, RAID or LVM
        fd = os.open(target.path, os.O_RDWR | os.O_CLOEXEC | (os.O_EXCL if target.block else 0))
    except OSError as error:
        if error.errno == errno.EBUSY:
            _refuse(target, "in use by the system (mounted, perhaps in another namespace, swap, RAID or LVM): device busy")
        raise
    written, digest = 0, hashlib.sha256()
    try:
        with _progress() as progress:
            task = progress.add_task("writing", total=size)
            while written < size and (chunk := source.read(min(BLOCK, size - written))):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    done = os.write(fd, view)
                    view, written = view[done:], written + done
                progress.update(task, completed=written)
            if written < size:
                _refuse(target, f"the image ended after {written} of its {size} bytes: it changed while written; run again")
            progress.update(task, description="syncing")
            os.fsync(fd)
            # The read-back must come from the device, not from the pages just written: drop them (clean after fsync).
            os.posix_fadvise(fd, 0, written, os.POSIX_FADV_DONTNEED)
            check = progress.add_task("verifying", total=written)
            again, offset = hashlib.sha256(), 0
            while offset < written:
                chunk = os.pread(fd, min(BLOCK, written - offset), offset)
                if not chunk:
                    break
                again.update(chunk)
                offset += len(chunk)
                progress.update(check, completed=offset)
    except KeyboardInterrupt:
        state = (f"after {human_size(written)} of {human_size(size)}: it holds part of the image" if written < size
                 else "before the image written was read back: it is not verified")
        raise Interrupted(f"write-image: {target.label}: interrupted {state}; write it again") from None
    finally:
        os.close(fd)
    if again.hexdigest() != digest.hexdigest():
        _refuse(target, f"read back differs from the image written (sha256 {again.hexdigest()[:16]}… instead of "
                        f"{digest.hexdigest()[:16]}…): a failing or fake device; do not boot from it")
    if target.block:
        _reread_partitions(target.path)
    return digest.hexdigest()


def _reread_partitions(path: Path) -> None:
    """The kernel's view of the new partitions (as `blockdev --rereadpt`); best effort: a loop device without
    partition scanning refuses, and the next plug-in reads them anyway."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, BLKRRPART)
        finally:
            os.close(fd)
    except OSError:
        pass


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description:>9}"), BarColumn(), DownloadColumn(binary_units=True),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console, disable=not console.is_terminal)
