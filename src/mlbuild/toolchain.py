"""The LLVM that compiles the target: its bin folder and its identity for signatures."""

import shutil
import subprocess
from functools import cache
from pathlib import Path

from .errors import MlbuildError
from .models import Config

LLVM_TOOLS = ("clang", "clang++", "ld.lld", "llvm-ar", "llvm-nm", "llvm-objcopy", "llvm-strip", "llvm-ranlib")


def llvm_bin(config: Config) -> Path:
    """The folder holding unversioned clang, ld.lld, llvm-ar… of the chosen toolchain."""
    return _llvm_bin(config.toolchain, config.llvm_version)


@cache
def _llvm_bin(toolchain: str, version: str) -> Path:
    if toolchain == "llvm":
        raise MlbuildError("toolchain = 'llvm' needs build:toolchain, which this version does not build yet; use toolchain = 'host'")
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
