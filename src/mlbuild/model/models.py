"""Validated data: the user's configuration and the recipes (pydantic v2)."""

import base64
import binascii
import os
import re
import urllib.parse
import uuid
from pathlib import Path
from typing import Annotated, ClassVar, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

from mlbuild.model import host

# Names and versions end up in paths, task names and shell scripts: keep them tame.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9+_.-]*$", max_length=64)]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9+_.~-]*$", max_length=64)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# What each pattern means, for error messages.
PATTERN_HINTS = {
    r"^[a-z0-9][a-z0-9+_.-]*$": "expected lowercase letters, digits and + _ . - (a safe name)",
    r"^[A-Za-z0-9][A-Za-z0-9+_.~-]*$": "expected letters, digits and + _ . ~ - (a safe version)",
    r"^[0-9a-f]{64}$": "expected 64 hex digits (a sha256)",
    r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$": "expected a relative path of letters, digits and _ . / -",
    r"^[a-z0-9][a-z0-9+.-]*=[A-Za-z0-9:+.~-]+$": "expected PACKAGE=VERSION of a Debian source package",
    r"^https?://": "expected an http(s):// URL",
}
Spdx = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.+-]+( (AND|OR|WITH) [A-Za-z0-9.+-]+)*$")]
PATTERN_HINTS[r"^[A-Za-z0-9.+-]+( (AND|OR|WITH) [A-Za-z0-9.+-]+)*$"] = "expected an SPDX license expression"
TemplatePath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")]
VarValue = str | int | bool | list[str]


# A size in bytes as people write it: 1048576, 500M, 20GiB, 1.5T, 4kb. K, M, G and T are powers of 1024 with or
# without the i; B is optional; case does not matter. Anything else is refused: "5ib" is not 5 bytes.
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])(i)?)?(b)?", re.IGNORECASE)
SIZE_FORMS = "a number of bytes with an optional K, M, G or T (powers of 1024), then an optional i and B, such as 1048576, 500M, 20GiB or 1.5T"


def parse_size(text: str) -> int:
    """Bytes of a size written as SIZE_FORMS says; ValueError for anything else."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"expected {SIZE_FORMS}, got {text!r}")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def _size_value(value):
    # An integer is bytes; a text is parsed strictly. Anything else is left to the int check, which says what it is.
    return parse_size(value) if isinstance(value, str) else value


Size = Annotated[int, BeforeValidator(_size_value), Field(ge=0)]


class Strict(BaseModel):
    # strict: `target = "yes"` is an error, not true; a value is what the file says it is.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Folders come as text from TOML, the environment and the command line.
Folder = Annotated[Path, Field(strict=False)]
# A target triple (x86_64-linux-musl, aarch64-unknown-linux-musl): it is pasted into CMake, shell and file names.
TRIPLE_PATTERN = r"^[a-z0-9_]+(-[a-z0-9_.]+){1,3}$"
PATTERN_HINTS[TRIPLE_PATTERN] = "expected a target triple (arch-vendor-os-env: lowercase letters, digits, _ and .)"


# An arch's name (x86_64, arm64): in task names (build:musl-arm64), file names and folders. Which names exist is
# data (arches/<name>.toml, model/arches.py): recipes and the configuration are checked against them once loaded.
ARCH_NAME = r"^[a-z][a-z0-9_]{0,31}$"
PATTERN_HINTS[ARCH_NAME] = "expected an arch's name: up to 32 lowercase letters, digits and _, a letter first"
ArchName = Annotated[str, StringConstraints(pattern=ARCH_NAME)]
# One word of a command line (QEMU's program, machine, device models; make's ARCH=): never a second option.
COMMAND_WORD = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
PATTERN_HINTS[COMMAND_WORD] = "expected one word of letters, digits and _ . + - (a program, machine or device name)"
CommandWord = Annotated[str, StringConstraints(pattern=COMMAND_WORD, max_length=64)]
KERNEL_IMAGE = r"^arch/[a-z0-9_]+/[A-Za-z0-9_.+/-]+$"
PATTERN_HINTS[KERNEL_IMAGE] = "expected the image's path in the kernel's build tree, arch/<source arch>/..."
DISK = r"^(if=[a-z]+|[a-z0-9][a-z0-9-]*)$"
PATTERN_HINTS[DISK] = "expected a QEMU device model (virtio-blk-pci) or if=<interface> of -drive (if=virtio)"


class ArchKernel(Strict):
    """How the kernel is built for an arch and where its image is."""

    arch: CommandWord  # the kernel's ARCH= (x86_64, arm64, riscv)
    image: Annotated[str, StringConstraints(pattern=KERNEL_IMAGE, max_length=128)]  # what `make <its name>` builds

    @property
    def srcarch(self) -> str:
        """arch/<srcarch>/ of the source: the folder the image is built in (x86 for ARCH=x86_64)."""
        return self.image.split("/")[1]

    @field_validator("image")
    @classmethod
    def _inside(cls, value):
        if ".." in value.split("/"):
            raise ValueError("expected a path inside the kernel's build tree, without '..'")
        return value


class ArchQemu(Strict):
    """How QEMU boots the arch's system: program, machine and devices (boot/qemu.py, boot/accel.py)."""

    system: CommandWord  # the system emulator: qemu-system-aarch64
    package: Name  # the Debian/Ubuntu package that has it, named when it is missing
    machine: CommandWord  # -M
    cpu: CommandWord | None = None  # -cpu under TCG (KVM always runs -cpu host); none: the machine's default
    memory: Size = 256 << 20  # the least RAM of a guest; a large initramfs gets more (qemu.guest_memory_mib)
    disk: Annotated[str, StringConstraints(pattern=DISK, max_length=64)]  # the disk image's device
    nic: CommandWord | None = None  # -device <nic> on a user -netdev; none: the machine's default network card
    firmware: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./+-]+$", max_length=256)] | None = None  # -bios; none: the machine's default
    power_off: Annotated[str, StringConstraints(pattern=r"^[^\n\r]+$", max_length=128)]  # what the boot test types to end the guest; it must end QEMU by itself

    @field_validator("memory")
    @classmethod
    def _whole_mebibytes(cls, value):
        if value < 16 << 20 or value % (1 << 20):
            raise ValueError(f"expected whole mebibytes, at least 16M (such as 256M), got {value} bytes")
        return value


