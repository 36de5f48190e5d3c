"""build:images-<arch>: an initramfs and an ext4 disk image of the target, root-owned (or as declared), no root needed."""

import shlex
import stat
from pathlib import Path

from mlbuild.system import hooks, image_profile, users
from mlbuild.system.cpio import normal_mode, write_initramfs
from mlbuild.errors import MlbuildError
from mlbuild.processes import run_in_group
from mlbuild.system import compression
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
# Like trees.merge_tree (shutil.copy2 per file), for the runtime tree of the exported script.
COPY = "cp -RP --preserve=mode,timestamps"


class ImagesStep(Step, kind="images"):
    def __init__(self, project, name: str, node: dict):
        super().__init__(project, name, node)
        self.arch = arch = node["arch"]
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
        """The target tree it packs (the runtime image profile packs the part of it that runs)."""
        return self.project.steps[self.deps[0]].output

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

    def own_inputs(self) -> dict:
        declared = {path: [entry.mode, entry.uid, entry.gid] for path, (entry, _) in self.permissions.items()}
        kind = self.project.config.initramfs_compression
        return {"arch": self.arch, 
                **({"initramfs_compression": kind} if kind != "zstd" else {}),
                **({"permissions": declared} if declared else {}),
                **({"home_owners": {home: list(owner) for home, owner in users.home_owners(self.project.config).items()}}
                   if self.project.config.users else {}),
                **image_profile.inputs(self), **hooks.inputs(self.project, "post-image")}

    def run(self, staging: Path, log) -> None:
        packed = image_profile.prepare(self, log)  # the target, or the runtime tree made of it
        write_initramfs(packed, staging / "initramfs.cpio", int(SOURCE_DATE_EPOCH), self.modes, DEVICES, self.owners)
        log(f"initramfs.cpio: {(staging / 'initramfs.cpio').stat().st_size} bytes")
        # What QEMU boots: a fraction of the size (the cpio stays, to inspect).
        kind = self.project.config.initramfs_compression
        booted = staging / compression.booted(kind)
        compression.compress(kind, staging / "initramfs.cpio", booted)
        if kind != "none":
            log(f"{booted.name}: {booted.stat().st_size} bytes")
        self._ext4(packed, staging / "rootfs.ext4", log)
        image_profile.finish(self, packed)  # the runtime tree is not kept
        hooks.post_image(self, staging, log)

    def _ext4(self, root: Path, image: Path, log) -> None:
        size_mib = max(32, int(_tree_size(root) * 1.5 / 2**20) + 16)
        environment = {"E2FSPROGS_FAKE_TIME": SOURCE_DATE_EPOCH, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "mlbuild", "-U", DISK_UUID, "-E", f"hash_seed={DISK_UUID},root_owner=0:0",
              "-d", str(root), str(image), f"{size_mib}M"], environment, log, self.name)
        # mke2fs -d copies the building user's uid/gid, mtimes and modes (its umask's): set root:root
        # (or the declared owner), fixed times, the modes of the initramfs and the device nodes.
        commands = []
        modes, owners = self.modes, self.owners
        # In byte order of the names, as the exported script's `LC_ALL=C sort` lists them: debugfs's
        # writes, and so the superblock's lifetime-writes counter, depend on the order.
        for name, path in sorted(("/" + path.relative_to(root).as_posix(), path) for path in root.rglob("*")):
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


    def bill_of_materials(self) -> list:
        return []  # it packs the target; the components are their build steps'

    def shell(self, script) -> str:
        out_dir = script.path(self.output)
        epoch = ROOT_OWNED_AT_EPOCH[-1][1].lstrip("@")
        declared = "".join(f"    {shlex.quote(name)}) perm=0{mode:o} ;;\n" for name, mode in sorted(self.modes.items()))
        owned = "".join(f"    {shlex.quote(name)}) echo {uid} {gid} ;;\n" for name, (uid, gid) in sorted(self.owners.items()))
        out = [f"rm -rf {out_dir}\nmkdir -p {out_dir}\n"]
        if image_profile.resolve(self.project, self.arch) == "full":
            root = script.path(self.root)
        else:
            runtime = self.project.target_build_dir / "work" / f"images-{self.arch}-runtime"
            root = script.path(runtime)
            out.append(_shell_runtime_tree(script.path(self.root), root, image_profile.kernels(self)))
        out += [
            'PATH="$PATH:/usr/sbin:/sbin"  # mke2fs, debugfs\n',
            "# The mode a file gets in both images, whatever umask built it (src/mlbuild/system/cpio.py):\n"
            "# 0755 for folders and executables, 0644 for other files, set-id and sticky bits kept,\n"
            "# then the modes the system declares.\n",
            "image_mode() {\n"
            '  local st=$(( 16#$(stat -c %f "$1") )) perm\n'
            '  if [ -L "$1" ]; then perm=0777\n'
            '  elif [ -d "$1" ] || (( st & 0111 )); then perm=$(( (st & 07000) | 0755 ))\n'
            "  else perm=$(( (st & 07000) | 0644 )); fi\n"
            f'  case "$1" in\n{declared}  esac\n'
            "  echo $(( (st & 0170000) | perm ))\n"
            "}\n",
            "# Every path is root's but those the recipes give another owner ([[permissions]]).\n",
            "image_owner() {\n"
            f'  case "$1" in\n{owned}    *) echo 0 0 ;;\n  esac\n'
            "}\n",
            '# initramfs.cpio: a cpio "newc" archive, byte for byte as mlbuild\'s writer makes it without\n'
            "# root: every entry root-owned (or as declared) at SOURCE_DATE_EPOCH, in name order, inodes numbered from 1,\n"
            "# then the device nodes, then the trailer.\n",
            "cpio_entry() {  # ino mode nlink mtime size name [rdev-major rdev-minor]; owner: $uid $gid\n"
            "  local namesize=$(( $(printf '%s' \"$6\" | wc -c) + 1 ))\n"
            "  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\\0' \\\n"
            "    \"$1\" \"$2\" \"${uid:-0}\" \"${gid:-0}\" \"$3\" \"$4\" \"$5\" 0 0 \"${7:-0}\" \"${8:-0}\" \"$namesize\" 0 \"$6\"\n"
            "  head -c $(( (4 - (110 + namesize) % 4) % 4 )) /dev/zero\n"
            "}\n",
            f"(cd {root}\n",
            " ino=1\n",
            " while IFS= read -r name; do\n",
            "  mode=$(image_mode \"$name\"); read -r uid gid < <(image_owner \"$name\")\n",
            "  if [ -L \"$name\" ]; then data=$(readlink \"$name\"); size=$(printf '%s' \"$data\" | wc -c); nlink=1\n",
            "  elif [ -f \"$name\" ]; then size=$(stat -c %s \"$name\"); nlink=1\n",
            "  else size=0; nlink=2; fi\n",
            f"  cpio_entry $ino $mode $nlink {epoch} $size \"$name\"\n",
            "  if [ -L \"$name\" ]; then printf '%s' \"$data\"; elif [ -f \"$name\" ]; then cat \"$name\"; fi\n",
            "  head -c $(( (4 - size % 4) % 4 )) /dev/zero\n",
            "  ino=$((ino + 1))\n",
            " done < <(find . -mindepth 1 | sed 's|^\\./||' | LC_ALL=C sort)\n",
        ]
        out.append(" uid=0 gid=0  # the device nodes are root's\n")
        for name, (kind, major, minor) in sorted(DEVICES.items()):
            bits = 0o020000 if kind == "c" else 0o060000
            out.append(f" cpio_entry $ino {bits | 0o600} 1 {epoch} 0 {name} {major} {minor}; ino=$((ino + 1))\n")
        out += [
            " cpio_entry $ino 0 1 0 0 'TRAILER!!!'\n",
            f") > {out_dir}/initramfs.cpio\n",
            *_shell_compress(self, out_dir),
            "# the ext4 disk image: the same commands as mlbuild runs\n",
            f"size_mib=$(( $(find {root} -mindepth 1 -printf '%s\\n' | awk '{{s += $1}} END {{print s + 0}}') * 3 / 2 / 1048576 + 16 ))\n",
            "[ $size_mib -ge 32 ] || size_mib=32\n",
            f"E2FSPROGS_FAKE_TIME={epoch} mke2fs -q -F -t ext4 -L mlbuild -U {DISK_UUID} "
            f"-E hash_seed={DISK_UUID},root_owner=0:0 -d {root} {out_dir}/rootfs.ext4 ${{size_mib}}M\n",
            "# mke2fs -d copies the building user's owner, times and modes: root:root, fixed times and the\n"
            "# images' modes for every file, then the device nodes\n",
            f"(cd {root} && while IFS= read -r name; do\n",
        ]
        out.append('   read -r uid gid < <(image_owner "$name")\n')
        for field, value in ROOT_OWNED_AT_EPOCH:
            value = f"${field}" if field in ("uid", "gid") else value  # the declared owner, else root
            out.append(f'   echo "sif \\"/$name\\" {field} {value}"\n')
        out.append('   [ -L "$name" ] || printf \'sif "/%s" mode 0%o\\n\' "$name" "$(image_mode "$name")"\n')
        out.append(" done < <(find . -mindepth 1 | sed 's|^\\./||' | LC_ALL=C sort)\n")
        for name, (kind, major, minor) in DEVICES.items():
            out.append(f" echo 'mknod \"/{name}\" {kind} {major} {minor}'\n")
        out.append(f") > {out_dir}/rootfs.debugfs\n")
        out.append(f"E2FSPROGS_FAKE_TIME={epoch} debugfs -w -f {out_dir}/rootfs.debugfs {out_dir}/rootfs.ext4 >/dev/null\n"
                   f"rm {out_dir}/rootfs.debugfs\n")
        if image_profile.resolve(self.project, self.arch) != "full":
            out.append(f"rm -rf {root}  # the runtime tree is not kept\n")
        out.append(script.hooks("post-image", hooks.post_image_values(self, self.output), out_dir))
        return "".join(out)


