"""The target architectures: arches/<name>.toml of the project and its external trees, each a models.Arch.

An arch is data, as a component is: its triple, the kernel's ARCH and image, QEMU's program,
machine and devices. A tree's file replaces the project's of the same name (external.py).
They are read on every run (a few small files): no cache.
"""

import platform
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from mlbuild.errors import InputError
from mlbuild.model.models import ARCH_NAME, PATTERN_HINTS, Arch, ArchKernel
from mlbuild.model.validation import describe

HOST = "host"  # the pseudo-arch of recipes built for the build machine (the toolchain)


def load_arch(path: Path, label: str) -> Arch:
    """One arch file, validated; any problem is one line naming the file and the field."""
    try:
        data = tomllib.loads(path.read_bytes().decode())
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{label}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{label}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        reason = "a dangling symbolic link" if path.is_symlink() and not path.exists() else (
            "a folder, not a file" if path.is_dir() else error.strerror)
        raise InputError(f"{label}: cannot read: {reason}") from None
    try:
        arch = Arch.model_validate(data)
    except ValidationError as error:
        raise InputError(describe(error, label, Arch, PATTERN_HINTS)) from None
    if arch.name != path.stem:
        raise InputError(f"{label}: name: expected {path.stem!r} (the file's name), got {arch.name!r}")
    return arch


class Arches(Mapping[str, Arch]):
    """The known arches by name, in their order (`order`, then name)."""

    def __init__(self, arches: list[Arch]):
        self._by_name = {arch.name: arch for arch in sorted(arches, key=lambda arch: (arch.order, arch.name))}

    def __getitem__(self, name: str) -> Arch:
        return self._by_name[name]

    def __iter__(self):
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    @property
    def default_names(self) -> list[str]:
        """The arches built when the configuration names none: those whose file does not say default = false."""
        return [name for name, arch in self._by_name.items() if arch.default]

    def unsupported(self, name: str) -> str:
        """What to say of a name that is no arch's (with the nearest one, if any is near)."""
        import difflib  # only for a mistake: not on every load

        close = difflib.get_close_matches(name, self.names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unsupported arch {name!r}{hint}, expected one of: {', '.join(self._by_name)}"

    def machine_arch(self) -> str:
        """The build machine's arch in mlbuild's names: the arch whose triple starts with `uname -m`'s word
        (aarch64 is arm64); an unknown machine's own word."""
        machine = platform.machine()
        return next((arch.name for arch in self.values() if arch.uname_machine == machine), machine)

    def host(self) -> Arch:
        """The facts of the pseudo-arch host: the build machine's arch, with the musl triple mlbuild's own
        toolchain is built for (it links statically against the stage-1 musl); a made-up one on an unknown machine."""
        known = self._by_name.get(self.machine_arch())
        if known is not None:
            return known.model_copy(update={"name": HOST})
        # Only what build scripts read of it (script_context): the triple and the kernel's names.
        machine = platform.machine()
        return Arch.model_construct(name=HOST, triple=f"{machine}-unknown-linux-musl",
                                    kernel=ArchKernel.model_construct(arch=machine, image=f"arch/{machine}/"))


def load_arches(files: dict[str, tuple[Path, str]]) -> Arches:
    """The arches of {name: (file, label)} (external.arch_files); at least one."""
    if not files:
        raise InputError("arches/: no arch file; expected at least one arches/<name>.toml (the project's or an external tree's)")
    for name, (_, label) in files.items():
        if not re.match(ARCH_NAME, name):
            raise InputError(f"{label}: {PATTERN_HINTS[ARCH_NAME]} as the file's name, got {name!r}")
        if name == HOST:
            raise InputError(f"{label}: {HOST!r} is the build machine's pseudo-arch (host recipes); choose another name")
    return Arches([load_arch(path, label) for path, label in files.values()])