FIRMWARE_FILE = r"^/[A-Za-z0-9_./+-]+$"
PATTERN_HINTS[FIRMWARE_FILE] = "expected an absolute path of letters, digits and _ . / + -"
EFI_LOADER = r"^BOOT[A-Z0-9]+\.EFI$"
PATTERN_HINTS[EFI_LOADER] = "expected the removable media loader's file name of UEFI, BOOT<ARCH>.EFI (BOOTX64.EFI)"
# The root partition's GUID of an arch's disk image is fixed (uuid5 of the arch's name in this namespace): the
# kernel's built-in command line names it (root=PARTUUID=), and the kernel is built before the disk exists.
ROOT_PARTUUID_NAMESPACE = uuid.UUID("6d6c6275-696c-4400-8000-000000000000")


class FirmwareFlash(Strict):
    """One pair of UEFI firmware files for QEMU's flash: the code (read-only) and the template of its variables."""

    code: Annotated[str, StringConstraints(pattern=FIRMWARE_FILE, max_length=256)]
    vars: Annotated[str, StringConstraints(pattern=FIRMWARE_FILE, max_length=256)]  # copied per boot: the guest writes it


class ArchFirmware(Strict):
    """How the arch boots disk.img through UEFI firmware (steps/disk.py builds it, boot/qemu.py boots it)."""

    loader: Annotated[str, StringConstraints(pattern=EFI_LOADER)]  # EFI/BOOT/<loader> on the EFI system partition: the kernel
    # Extra words of the kernel's built-in command line before its serial console (console=tty0: the screen).
    cmdline: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.,=:/ -]*$", max_length=256)] = ""
    # QEMU's flash files, in order of preference: the first whose code file exists is used. None: no firmware
    # for QEMU is known (the disk is built, not booted).
    flash: list[FirmwareFlash] = []
    package: Name | None = None  # the Debian/Ubuntu package that has them, named when none is there
    # Options of QEMU's machine for this boot (-M <machine>,<option>,...): acpi=off on arm64, whose firmware
    # hands the kernel the device tree only when the machine has no ACPI tables.
    machine_options: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]+=[A-Za-z0-9_.-]+$", max_length=64)]] = []


class Arch(Strict):
    """A target architecture: arches/<name>.toml (model/arches.py loads them)."""

    name: ArchName  # the file's name; in task names: build:musl-arm64
    order: int = Field(ge=0, le=1000)  # its place among the arches (lists, messages, the toolchain's sysroots); ties by name
    # Built when the configuration names no arches: false for an arch built only on request (arches=riscv64).
    default: bool = True
    triple: Annotated[str, StringConstraints(pattern=TRIPLE_PATTERN)]  # LLVM's and musl's target
    llvm_target: CommandWord  # LLVM's back end for it (X86, AArch64, RISCV): mlbuild's own toolchain builds every arch's
    console: CommandWord  # the serial console's device for the kernel command line: console=ttyS0
    kernel: ArchKernel
    qemu: ArchQemu
    firmware: ArchFirmware | None = None  # none: no disk image for firmware boot

    @property
    def root_partuuid(self) -> str:
        """The GPT partition GUID of the root partition of its disk image (ROOT_PARTUUID_NAMESPACE)."""
        return str(uuid.uuid5(ROOT_PARTUUID_NAMESPACE, f"root-partition-{self.name}"))

    @property
    def firmware_cmdline(self) -> str | None:
        """The kernel's built-in command line for firmware boot: root on the disk's partition, read-write, the
        serial console last (the one init's shell gets); None without firmware data."""
        if self.firmware is None:
            return None
        extra = f"{self.firmware.cmdline} " if self.firmware.cmdline else ""
        return f"root=PARTUUID={self.root_partuuid} rootwait rw {extra}console={self.console}"

    @property
    def uname_machine(self) -> str:
        """What `uname -m` says on it: the triple's first part (x86_64, aarch64, riscv64)."""
        return self.triple.split("-", 1)[0]


