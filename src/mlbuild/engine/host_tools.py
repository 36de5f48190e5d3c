"""Programs of the build machine that tasks run: found before the build starts, or named with their Debian package."""

import shutil

from mlbuild.errors import MlbuildError
from mlbuild.model.host import package_of
from mlbuild.engine.signature import is_up_to_date

# The same PATH as build scripts get (steps/build.py), without the LLVM folder (steps/compiler.py checks that).
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
        described = ", ".join(f"{tool} (package {package_of().get(tool, '?')}; needed by {needed[tool][0]})" for tool in absent)
        packages = " ".join(sorted({package_of()[tool] for tool in absent if tool in package_of()}))
        hint = f"; on Debian/Ubuntu: apt-get install {packages}" if packages else ""
        raise MlbuildError(f"host tools missing before the build starts: {described}{hint}")
