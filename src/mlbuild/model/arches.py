"""The target architectures mlbuild supports and their fixed facts."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str  # mlbuild's name, used in task names: build:musl-arm64
    triple: str  # LLVM target triple
    karch: str  # the kernel's ARCH=
    console: str  # serial console device for the kernel command line


HOST = "host"  # the pseudo-arch of recipes built for the build machine (the toolchain)


def machine_arch() -> str:
    """The build machine's arch in mlbuild's names (x86_64, arm64; another machine's own name)."""
    import platform

    machine = platform.machine()
    return {"aarch64": "arm64"}.get(machine, machine)


def host_arch() -> Arch:
    """The facts of the pseudo-arch host: the build machine's arch, with the musl triple
    mlbuild's own toolchain is built for (it links statically against the stage-1 musl)."""
    machine = machine_arch()
    known = ARCHES.get(machine)
    triple = known.triple if known else f"{machine}-unknown-linux-musl"
    return Arch(HOST, triple, known.karch if known else machine, "")


ARCHES = {
    "x86_64": Arch("x86_64", "x86_64-unknown-linux-musl", "x86_64", "ttyS0"),
    "arm64": Arch("arm64", "aarch64-unknown-linux-musl", "arm64", "ttyAMA0"),
}