class Source(Strict):
    """One place a source tarball can be had from; all alternatives hold the same release."""

    url: str | None = None
    debian: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9+.-]*=[A-Za-z0-9:+.~-]+$")
    sha256: Sha256
    strip_components: int = Field(default=1, ge=0, le=8)
    # Bytes of the file, when known: a download stops as soon as the server sends (or announces) more.
    size: int | None = Field(default=None, ge=1)

    @field_validator("sha256", mode="before")
    @classmethod
    def _lowercase_hex(cls, value):
        if isinstance(value, str) and len(value) == 64:
            return value.lower()
        if isinstance(value, str):
            raise ValueError(f"expected 64 hex digits (a sha256), got {len(value)} characters")
        return value

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value):
        if value is not None and not value.startswith(("https://", "http://", "file://")):
            raise ValueError("expected an https://, http:// or file:// URL")
        return value

    @model_validator(mode="after")
    def _one_location(self):
        if (self.url is None) == (self.debian is None):
            raise ValueError("give exactly one of 'url' or 'debian'")
        return self


class GuestCheck(Strict):
    """A command the boot test types into the booted guest's shell, and what one line of its output must match."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9+_.-]*$", max_length=64)]
    command: str = Field(min_length=1, max_length=4096)
    expect: str = Field(min_length=1, max_length=1024)  # a Python regular expression
    timeout: int = Field(default=0, ge=0, le=86400)  # seconds allowed beyond the boot timeout (compiling under emulation is slow)
    # The arches whose boot test runs it; none: every arch's. Checked against arches/ once loaded
    # (recipes.py for a recipe's, config.py for the configuration's).
    arches: list[ArchName] | None = None

    @field_validator("command")
    @classmethod
    def _one_line(cls, value):
        if "\n" in value or "\r" in value:
            raise ValueError("expected one line: the guest's shell runs it as typed")
        return value

    @field_validator("expect")
    @classmethod
    def _a_regex(cls, value):
        import re

        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"expected a regular expression: {error}") from None
        return value


def _relative_path(value):
    if value is not None and ".." in value.split("/"):
        raise ValueError("expected a path inside the target, without '..'")
    return value


MODE_PATTERN = r"^[0-7]{3,4}$"
PATTERN_HINTS[MODE_PATTERN] = 'expected an octal mode of 3 or 4 digits, such as "4755"'
TARGET_PATH_PATTERN = r"^[A-Za-z0-9_+][A-Za-z0-9_.+/-]*$"
PATTERN_HINTS[TARGET_PATH_PATTERN] = "expected a path in the target of letters, digits and _ . + / -"


class Permission(Strict):
    """The mode and owner an installed file gets in the system (as Buildroot's <pkg>_PERMISSIONS tables).

    The target assembly applies the mode (it cannot chown: no root), the images the mode and the
    owner; a component's own output never carries set-id bits, so the artifact cache restores it whole.
    """

    path: Annotated[str, StringConstraints(pattern=TARGET_PATH_PATTERN, max_length=256)]  # relative to the target root
    mode: Annotated[str, StringConstraints(pattern=MODE_PATTERN)]  # octal text: a TOML 4755 would be decimal
    uid: int = Field(default=0, ge=0, le=65534)
    gid: int = Field(default=0, ge=0, le=65534)

    @field_validator("path", mode="before")
    @classmethod
    def _plain_relative_path(cls, value):
        if not isinstance(value, str):
            return value  # the type check says what is expected
        if value.startswith("/"):
            raise ValueError(f"expected a path relative to the target root (bin/busybox, not /bin/busybox), got {value!r}")
        parts = value.split("/")
        if ".." in parts:
            raise ValueError(f"expected a path inside the target, without '..', got {value!r}")
        if "" in parts or "." in parts:
            raise ValueError(f"expected a plain path, without '.', '//' or a trailing '/', got {value!r}")
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_is_text(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f'expected the mode as octal text in quotes, such as "4755", got {value!r}')
        return value

    @property
    def bits(self) -> int:
        return int(self.mode, 8)


def _paths_once(entries: list[Permission]) -> list[Permission]:
    seen = set()
    for entry in entries:
        if entry.path in seen:
            raise ValueError(f"{entry.path} is declared twice")
        seen.add(entry.path)
    return entries


class ArchOverride(Strict):
    """Per-arch additions: vars are merged over the recipe's, lists are appended."""

    depends: list[Name] = []
    files: list[TemplatePath] = []
    vars: dict[str, VarValue] = {}
    kernel: TemplatePath | None = None  # the bootable kernel image it installs on this arch, relative to the target root
    permissions: list[Permission] = []  # replace the recipe's entry of the same path on this arch

    _kernel_inside = field_validator("kernel")(_relative_path)
    _permissions_once = field_validator("permissions")(_paths_once)

    @field_validator("vars")
    @classmethod
    def _triples_have_their_shape(cls, value):
        _check_var_shapes(value)
        return value


def _check_var_shapes(values: dict) -> None:
    """Variables named *triple or *version have a known shape: anything else is refused, not pasted into a file."""
    import re

    for key, value in values.items():
        if key.endswith("triple") and not (isinstance(value, str) and re.match(TRIPLE_PATTERN, value)):
            raise ValueError(f"{key}: {PATTERN_HINTS[TRIPLE_PATTERN]}, got {value!r}")
        if key.endswith("version") and not (isinstance(value, (str, int)) and not isinstance(value, bool)
                                             and re.match(r"^[A-Za-z0-9][A-Za-z0-9+_.~-]*$", str(value))):
            raise ValueError(f"{key}: expected letters, digits and + _ . ~ - (a safe version), got {value!r}")


# A configuration key a recipe declares: it is also an MLBUILD_<NAME> variable and a key=value of doit's command line.
OptionName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
PATTERN_HINTS[r"^[a-z][a-z0-9_]*$"] = "expected lowercase letters, digits and _ (a configuration key)"
# `when`: a switch's name (built when it is on), or option=choice (built when the choice option has that value).
WHEN_PATTERN = r"^[a-z][a-z0-9_]*(=[a-z0-9][a-z0-9+_.-]*)?$"
PATTERN_HINTS[WHEN_PATTERN] = "expected a switch's name or option=choice (lowercase letters, digits and _, then = and a safe name)"
Condition = Annotated[str, StringConstraints(pattern=WHEN_PATTERN, max_length=130)]
# What a switch accepts as text (environment, command line); pyproject.toml gives a TOML boolean.
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class Option(Strict):
    """A configuration option a recipe declares ([options.<name>]): a switch, or a choice of words."""

    help: str = Field(min_length=1, max_length=300)
    default: bool | Name  # a switch: true or false; a choice: one of choices
    choices: list[Name] = []  # empty: a switch

    @model_validator(mode="after")
    def _default_fits(self):
        if len(set(self.choices)) != len(self.choices):
            raise ValueError("choices: expected each choice once")
        if not self.choices and not isinstance(self.default, bool):
            raise ValueError(f"default: expected true or false (a switch), or give 'choices', got {self.default!r}")
        if self.choices and self.default not in self.choices:
            raise ValueError(f"default: expected one of the choices ({', '.join(self.choices)}), got {self.default!r}")
        return self

    @property
    def is_switch(self) -> bool:
        return not self.choices

    def expected(self, from_text: bool) -> str:
        """What a value of this option must be, for error messages."""
        if not self.is_switch:
            return f"expected one of: {', '.join(self.choices)}"
        words = ", ".join(f"{yes}/{no}" for yes, no in zip(TRUE_WORDS, FALSE_WORDS))
        return f"expected a boolean ({words})" if from_text else "expected true or false"


CPE_NAME = r"^[a-z0-9_][a-z0-9_.+~!-]*:[a-z0-9_][a-z0-9_.+~!-]*$"
PATTERN_HINTS[CPE_NAME] = 'expected VENDOR:PRODUCT as CPE 2.3 names them, such as "linux:linux_kernel"'


class OsvPackage(Strict):
    """A package as OSV records name it: {ecosystem = "Linux", name = "Kernel"}."""

    ecosystem: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)


