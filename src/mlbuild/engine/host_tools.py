"""Programs of the build machine that tasks run: found before the build starts, or named with their Debian package."""

import shutil

from mlbuild.errors import MlbuildError
from mlbuild.engine.signature import is_up_to_date

# Program -> the Debian/Ubuntu package that provides it (scripts/setup.sh installs them all).
DEBIAN_PACKAGES = {
    "bash": "bash", "make": "make", "patch": "patch", "ccache": "ccache", "flex": "flex", "bison": "bison",
    "bc": "bc", "cpio": "cpio", "rsync": "rsync", "perl": "perl", "python3": "python3", "cmake": "cmake",
    "ninja": "ninja-build", "xz": "xz-utils", "bzip2": "bzip2", "gzip": "gzip", "tar": "tar", "sed": "sed",
    "mke2fs": "e2fsprogs", "debugfs": "e2fsprogs", "file": "file",
    "qemu-system-x86_64": "qemu-system-x86", "qemu-system-aarch64": "qemu-system-arm",
    "qemu-aarch64-static": "qemu-user-static",
}
# The same PATH as build scripts get (steps/build.py), without the LLVM folder (toolchain.py checks that).
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing(tools) -> list[str]:
    return sorted({tool for tool in tools if shutil.which(tool, path=SEARCH_PATH) is None})


def check_host_tools(project) -> None:
    """Every program that the tasks still to run need is installed; else one line naming them and their packages."""
    needed: dict[str, list[str]] = {}
    for step in project.ordered_steps():
        tools = step.host_tools
        if tools and not is_up_to_date(step):
            for tool in tools:
                needed.setdefault(tool, []).append(step.name)
    absent = missing(needed)
    if absent:
        described = ", ".join(f"{tool} (package {DEBIAN_PACKAGES.get(tool, '?')}; needed by {needed[tool][0]})" for tool in absent)
        packages = " ".join(sorted({DEBIAN_PACKAGES[tool] for tool in absent if tool in DEBIAN_PACKAGES}))
        hint = f"; on Debian/Ubuntu: apt-get install {packages}" if packages else ""
        raise MlbuildError(f"host tools missing before the build starts: {described}{hint}")
