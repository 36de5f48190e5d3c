"""The build machine's facts, from host.toml beside this file: the host's LLVM and the packages mlbuild needs.

scripts/setup.sh reads the same file (with sed: it runs before Python packages are there), so the list of
what is installed and the names given for a missing program cannot drift apart.
"""

import sys
import tomllib
from functools import cache
from pathlib import Path

FACTS_FILE = Path(__file__).with_name("host.toml")


@cache
def _facts() -> dict:
    return tomllib.loads(FACTS_FILE.read_text())


def llvm_version() -> str:
    """The host's LLVM major version (Debian's clang-N): the default of the host_llvm_version key."""
    return _facts()["llvm_version"]


def packages() -> list[str]:
    """The Debian/Ubuntu packages scripts/setup.sh installs."""
    return [name.format(llvm_version=llvm_version()) for name in _facts()["packages"]]


def package_of() -> dict[str, str]:
    """{program: the Debian/Ubuntu package that provides it}, for the programs tasks run."""
    facts = _facts()
    tables = {**facts["essential"], **facts["packages"]}
    return {program: package.format(llvm_version=llvm_version()) for package, programs in tables.items() for program in programs}


if __name__ == "__main__":  # scripts/setup.sh: the package list, one a line (run before mlbuild is installed)
    if sys.argv[1:] != ["packages"]:
        sys.exit("usage: python3 src/mlbuild/model/host.py packages")
    print("\n".join(packages()))