class CveNames(Strict):
    """How vulnerability records name a component ([cve] in its recipe), for `mlbuild cve`."""

    cpe: list[Annotated[str, StringConstraints(pattern=CPE_NAME)]] = []  # NVD's CPE vendor:product
    osv: list[OsvPackage] = []  # OSV's affected[].package
    # Maintained in stable branches named by the version's first two numbers (the kernel's 6.1.y):
    # a record's fixed points are read per branch, and a fix on another branch says nothing of this one.
    stable_branches: bool = False


class Merged(NamedTuple):
    depends: list[str]
    files: list[str]
    vars: dict


class Recipe(Strict):
    name: Name
    version: Version | None = None  # None: its source recipe's (source = "<recipe>"), filled in when recipes are loaded
    summary: str = Field(min_length=1, max_length=200)
    homepage: str = Field(pattern=r"^https?://")
    license: Spdx
    sources: list[Source] = []
    source: Name | None = None  # use another recipe's source instead
    patches: list[TemplatePath] = []  # files in recipes/<name>/, applied in order with patch -p1
    depends: list[Name] = []
    build: TemplatePath | None = None  # templates/build/<build>.sh.j2; None: a source-only recipe
    files: list[TemplatePath] = []
    vars: dict[str, VarValue] = {}
    arches: list[ArchName] | None = None  # the arches it is built for; none: every arch (model/arches.py)
    arch: dict[ArchName, ArchOverride] = {}
    target: bool = True  # whether the output goes into the target root filesystem
    menuconfig: bool = False  # its script supports MLBUILD_ACTION=menuconfig (Kconfig-based)
    host: bool = False  # built once for the build machine (part of build:toolchain), not per arch
    # A host recipe's target recipes that stage 1 (the host's LLVM) builds for every arch: it links
    # itself against the build machine's arch's, and build:toolchain ships each arch's as a sysroot.
    sysroots: list[Name] = []
    # The recipe is built only when a switch is on (`when = "target_llvm"`) or a choice has a value (`when = "userland=toybox"`).
    when: Condition | None = None
    kernel: TemplatePath | None = None  # the bootable kernel image it installs (per arch: [arch.<arch>] kernel)
    # Where its output holds its final Kconfig configuration (a .config); its files are then the fragments merged
    # into it. The SBOM records the file's sha256 and the value each fragment symbol got.
    kconfig: TemplatePath | None = None
    checks: list[GuestCheck] = []  # what the boot test runs in the guest when this recipe is in the target
    # Modes and owners of installed files ([[permissions]]): inputs of the target and the images, not of its build.
    permissions: list[Permission] = []

    @field_validator("sysroots")
    @classmethod
    def _sysroots_of_a_host_recipe(cls, value, info):
        if value and not (info.data.get("host") and info.data.get("build")):
            raise ValueError("only a host recipe (host = true) with a build has sysroots")
        return value

    @field_validator("permissions")
    @classmethod
    def _permissions_of_the_target(cls, value, info):
        if value and (info.data.get("host") or not info.data.get("target", True) or not info.data.get("build")):
            raise ValueError("only a recipe that installs into the target (build, target = true, not host) declares permissions")
        return _paths_once(value)

    _kernel_inside = field_validator("kernel", "kconfig")(_relative_path)
    tools: list[Name] = []  # programs of the build machine its script runs (make, flex…): checked before the build starts
    # Configuration options it reacts to: set like mlbuild's own keys, its templates read them as options.<name>.
    options: dict[OptionName, Option] = {}
    # What of the target this component needs in the images: full when it is a compiler (headers, static
    # libraries); image_profile = "auto" in the configuration is full when a recipe of the arch's target says so.
    image_profile: Literal["runtime", "full"] = "runtime"
    # Facts the component gives the system, for templates/target ({{ system.<name> }}): e.g. a userland's
    # `init = "inittab"` (its init reads /etc/inittab). Two components of a target may not disagree on one.
    system: dict[Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$")], VarValue] = {}
    # How CVE records name it (mlbuild cve); none: no record is matched to it.
    cve: CveNames | None = None

    @field_validator("options")
    @classmethod
    def _options_are_not_engine_keys(cls, value):
        for name in value:
            if name in Config.model_fields:
                raise ValueError(f"{name}: a configuration key of mlbuild itself; choose another name")
        return value

    @field_validator("vars")
    @classmethod
    def _triples_have_their_shape(cls, value):
        _check_var_shapes(value)
        return value

    @model_validator(mode="after")
    def _source_choice(self):
        if self.sources and self.source:
            raise ValueError("give either 'sources' or 'source', not both")
        if not self.sources and not self.source:
            raise ValueError("give 'sources' (where to download) or 'source' (another recipe's)")
        if self.source and self.patches:
            raise ValueError("'patches' belong to the recipe that owns the source")
        if not self.build and self.depends:
            raise ValueError("a recipe without 'build' cannot have 'depends'")
        if not self.build and self.kconfig:
            raise ValueError("a recipe without 'build' cannot have 'kconfig' (the configuration its build installs)")
        if any(extra.permissions for extra in self.arch.values()) and (self.host or not self.target or not self.build):
            raise ValueError("arch.<arch>.permissions: only a recipe that installs into the target (build, target = true, not host) declares permissions")
        return self

    # Fields that only document the recipe: changing them rebuilds nothing.
    # The kernel's location and the guest checks are read by the boot, the image profile by the
    # images, not the build; options act through their values, in the rendered script and files; the
    # configuration's place is read by the SBOM.
    DOC_FIELDS: ClassVar[frozenset] = frozenset({"summary", "homepage", "license", "kernel", "checks", "options", "image_profile",
                                                 "kconfig", "cve"})

    @property
    def condition(self) -> tuple[str, str | None] | None:
        """`when` split: (switch, None) or (choice option, its value); None without `when`."""
        if self.when is None:
            return None
        option, _, value = self.when.partition("=")
        return option, value or None

    def built_for(self, arch: str) -> bool:
        """Whether it is built for arch (its `arches`, every arch without)."""
        return self.arches is None or arch in self.arches

    def kernel_for(self, arch: str) -> str | None:
        extra = self.arch.get(arch)
        return extra.kernel if extra is not None and extra.kernel else self.kernel

    def permissions_for(self, arch: str) -> dict[str, Permission]:
        """{path: permission} on arch: the recipe's entries, an [arch.<arch>] entry replacing one of the same path."""
        extra = self.arch.get(arch)
        return {entry.path: entry for entry in self.permissions + (extra.permissions if extra is not None else [])}

    def depends_for(self, arch: str) -> list[str]:
        """The recipe's dependencies on arch (cheap: the graph asks for every recipe × arch)."""
        return self.depends + self.arch[arch].depends if arch in self.arch else self.depends

    def for_arch(self, arch: str) -> "Merged":
        """Depends, files and vars with the arch's overrides applied."""
        extra = self.arch.get(arch)
        if extra is None:
            return Merged(self.depends, self.files, self.vars)
        return Merged(self.depends + extra.depends, self.files + extra.files, {**self.vars, **extra.vars})


# --- customising the system (docs/usage.md, "Customise your system") -----------------------
ProjectPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$")]  # relative to the project
AccountName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]*$", max_length=32)]
PATTERN_HINTS[r"^[a-z_][a-z0-9_-]*$"] = "expected a user or group name: lowercase letters, digits, _ and - (not first)"
GuestPath = Annotated[str, StringConstraints(pattern=r"^/[A-Za-z0-9_.+/-]*$", max_length=256)]
PATTERN_HINTS[r"^/[A-Za-z0-9_.+/-]*$"] = "expected an absolute path in the target (letters, digits and _ . + / -)"
PasswordHash = Annotated[str, StringConstraints(pattern=r"^\$[0-9a-z]+\$[A-Za-z0-9./$=,]+$")]
PATTERN_HINTS[r"^\$[0-9a-z]+\$[A-Za-z0-9./$=,]+$"] = "expected a crypt(3) hash such as $6$salt$hash (mkpasswd -m sha-512), or no password (locked)"


