"""What the system says of a block device: its kernel name, size, model, partitions, and what of it is in use.

Read from sysfs (/sys/dev/block/MAJOR:MINOR), /proc/self/mountinfo and /proc/swaps, and from `lsblk -J` where
it is installed, as a second opinion (it names file systems and labels from udev's database). Only this mount
namespace's mounts are visible here: a device mounted in another one (a container's) is caught by the kernel
itself when the writer opens the device exclusively (O_EXCL on a block device fails with EBUSY while it is in use).
"""

import json
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYS_DEV_BLOCK = Path("/sys/dev/block")
MOUNTINFO = Path("/proc/self/mountinfo")
SWAPS = Path("/proc/swaps")


@dataclass(frozen=True)
class Partition:
    name: str  # the kernel's name: sdb1, loop0p1, mmcblk0p1
    size: int
    fstype: str = ""
    label: str = ""


@dataclass(frozen=True)
class BlockDevice:
    path: Path  # as given (/dev/sdb, /dev/disk/by-id/usb-…)
    name: str  # the kernel's name: sdb, loop0, mmcblk0
    size: int  # bytes
    model: str  # vendor and model, a loop device's backing file, or ""
    partition_of: str | None  # the whole device's kernel name when this is a partition
    read_only: bool
    removable: bool
    partitions: tuple[Partition, ...]
    users: dict[str, str]  # "major:minor" -> kernel name: the device, its partitions, every layer on them (dm, md)


@dataclass(frozen=True)
class Use:
    """Something of the device in use: a mount (where is its mount point) or swap (where is "swap")."""
    name: str  # the kernel name of the part in use: sdb1, dm-0
    where: str

    @property
    def holds_root(self) -> bool:
        return self.where == "/"


def describe(path: Path) -> BlockDevice:
    """The block device at path (a symlink such as /dev/disk/by-id/… is followed); ValueError if it is not one."""
    info = os.stat(path)
    if not stat.S_ISBLK(info.st_mode):
        raise ValueError(f"{path}: not a block device")
    sysfs = (SYS_DEV_BLOCK / _number(info.st_rdev)).resolve()
    whole = sysfs.parent.name if (sysfs / "partition").exists() else None
    parts = [child for child in sorted(sysfs.iterdir()) if (child / "partition").exists()]
    known = _lsblk(path)
    partitions = tuple(Partition(part.name, _size(part), *_identity(part.name, known)) for part in parts)
    return BlockDevice(
        path=path, name=sysfs.name, size=_size(sysfs), model=_model(sysfs, whole), partition_of=whole,
        read_only=_read(sysfs / "ro") == "1", removable=_read(sysfs / "removable") == "1",
        partitions=partitions, users=_users([sysfs, *parts]),
    )


def uses(device: BlockDevice) -> list[Use]:
    """What of the device is mounted or swap, / first; from the kernel's tables, then lsblk's view where it has one."""
    found = []
    for numbers, point in _mounts():
        for number in numbers & device.users.keys():
            found.append(Use(device.users[number], point))
    for number in _swaps() & device.users.keys():
        found.append(Use(device.users[number], "swap"))
    for name, point in _lsblk_mounts(device.path):
        found.append(Use(name, "swap" if point == "[SWAP]" else point))
    return sorted(set(found), key=lambda use: (not use.holds_root, use.where, use.name))


def loops_backed_by(path: Path) -> list[str]:
    """The loop devices whose backing file is path (the same file, by device and inode)."""
    target = os.stat(path)
    found = []
    for backing in sorted(Path("/sys/block").glob("loop*/loop/backing_file")):
        name = _read(backing).removesuffix(" (deleted)")
        try:
            info = os.stat(name)
        except OSError:
            continue
        if (info.st_dev, info.st_ino) == (target.st_dev, target.st_ino):
            found.append(backing.parent.parent.name)
    return found


def _number(rdev: int) -> str:
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _size(sysfs: Path) -> int:
    return int(_read(sysfs / "size") or 0) * 512  # sysfs counts 512-byte sectors whatever the device's own


