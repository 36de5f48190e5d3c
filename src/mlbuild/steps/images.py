"""build:images-<arch>: an initramfs and an ext4 disk image of the target, root-owned (or as declared), no root needed."""

import stat
from pathlib import Path

from mlbuild.system import hooks, image_profile, users
from mlbuild.system.cpio import normal_mode, write_initramfs
from mlbuild.errors import MlbuildError
from mlbuild.processes import run_in_group
from mlbuild.system import compression
from mlbuild.code import code_hash
from mlbuild.steps.base import Step
from mlbuild.reproducible import SOURCE_DATE_EPOCH
from mlbuild.steps.target import SKELETON_MODES
from mlbuild.system.users import SHADOW_MODE

# Device nodes the kernel needs before devtmpfs is mounted (its own default initramfs has these).
DEVICES = {"dev/console": ("c", 5, 1), "dev/null": ("c", 1, 3)}
# The modes the engine itself needs, then (per image) those the recipes declare ([[permissions]]).
# Every other path gets cpio.normal_mode: the modes of the images never depend on the builder's umask.
MODES = {**SKELETON_MODES, "etc/shadow": SHADOW_MODE}
ROOT_OWNED_AT_EPOCH = [("uid", 0), ("gid", 0)] + [(f"{kind}time", f"@{SOURCE_DATE_EPOCH}") for kind in "amc"]
DISK_UUID = "6d6c6275-696c-4400-8000-000000000001"  # fixed: images are reproducible


class ImagesStep(Step):
    def __init__(self, project, name: str, arch: str):
        super().__init__(project, name)
        self.arch = arch
        self.doc = f"pack the {arch} system into an initramfs and an ext4 disk image"

    per_toolchain = True

    @property
    def output(self) -> Path:
        return self.project.target_build_dir / "images" / self.arch

    @property
    def host_tools(self) -> list[str]:
        program = compression.PROGRAMS[self.project.config.initramfs_compression]
        return ["mke2fs", "debugfs", *([program] if program else [])]

    @property
    def root(self) -> Path:
        """The tree packed: target/<arch>/, or while run() packs a runtime image, the part of it that runs."""
        return getattr(self, "packed_root", None) or self.project.steps[self.deps[0]].output

    @property
    def permissions(self) -> dict[str, tuple]:
        """The recipes' declared permissions of this arch's target: {path: (Permission, recipe file)}."""
        return self.project.steps[self.deps[0]].permissions

    @property
    def modes(self) -> dict[str, int]:
        return {**MODES, **{path: entry.bits for path, (entry, _) in self.permissions.items()}}

    @property
    def owners(self) -> dict[str, tuple[int, int]]:
        """{path: (uid, gid)} not root:root: the users' home folders, then the recipes' declared paths; every other path is root's."""
        owned = {**users.home_owners(self.project.config),
                 **{path: (entry.uid, entry.gid) for path, (entry, _) in self.permissions.items()}}
        return {path: owner for path, owner in owned.items() if owner != (0, 0)}

    def inputs(self) -> dict:
        declared = {path: [entry.mode, entry.uid, entry.gid] for path, (entry, _) in self.permissions.items()}
        kind = self.project.config.initramfs_compression
        return {"arch": self.arch, "code": code_hash(__name__), **self.dep_inputs(),
                **({"initramfs_compression": kind} if kind != "zstd" else {}),
                **({"permissions": declared} if declared else {}),
                **({"home_owners": {home: list(owner) for home, owner in users.home_owners(self.project.config).items()}}
                   if self.project.config.users else {}),
                **image_profile.inputs(self), **hooks.inputs(self.project, "post-image")}

    def run(self, staging: Path, log) -> None:
        image_profile.prepare(self, log)  # sets packed_root for the runtime profile
        write_initramfs(self.root, staging / "initramfs.cpio", int(SOURCE_DATE_EPOCH), self.modes, DEVICES, self.owners)
        log(f"initramfs.cpio: {(staging / 'initramfs.cpio').stat().st_size} bytes")
        # What QEMU boots: a fraction of the size (the cpio stays, to inspect).
        kind = self.project.config.initramfs_compression
        booted = staging / compression.booted(kind)
        compression.compress(kind, staging / "initramfs.cpio", booted)
        if kind != "none":
            log(f"{booted.name}: {booted.stat().st_size} bytes")
        self._ext4(staging / "rootfs.ext4", log)
        image_profile.finish(self)  # the runtime tree is not kept
        hooks.post_image(self, staging, log)

    def _ext4(self, image: Path, log) -> None:
        size_mib = max(32, int(_tree_size(self.root) * 1.5 / 2**20) + 16)
        environment = {"E2FSPROGS_FAKE_TIME": SOURCE_DATE_EPOCH, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "mlbuild", "-U", DISK_UUID, "-E", f"hash_seed={DISK_UUID},root_owner=0:0",
              "-d", str(self.root), str(image), f"{size_mib}M"], environment, log, self.name)
        # mke2fs -d copies the building user's uid/gid, mtimes and modes (its umask's): set root:root
        # (or the declared owner), fixed times, the modes of the initramfs and the device nodes.
        commands = []
        modes, owners = self.modes, self.owners
        for path in sorted(self.root.rglob("*")):
            name = "/" + path.relative_to(self.root).as_posix()
            owner = dict(zip(("uid", "gid"), owners.get(name[1:], (0, 0))))
            commands += [f'sif "{name}" {field} {owner.get(field, value)}' for field, value in ROOT_OWNED_AT_EPOCH]
            st_mode = path.lstat().st_mode
            if not stat.S_ISLNK(st_mode):  # a link's mode is always 0777
                mode = modes.get(name[1:], normal_mode(st_mode))
                commands.append(f'sif "{name}" mode 0{stat.S_IFMT(st_mode) | mode:o}')
        for name, (kind, major, minor) in DEVICES.items():
            commands.append(f'mknod "/{name}" {kind} {major} {minor}')
        script = image.with_suffix(".debugfs")
        script.write_text("\n".join(commands) + "\n")
        _run(["debugfs", "-w", "-f", str(script), str(image)], environment, log, self.name)
        script.unlink()
        log(f"rootfs.ext4: {size_mib} MiB")


def _tree_size(root: Path) -> int:
    return sum(path.lstat().st_size for path in root.rglob("*"))


def _run(command: list[str], environment: dict, log, task: str) -> None:
    status = run_in_group(command, task, None, environment, log.file)
    if status != 0:
        raise MlbuildError(f"{task}: {command[0]} failed (exit status {status}); log: {log.path}")