def _inside_project(value: str) -> str:
    if ".." in value.split("/"):
        raise ValueError("expected a path inside the project, without '..'")
    return value


class User(Strict):
    """An account of the target ([[tool.mlbuild.users]]); no password means locked (no password login)."""

    name: AccountName
    uid: int = Field(ge=0, le=65534)
    gid: int | None = Field(default=None, ge=0, le=65534)  # None: a group of the user's name with gid = uid
    groups: list[AccountName] = []  # supplementary groups (from [[tool.mlbuild.groups]])
    comment: Annotated[str, StringConstraints(pattern=r"^[^:\n\r]*$", max_length=128)] = ""
    home: GuestPath | None = None  # None: /home/<name>
    shell: GuestPath = "/bin/sh"
    password: PasswordHash | None = None
    create_home: bool = True  # make the home folder in the target (mode 0755; the images own it by root)

    @field_validator("home", "shell")
    @classmethod
    def _no_parent(cls, value):
        if value is not None and ".." in value.split("/"):
            raise ValueError("expected an absolute path without '..'")
        return value


class Group(Strict):
    name: AccountName
    gid: int = Field(ge=0, le=65534)
    members: list[AccountName] = []


# Artifact caches (docs/ci.md): file://, http(s):// (WebDAV PUT to write), s3://bucket/prefix; ro: in front, read only.
CACHE_URL = r"^(ro:)?(file|https?|s3)://[^\s,]+$"
PATTERN_HINTS[CACHE_URL] = "expected a cache URL: file:///folder, http(s)://host/path, s3://bucket/prefix, optionally ro: in front"