def _tree_size(root: Path) -> int:
    return sum(path.lstat().st_size for path in root.rglob("*"))


def _run(command: list[str], environment: dict, log, task: str) -> None:
    status = run_in_group(command, task, None, environment, log.file)
    if status != 0:
        raise MlbuildError(f"{task}: {command[0]} failed (exit status {status}); log: {log.path}")


def _shell_compress(step, out_dir: str) -> list[str]:
    """What QEMU boots: the cpio compressed by the very command mlbuild runs (compression.py)."""
    kind = step.project.config.initramfs_compression
    words = compression.command(kind, "SOURCE", "TARGET")
    if words is None:
        return ["# what QEMU boots: initramfs.cpio as it is (initramfs_compression = none)\n"]
    line = " ".join(shlex.quote(word) for word in words)
    line = line.replace("SOURCE", f"{out_dir}/initramfs.cpio").replace("TARGET", f"{out_dir}/{compression.booted(kind)}")
    return ["# what QEMU boots: the same archive compressed (the same command and settings as mlbuild's)\n", line + "\n"]

def _shell_runtime_tree(target: str, tree: str, kernels: set[str]) -> str:
    """The runtime image profile (image_profile.py): the target without what only a compiler or a boot loader reads."""
    folders = " ".join(f"{tree}/{prefix}{folder}" for folder in image_profile.DEVELOPMENT_FOLDERS for prefix in ("", "usr/"))
    patterns = " -o ".join(f"-name {shlex.quote(pattern)}" for pattern in image_profile.DEVELOPMENT_FILES)
    out = [
        "# image_profile runtime: the images hold what runs, not headers, static libraries and objects,\n"
        "# pkg-config/CMake files, linker maps, manuals, nor the kernel image (QEMU is given it with -kernel)\n",
        f"rm -rf {tree}\nmkdir -p {tree}\n{COPY} -l {target}/. {tree}/\n",
        f"find {tree} -depth -type d -name include -exec rm -rf {{}} +\n",
        f"rm -rf {folders}\n",
        f"find {tree} \\( -type f -o -type l \\) \\( {patterns} \\) -delete\n",
    ]
    out += [f"rm -f {tree}/{shlex.quote(kernel)}\n" for kernel in sorted(kernels)]
    out.append(
        "# a folder emptied by that goes too; one that was empty in the target (/proc, /tmp) stays\n"
        f"while IFS= read -r folder; do\n"
        f'  if [ -z "$(ls -A {tree}/"$folder")" ] && [ -n "$(ls -A {target}/"$folder")" ]; then rmdir {tree}/"$folder"; fi\n'
        f"done < <(cd {tree} && find . -mindepth 1 -depth -type d)\n"
    )
    return "".join(out)