def _model(sysfs: Path, whole: str | None) -> str:
    device = sysfs.parent / "device" if whole else sysfs / "device"
    words = [_read(device / "vendor"), _read(device / "model") or _read(device / "name")]  # name: an SD card's
    backing = _read((sysfs.parent if whole else sysfs) / "loop" / "backing_file")
    if backing:
        words.append(f"loop device backed by {backing}")
    return " ".join(word for word in words if word)


def _users(nodes: list[Path]) -> dict[str, str]:
    """major:minor -> name of each node and of everything holding it (device-mapper, RAID), recursively."""
    found = {}
    while nodes:
        node = nodes.pop()
        number = _read(node / "dev")
        if not number or number in found:
            continue
        found[number] = node.name
        holders = node / "holders"
        if holders.is_dir():
            nodes += [(holders / name).resolve() for name in os.listdir(holders)]
    return found


def _unescape(text: str) -> str:
    """The kernel's octal escapes in mountinfo and swaps (a space is \\040)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), text)


def _block_number(source: str) -> str | None:
    try:
        info = os.stat(source)
    except OSError:
        return None
    return _number(info.st_rdev) if stat.S_ISBLK(info.st_mode) else None


def _mounts() -> list[tuple[set[str], str]]:
    """(device numbers, mount point) of every mount: the number mountinfo gives, and its source's, which differ
    for btrfs (an anonymous device number) and are the same for most."""
    found = []
    for line in MOUNTINFO.read_text().splitlines():
        fields = line.split(" ")
        source = _unescape(fields[fields.index("-") + 2])
        numbers = {fields[2], _block_number(source)} - {None}
        found.append((numbers, _unescape(fields[4])))
    return found


def _swaps() -> set[str]:
    try:
        lines = SWAPS.read_text().splitlines()[1:]
    except OSError:
        return set()
    return {number for line in lines if line and (number := _block_number(_unescape(line.split()[0])))}


def _run_lsblk(path: Path, columns: str) -> dict | None:
    lsblk = shutil.which("lsblk")
    if lsblk is None:
        return None
    result = subprocess.run([lsblk, "-J", "-b", "-o", columns, str(path)], capture_output=True, text=True, timeout=30)
    try:
        return json.loads(result.stdout) if result.returncode == 0 else None
    except json.JSONDecodeError:
        return None


def _lsblk_tree(path: Path) -> list[dict]:
    """Every node lsblk lists for the device (itself, partitions, layers on them), flattened."""
    data = _run_lsblk(path, "NAME,FSTYPE,LABEL,MOUNTPOINTS") or _run_lsblk(path, "NAME,FSTYPE,LABEL,MOUNTPOINT")  # < 2.37
    nodes, flat = list((data or {}).get("blockdevices", [])), []
    while nodes:
        node = nodes.pop(0)
        flat.append(node)
        nodes += node.get("children", [])
    return flat


def _lsblk(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (file system, label), as lsblk knows them (udev's database); {} without lsblk."""
    return {node["name"]: (node.get("fstype") or "", node.get("label") or "") for node in _lsblk_tree(path)}


def _identity(name: str, known: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """(file system, label) of a partition: lsblk's (udev's database), else read from the partition (blkid -p),
    as where no udev runs (a container, a minimal system)."""
    if known.get(name, ("", ""))[0]:
        return known[name]
    node = Path("/dev") / name
    blkid = shutil.which("blkid")
    if blkid is None or not node.exists():
        return "", ""
    result = subprocess.run([blkid, "-p", "-o", "export", str(node)], capture_output=True, text=True, timeout=30)
    found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return found.get("TYPE", ""), found.get("LABEL", "")


def _lsblk_mounts(path: Path) -> list[tuple[str, str]]:
    found = []
    for node in _lsblk_tree(path):
        points = node.get("mountpoints", [node.get("mountpoint")])
        found += [(node["name"], point) for point in points if point]
    return found