def cache_identity(spec: str) -> str:
    """Which cache a configured item names, as mlbuild shows it: without ro:, user:password@, an S3 URL's query
    (its endpoint) and a trailing slash; so cache_trust_unsigned may name a cache the way its lines show it."""
    parts = urllib.parse.urlsplit(spec.removeprefix("ro:"))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/"),
                                    "" if parts.scheme == "s3" else parts.query, ""))


CCACHE_REMOTE = r"^((redis|redis\+unix|https?|file):\S+( |$))*$"
PATTERN_HINTS[CCACHE_REMOTE] = "expected ccache remote_storage URLs (redis://host:port, http://host/path), space-separated"


TASK_NAME = r"^[a-z]+:[A-Za-z0-9][A-Za-z0-9+_.@-]*$"
PATTERN_HINTS[TASK_NAME] = "expected a task name such as build:busybox-x86_64"


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlbuild"


def per_user_artifact_cache() -> Path:
    """The per-user artifact cache folder, the default `cache`: the one cache trusted without signatures."""
    return _default_cache() / "artifacts"


# Keys that sign artifact cache entries (engine/cache/signing.py; docs/ci.md, "Trust"), written NAME:BASE64 as Nix
# writes them: a public key is 32 bytes (Ed25519), a secret one 64 (the seed, then its public key). A name carries
# a version (ci-2026a) so that an old and a new key can be trusted side by side during a rotation.
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PUBLIC_KEY_BYTES, SECRET_KEY_BYTES = 32, 64
KEY_FORM = "NAME:BASE64 (NAME: letters, digits, '.', '_', '-', at most 64, with a version such as ci-2026a)"


def parse_key_text(text: str, size: int) -> tuple[str, bytes]:
    """(name, key) of NAME:BASE64 holding size bytes. A ValueError never quotes the text: it may be a secret key."""
    name, colon, encoded = text.strip().partition(":")
    if not colon or not KEY_NAME.fullmatch(name):
        raise ValueError(f"expected {KEY_FORM} (the value is not shown)")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: what follows the name is not base64 (the value is not shown)") from None
    if len(key) != size:
        got = "a secret key" if len(key) == SECRET_KEY_BYTES else "a public key" if len(key) == PUBLIC_KEY_BYTES else f"{len(key)} bytes"
        wanted = "a public key" if size == PUBLIC_KEY_BYTES else "a secret key"
        raise ValueError(f"{name}: expected {wanted} ({size} bytes), got {got} (the value is not shown)")
    return name, key


# NAME: and then base64: a key, or part of one pasted (never a file name worth showing).
_KEY_LIKE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*:\s*[A-Za-z0-9+/=\s]{16,}")


def _public_key_text(text: str) -> str:
    parse_key_text(text, PUBLIC_KEY_BYTES)
    return text.strip()


