"""build:disk-<arch>: disk.img, a GPT disk a UEFI machine boots: the kernel on an EFI system partition, the root on ext4.

Partition 1, the EFI system partition (FAT32), holds the kernel (its own EFI stub) as the firmware's
default loader on removable media, EFI/BOOT/<loader> (arches/<arch>.toml: firmware.loader); partition 2
is the images' rootfs.ext4 as it is, whose GPT partition GUID is the one the kernel's built-in command
line mounts as / (models.Arch.root_partuuid; templates/linux/qemu-<arch>.config). Made without root by
mkfs.vfat, mtools and sfdisk on plain files, every command in `commands` (run here, and printed as they
are by `mlbuild script`). Reproducible: the disk's and the EFI partition's GUIDs and the FAT volume serial
are derived from the arch and the contents' sha256 (`identifiers`), the FAT times are SOURCE_DATE_EPOCH.
"""

import hashlib
import shlex
import uuid
from pathlib import Path

from mlbuild.errors import MlbuildError
from mlbuild.model.graph import images_task, target_task
from mlbuild.processes import run_in_group
from mlbuild.reproducible import SOURCE_DATE_EPOCH
from mlbuild.steps.base import Step
from mlbuild.trees import hash_file

MIB = 1 << 20
SECTOR = 512
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"  # the UEFI specification's EFI system partition
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # a Linux filesystem
ESP_LEAST_MIB = 64  # FAT32 needs 65525 clusters at least (33 MiB of 512-byte clusters); firmware reads FAT32 surely
FILE_NAME = "disk.img"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def esp_mib(kernel_bytes: int) -> int:
    """The EFI system partition's size: room for the kernel twice (an update beside the old one), at least ESP_LEAST_MIB."""
    return max(ESP_LEAST_MIB, -(-2 * kernel_bytes // MIB) + 8)


def layout(kernel_bytes: int, root_bytes: int) -> dict[str, int]:
    """Partition starts and sizes in MiB: 1 MiB before the first (the GPT and alignment), 1 MiB after the last (the backup GPT)."""
    esp = esp_mib(kernel_bytes)
    root = -(-root_bytes // MIB)
    return {"esp_start": 1, "esp": esp, "esp_kib": esp * 1024, "root_start": 1 + esp, "root": root, "total": 1 + esp + root + 1}


def _uuid(seed: str, what: str) -> str:
    """A version 4 (random-form) UUID from sha256(seed what): the same bits the shell form sets."""
    return str(uuid.UUID(hex=hashlib.sha256(f"{seed} {what}".encode()).hexdigest()[:32], version=4))


def identifiers(arch: str, kernel_sha256: str, root_sha256: str) -> dict[str, str]:
    """The disk's GUID, the EFI partition's GUID and the FAT volume serial: a function of what the disk holds."""
    seed = hashlib.sha256(f"{arch}\n{kernel_sha256}\n{root_sha256}\n".encode()).hexdigest()
    return {"disk": _uuid(seed, "disk"), "esp": _uuid(seed, "esp"),
            "serial": hashlib.sha256(f"{seed} fat".encode()).hexdigest()[:8]}


def partition_table(sizes: dict[str, int], ids: dict[str, str], root_partuuid: str) -> str:
    """sfdisk's script of the GPT."""
    to_sectors = MIB // SECTOR
    return (f"label: gpt\nlabel-id: {ids['disk']}\nunit: sectors\nfirst-lba: {to_sectors}\nsector-size: {SECTOR}\n\n"
            f"start={sizes['esp_start'] * to_sectors}, size={sizes['esp'] * to_sectors}, type={ESP_TYPE}, "
            f"uuid={ids['esp']}, name=\"EFI system partition\"\n"
            f"start={sizes['root_start'] * to_sectors}, size={sizes['root'] * to_sectors}, type={LINUX_TYPE}, "
            f"uuid={root_partuuid}, name=\"root\"\n")


def commands(work: Path, kernel: Path, rootfs: Path, disk: Path, loader: str, sizes: dict[str, int],
             ids: dict[str, str]) -> list[list[str]]:
    """The programs that make the disk from the kernel and rootfs.ext4, in order (work: a scratch folder;
    its partition-table file is written first). Every one runs with SOURCE_DATE_EPOCH and MTOOLS_SKIP_CHECK."""
    esp, loader_copy, table = work / "esp.img", work / loader, work / "partitions.sfdisk"
    return [
        # The kernel under its loader's name, dated SOURCE_DATE_EPOCH (mcopy -m keeps a file's time).
        ["cp", str(kernel), str(loader_copy)],
        ["touch", "-d", f"@{SOURCE_DATE_EPOCH}", str(loader_copy)],
        # --invariant fixes what mkfs.fat would take from the clock or chance; -i (after it) sets the serial.
        ["mkfs.vfat", "-C", str(esp), str(sizes["esp_kib"]), "-F", "32", "-n", "EFI", "--invariant", "-i", ids["serial"]],
        ["mmd", "-i", str(esp), "::EFI", "::EFI/BOOT"],
        ["mcopy", "-i", str(esp), "-m", str(loader_copy), f"::EFI/BOOT/{loader}"],
        ["truncate", "-s", f"{sizes['total']}M", str(disk)],
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", "--wipe", "never", "--wipe-partitions", "never", str(disk), "<", str(table)],
        ["dd", f"if={esp}", f"of={disk}", "bs=1M", f"seek={sizes['esp_start']}", "conv=notrunc,sparse", "status=none"],
        ["dd", f"if={rootfs}", f"of={disk}", "bs=1M", f"seek={sizes['root_start']}", "conv=notrunc,sparse", "status=none"],
    ]


def make_disk(kernel: Path, rootfs: Path, disk: Path, work: Path, arch: str, loader: str, root_partuuid: str,
              task: str, output) -> tuple[dict[str, int], dict[str, str]]:
    """disk.img from the kernel and rootfs.ext4 (work: a scratch folder, emptied; output: where the programs
    write, a log file). Returns the layout (MiB) and the identifiers."""
    from mlbuild.trees import remove_tree

    sizes = layout(kernel.stat().st_size, rootfs.stat().st_size)
    ids = identifiers(arch, hash_file(kernel), hash_file(rootfs))
    remove_tree(work)
    work.mkdir(parents=True)
    (work / "partitions.sfdisk").write_text(partition_table(sizes, ids, root_partuuid))
    environment = {"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "MTOOLS_SKIP_CHECK": "1", "PATH": PATH, "TZ": "UTC", "LC_ALL": "C"}
    for command in commands(work, kernel, rootfs, disk, loader, sizes, ids):
        stdin = None
        if "<" in command:
            command, stdin = command[:command.index("<")], Path(command[command.index("<") + 1])
        status = run_in_group(command, task, None, environment, output, stdin=stdin)
        if status != 0:
            raise MlbuildError(f"{task}: {command[0]} failed (exit status {status})" + (f"; log: {output.name}" if hasattr(output, "name") else ""))
    remove_tree(work)
    return sizes, ids


class DiskStep(Step, kind="disk"):
    def __init__(self, project, name: str, node: dict):
        super().__init__(project, name, node)
        self.arch = arch = node["arch"]
        self.doc = f"make the {arch} system's UEFI-bootable GPT disk image (disk.img)"

    per_toolchain = True

    @property
    def facts(self):
        return self.project.arches[self.arch]

    @property
    def output(self) -> Path:
        return self.project.target_build_dir / "disks" / self.arch

    @property
    def work(self) -> Path:
        return self.project.target_build_dir / "work" / f"disk-{self.arch}"

    @property
    def host_tools(self) -> list[str]:
        return ["mkfs.vfat", "mmd", "mcopy", "sfdisk"]

    @property
    def kernel(self) -> Path:
        """The kernel image in the target (where the recipe that installs it says: [arch.<arch>] kernel)."""
        target = self.project.steps[target_task(self.arch)]
        kernels = sorted({kernel for component in target.components if (kernel := component.recipe.kernel_for(self.arch))})
        if len(kernels) != 1:
            raise MlbuildError(f"{self.name}: expected one recipe of the target that declares the kernel "
                               f"([arch.{self.arch}] kernel = ...), found {len(kernels)}")
        return target.output / kernels[0]

    @property
    def rootfs(self) -> Path:
        return self.project.steps[images_task(self.arch)].output / "rootfs.ext4"

    def own_inputs(self) -> dict:
        # The kernel and rootfs.ext4 are the dependencies' outputs (their hashes are dep: inputs); the loader's
        # name and the root's GUID are the arch's.
        return {"arch": self.arch, "loader": self.facts.firmware.loader, "root_partuuid": self.facts.root_partuuid}

    def run(self, staging: Path, log) -> None:
        kernel, rootfs = self.kernel, self.rootfs
        for needed in (kernel, rootfs):
            if not needed.is_file():
                raise MlbuildError(f"{self.name}: {self.project.relative(needed)} is missing; build its task again")
        sizes, ids = make_disk(kernel, rootfs, staging / FILE_NAME, self.work, self.arch, self.facts.firmware.loader,
                               self.facts.root_partuuid, self.name, log.file)
        log(f"{FILE_NAME}: {sizes['total']} MiB; EFI system partition {sizes['esp']} MiB (EFI/BOOT/{self.facts.firmware.loader}), "
            f"root {sizes['root']} MiB (PARTUUID {self.facts.root_partuuid}); disk GUID {ids['disk']}")

    def bill_of_materials(self) -> list:
        return []  # it packs the kernel and the root filesystem; the components are their build steps'

    def shell(self, script) -> str:
        out_dir, work = script.path(self.output), script.path(self.work)
        kernel, rootfs = script.path(self.kernel), script.path(self.rootfs)
        loader, arch = self.facts.firmware.loader, self.arch
        # The same computations as layout(), identifiers() and partition_table(), in the shell.
        lines = [
            f"# {FILE_NAME}: the kernel as UEFI's default loader on a FAT32 EFI system partition, rootfs.ext4 as partition 2\n",
            f"rm -rf {out_dir} {work}\nmkdir -p {out_dir} {work}\n",
            'PATH="$PATH:/usr/sbin:/sbin"  # mkfs.vfat, sfdisk\n',
            f"esp_mib=$(( ($(stat -c %s {kernel}) * 2 + {MIB - 1}) / {MIB} + 8 )); [ $esp_mib -ge {ESP_LEAST_MIB} ] || esp_mib={ESP_LEAST_MIB}\n",
            f"root_mib=$(( ($(stat -c %s {rootfs}) + {MIB - 1}) / {MIB} ))\n",
            f"seed=$(printf '%s\\n' {arch} \"$(sha256sum < {kernel} | cut -c1-64)\" \"$(sha256sum < {rootfs} | cut -c1-64)\" | sha256sum | cut -c1-64)\n",
            "guid() {  # a version 4 UUID from sha256(seed what), as mlbuild makes it (steps/disk.py)\n"
            "  local h=$(printf '%s %s' \"$seed\" \"$1\" | sha256sum | cut -c1-32)\n"
            "  printf '%s-%s-4%s-%x%s-%s\\n' ${h:0:8} ${h:8:4} ${h:13:3} $(( (16#${h:16:1} & 3) | 8 )) ${h:17:3} ${h:20:12}\n"
            "}\n",
            "serial=$(printf '%s fat' \"$seed\" | sha256sum | cut -c1-8)\n",
            "{\n"
            "  printf 'label: gpt\\nlabel-id: %s\\nunit: sectors\\nfirst-lba: 2048\\nsector-size: 512\\n\\n' \"$(guid disk)\"\n"
            f"  printf 'start=2048, size=%s, type={ESP_TYPE}, uuid=%s, name=\"EFI system partition\"\\n' $(( esp_mib * 2048 )) \"$(guid esp)\"\n"
            f"  printf 'start=%s, size=%s, type={LINUX_TYPE}, uuid={self.facts.root_partuuid}, name=\"root\"\\n' "
            "$(( (1 + esp_mib) * 2048 )) $(( root_mib * 2048 ))\n"
            f"}} > {work}/partitions.sfdisk\n",
        ]
        sizes = {"esp": "$esp_mib", "esp_kib": "$(( esp_mib * 1024 ))", "esp_start": 1, "root_start": "$(( 1 + esp_mib ))", "total": "$(( esp_mib + root_mib + 2 ))"}
        ids = {"serial": "$serial"}
        for command in commands(Path("WORK"), Path("KERNEL"), Path("ROOTFS"), Path("OUT") / FILE_NAME, loader, sizes, ids):
            words = []
            for word in command:
                # A word with a shell computation stays as it is ($(( )) is one word, spaces and all).
                shown = word if word == "<" or "$" in word else shlex.quote(word)
                for placeholder, value in (("WORK", work), ("KERNEL", kernel), ("ROOTFS", rootfs), ("OUT", out_dir)):
                    shown = shown.replace(placeholder, value)
                words.append(shown)
            lines.append(f"SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH} MTOOLS_SKIP_CHECK=1 TZ=UTC " + " ".join(words) + "\n")
        lines.append(f"rm -rf {work}\n")
        return "".join(lines)
