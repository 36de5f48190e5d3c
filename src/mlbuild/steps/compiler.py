"""The LLVM that compiles the target: its bin folder and its identity for signatures."""

import shutil
import subprocess
from functools import cache
from pathlib import Path

from mlbuild.errors import MlbuildError
from mlbuild.model.models import Config

LLVM_TOOLS = ("clang", "clang++", "ld.lld", "llvm-ar", "llvm-nm", "llvm-objcopy", "llvm-strip", "llvm-ranlib")


def llvm_bin(config: Config, toolchain: str) -> Path:
    """The folder holding unversioned clang, ld.lld, llvm-ar… of a toolchain: host (the host's LLVM,
    stage 1, which builds the host recipes and their sysroots) or llvm (mlbuild's own, in toolchain/)."""
    if toolchain == "llvm":
        return config.toolchain_dir / "bin"
    return _host_llvm_bin(config.host_llvm_version)


def toolchain_identity(config: Config, toolchain: str) -> str:
    """What compiles: the host's clang --version, or mlbuild's own LLVM (whose
    output hash is already an input of every task it compiles, through build:toolchain)."""
    if toolchain == "llvm":
        return "LLVM built by mlbuild (build:toolchain)"
    return identity(_host_llvm_bin(config.host_llvm_version))


@cache
def _host_llvm_bin(version: str) -> Path:
    candidates = [Path(f"/usr/lib/llvm-{version}/bin")]
    clang = shutil.which(f"clang-{version}")
    if clang:
        candidates.append(Path(clang).resolve().parent)
    for folder in candidates:
        if all((folder / tool).exists() for tool in LLVM_TOOLS):
            return folder
    raise MlbuildError(
        f"LLVM {version} is not installed: need {', '.join(LLVM_TOOLS)} "
        f"(on Debian/Ubuntu: apt-get install clang-{version} lld-{version} llvm-{version})"
    )


@cache
def identity(folder: Path) -> str:
    """Which compiler this is: its path and the first line of clang --version."""
    result = subprocess.run([folder / "clang", "--version"], capture_output=True, text=True)
    first = (result.stdout.splitlines() or ["unknown"])[0]
    return f"{folder}/clang: {first}"