def _revoked_key_text(text: str) -> str:
    """NAME (every key of that name) or NAME:BASE64 (that key, whatever its name)."""
    if ":" in text:
        return _public_key_text(text)
    if not KEY_NAME.fullmatch(text):
        raise ValueError(f"expected a key's NAME or {KEY_FORM}")
    return text


def _signing_key_place(text: str) -> str:
    """The secret key's file, or env:VARIABLE; never the key itself (it would be shown, kept and logged)."""
    if not text.startswith("env:") and _KEY_LIKE.fullmatch(text.strip()):
        raise ValueError("holds a key itself: expected the path of the secret key's file or env:VARIABLE, "
                         "the key in that file or variable (the value is not shown)")
    if text.startswith("env:") and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text[4:]):
        raise ValueError(f"expected env:VARIABLE with a variable's name, got {text[:80]!r}")
    return text


PublicKeyText = Annotated[str, AfterValidator(_public_key_text)]
RevokedKeyText = Annotated[str, AfterValidator(_revoked_key_text)]


class Config(Strict):
    """The user's choices: [tool.mlbuild], then mlbuild.local.toml, then MLBUILD_* variables, then doit's key=value."""

    # The arches built; none: every arch of arches/ (Settings.arches checks the names once the arch files are loaded).
    arches: list[ArchName] | None = None
    toolchain: Literal["host", "llvm"] = "host"
    # The host's LLVM (Debian's clang-N), default from model/host.toml; the target's is llvm-project.toml's version.
    host_llvm_version: Annotated[str, StringConstraints(pattern=r"^[0-9]+$")] = Field(default_factory=host.llvm_version)
    jobs: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=1024)
    build_dir: Folder = Path("build")
    target_dir: Folder = Path("target")
    toolchain_dir: Folder = Path("toolchain")
    download_dir: Folder = Field(default_factory=lambda: _default_cache() / "downloads")
    ccache_dir: Folder = Field(default_factory=lambda: _default_cache() / "ccache")
    mirrors: list[str] = []  # base URLs tried, with the file name appended, after each upstream URL
    # Every download (sources and artifact cache reads) ends (sources/transfer.py): within download_timeout seconds,
    # faster than download_min_rate bytes/s averaged over download_rate_window seconds, and never larger than
    # download_max_size (or a source's own size); otherwise it is given up on and the next place is tried.
    download_timeout: int = Field(default=3600, ge=1)
    download_min_rate: Size = 1024
    download_rate_window: int = Field(default=30, ge=1, le=3600)
    download_max_size: Size = 4 << 30
    # No network: every source must be in the download cache (offline.py says what is missing, before any task runs).
    offline: bool = False
    # External trees (external.py): folders with their own recipes/, templates/ and fragments/, relative to the
    # project; a later one wins over an earlier one and over the project's own.
    external: list[Annotated[str, StringConstraints(min_length=1)]] = []
    # Tried in order before a task runs, pushed to after it ran; shared by every clone of this user by default.
    cache: list[Annotated[str, StringConstraints(pattern=CACHE_URL)]] = Field(default_factory=lambda: [per_user_artifact_cache().as_uri()])
    # Signed entries (engine/cache/signing.py; docs/ci.md, "Trust"): every cache but the per-user folder restores only
    # entries signed by a trusted key that is not revoked; a push signs with the secret key (its file, ~ and relative
    # to the project allowed, or env:VARIABLE; never shown). cache_require_signatures = false: no check (every cache),
    # one warning line per cache and run.
    cache_signing_key: Annotated[str, AfterValidator(_signing_key_place)] = ""
    cache_trusted_keys: list[PublicKeyText] = []
    cache_revoked_keys: list[RevokedKeyText] = []
    cache_require_signatures: bool = True
    # Exceptions to cache_require_signatures, cache by cache (as Nix's per-substituter trusted=1): these caches of
    # `cache` restore entries without a signature check, with one warning line each per run (Settings.config checks
    # that each names a configured cache: as written there, or as shown, without ro: and credentials).
    cache_trust_unsigned: list[Annotated[str, StringConstraints(pattern=CACHE_URL)]] = []
    ccache_remote_storage: Annotated[str, StringConstraints(pattern=CCACHE_REMOTE)] = ""  # ccache's remote_storage for every compile
    distcc_hosts: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9@:/,._+=\[\] -]*$")] = ""  # compile on distccd there, behind ccache
    fragments: dict[Name, list[str]] = {}  # extra config fragments per recipe, paths relative to the project
    # A recipe's source taken from a local folder instead of its tarball and patches ([tool.mlbuild.override],
    # like Buildroot's <PKG>_OVERRIDE_SRCDIR); ~ and paths relative to the project allowed (sources/override.py).
    override: dict[Name, Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = {}
    boot_timeout: int = Field(default=300, ge=10)
    checks: list[GuestCheck] = []  # your own boot checks, run after the recipes' ([[tool.mlbuild.checks]])
    # What a build shows (reporting/progress.py): auto is a live panel on a terminal, plain lines elsewhere.
    progress: Literal["auto", "live", "plain"] = "auto"
    progress_interval: int = Field(default=30, ge=1)  # seconds between plain progress lines
    # Every task as it starts and as it is found up to date, and each restore's cache on a line of its own
    # (as doit's -v 2); off: one line per task that ran, the up-to-date ones only counted in the summary.
    verbose: bool = False
    log_runs: int = Field(default=10, ge=1)  # runs whose task logs are kept in build/logs/runs/
    # QEMU's accelerator: auto uses KVM only where a probe boot proves it runs guests (boot/accel.py).
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    # How run and boottest boot: kernel (QEMU's -kernel and -initrd, the root an initramfs) or firmware (disk.img
    # through the arch's UEFI firmware, the root its ext4 partition: arches/<arch>.toml firmware).
    boot: Literal["kernel", "firmware"] = "kernel"
    # The guest's network under `doit run` (boot/network.py): user (QEMU's user networking: the guest reaches what
    # the host reaches), restricted (restrict=on: nothing outside the guest), none (no card). The boot test is
    # always restricted, with one forward to its own server on the host's 127.0.0.1.
    network: Literal["user", "restricted", "none"] = "user"
    # Build scripts under bubblewrap, without network or undeclared folders (sandbox.py); auto: where it runs.
    sandbox: Literal["auto", "on", "off"] = "auto"
    # The caller's variables build scripts get too (reproducible.passed_through): not signature inputs.
    pass_environment: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = []
    # Customising the system (docs/usage.md, "Customise your system"; overlay.py, hooks.py, users.py, image_profile.py).
    overlays: list[ProjectPath] = []  # folders copied over target/<arch>/ after the components; only *.j2 rendered
    post_build: list[ProjectPath] = []  # scripts run on the assembled tree (TARGET_DIR) before it is packed
    post_image: list[ProjectPath] = []  # scripts run on the images folder (IMAGES_DIR)
    users: list[User] = []  # [[tool.mlbuild.users]]: /etc/passwd and /etc/shadow (root is there anyway)
    groups: list[Group] = []  # [[tool.mlbuild.groups]]: /etc/group
    # What the images hold: runtime (no headers, static libraries, .map files, kernel image) or the full tree;
    # auto: full when a recipe in the arch's target needs it (image_profile = "full": a compiler), else runtime.
    image_profile: Literal["auto", "runtime", "full"] = "auto"
    # The initramfs QEMU boots (compression.py): zstd, gzip (the kernel reads both) or the cpio as it is.
    initramfs_compression: Literal["zstd", "gzip", "none"] = "zstd"
    # Tasks this run builds again even when the artifact cache holds them (`mlbuild rebuild`, `doit rebuild=TASK`):
    # they run though their stamp is current and are not restored. For one run only: the command line (config.py).
    rebuild: list[Annotated[str, StringConstraints(pattern=TASK_NAME)]] = []

    _paths_inside = field_validator("overlays", "post_build", "post_image")(
        lambda values: [_inside_project(value) for value in values])

    @field_validator("users")
    @classmethod
    def _accounts_unique(cls, users):
        for key in ("name", "uid"):
            seen = set()
            for user in users:
                value = getattr(user, key)
                if value in seen:
                    raise ValueError(f"two users have the {key} {value!r}")
                seen.add(value)
        for user in users:
            if (user.name == "root") != (user.uid == 0):
                raise ValueError(f"{user.name}: uid 0 is root's and root's alone")
        return users

    @field_validator("cache_trusted_keys")
    @classmethod
    def _one_key_a_name(cls, texts):
        seen: dict[str, bytes] = {}
        for text in texts:
            name, key = parse_key_text(text, PUBLIC_KEY_BYTES)
            if seen.setdefault(name, key) != key:
                raise ValueError(f"two keys are named {name}: give each key a name of its own, with a version (ci-2026a, ci-2026b)")
        return texts

    @model_validator(mode="after")
    def _groups_known(self):
        names, gids = set(), set()
        for group in self.groups:
            if group.name in names or group.gid in gids:
                raise ValueError(f"groups: two groups have the name {group.name!r} or the gid {group.gid}")
            names.add(group.name)
            gids.add(group.gid)
        own = {user.name for user in self.users if user.gid is None}
        users = {user.name for user in self.users} | {"root"}
        known_gids = gids | {0} | {user.uid for user in self.users if user.gid is None}
        for user in self.users:
            for name in user.groups:
                if name not in names and name not in own | {"root"}:
                    raise ValueError(f"users: {user.name}: group {name!r} is not in [[tool.mlbuild.groups]]")
            if user.gid is not None and user.gid not in known_gids:
                raise ValueError(f"users: {user.name}: gid {user.gid} is no group's ([[tool.mlbuild.groups]])")
        for group in self.groups:
            for member in group.members:
                if member not in users:
                    raise ValueError(f"groups: {group.name}: member {member!r} is not a user")
        return self

    @field_validator("rebuild", mode="before")
    @classmethod
    def _build_is_the_default_kind(cls, value):
        # busybox-x86_64 for build:busybox-x86_64, as `mlbuild explain` takes it; the project checks it exists.
        if isinstance(value, list):
            return [name if not isinstance(name, str) or ":" in name else f"build:{name}" for name in value]
        return value

    @field_validator("arches")
    @classmethod
    def _some_arch(cls, value):
        if value is not None and not value:
            raise ValueError("expected at least one arch")
        return value
