"""The target architectures mlbuild supports and their fixed facts."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str  # mlbuild's name, used in task names: build:musl-arm64
    triple: str  # LLVM target triple
    karch: str  # the kernel's ARCH=
    console: str  # serial console device for the kernel command line


HOST = "host"  # the pseudo-arch of recipes built for the build machine (the toolchain)


def host_arch() -> Arch:
    import platform

    machine = platform.machine()
    karch = {"x86_64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    return Arch(HOST, f"{machine}-unknown-linux-gnu", karch, "")


ARCHES = {
    "x86_64": Arch("x86_64", "x86_64-unknown-linux-musl", "x86_64", "ttyS0"),
    "arm64": Arch("arm64", "aarch64-unknown-linux-musl", "arm64", "ttyAMA0"),
}
