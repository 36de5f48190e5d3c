"""What makes two builds of the same inputs give the same bytes: a fixed clock, locale, umask and paths.

Every build script gets BUILD_ENVIRONMENT and runs under BUILD_UMASK; the target
and the images take their timestamps from SOURCE_DATE_EPOCH. docs/reproducibility.md
says what was checked and how.
"""

import os
from collections.abc import Mapping
from pathlib import Path

from mlbuild.errors import InputError

# Fixed for reproducible output and for ccache hits (kernel and busybox embed them).
SOURCE_DATE_EPOCH = "1672531200"  # 2023-01-01 00:00:00 UTC
BUILD_ENVIRONMENT = {
    "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
    "KBUILD_BUILD_TIMESTAMP": "Sun Jan  1 00:00:00 UTC 2023",
    "KBUILD_BUILD_USER": "mlbuild",
    "KBUILD_BUILD_HOST": "mlbuild",
    "KBUILD_BUILD_VERSION": "1",
    "LC_ALL": "C",
    "TZ": "UTC",
    "TERM": "dumb",
    "PYTHONHASHSEED": "0",  # generators written in Python iterate sets in a fixed order
}


def passed_through(names: list[str], owned: Mapping, environ=os.environ) -> dict:
    """The caller's variables named by the configuration's pass_environment, for build scripts.

    Build scripts get a fixed environment, nothing of the caller's. Some variables must reach
    them without changing what they make: a proxy, or libfaketime's LD_PRELOAD and FAKETIME
    when scripts/reproducibility.py shifts the second build's clock (BitBake's
    BB_ENV_PASSTHROUGH_ADDITIONS). They are not inputs of any signature, and they cannot
    replace a variable mlbuild sets: owned, the very variables the script gets from mlbuild
    (BUILD_ENVIRONMENT, PATH, SRC, ccache's…); naming one is refused rather than dropped in silence."""
    taken = [name for name in names if name in owned]
    if taken:
        raise InputError(f"configuration: pass_environment: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} "
                         f"set by mlbuild for every build script and cannot be passed through; "
                         f"mlbuild's own variables: {', '.join(sorted(owned))}")
    return {name: environ[name] for name in names if name in environ}


# Every build runs under this umask, whatever the builder's (dodo_support sets it for the
# whole run): outputs, the target tree and the images get 0755/0644, never 0700/0600.
BUILD_UMASK = 0o022


def prefix_map_flags(name: str, source: Path, work: Path, sysroot: Path) -> str:
    """clang flags that write fixed paths instead of this checkout's into objects (debug info, __FILE__).

    For every compile (the templates add $PREFIX_MAP_FLAGS to CC, HOSTCC, KCFLAGS and CMake's
    flags): two checkouts in different folders then give the same objects, with or without
    ccache. clang applies the longest matching prefix, so the sysroot inside the work folder
    maps to / whatever the order. Only folders that are the same on every run of the task:
    the kernel's make redoes its configuration when HOSTCC changes.
    """
    return " ".join(f"-ffile-prefix-map={path}={fixed}" for path, fixed in (
        (source, f"/usr/src/{name}"), (work, f"/usr/obj/{name}"), (sysroot, ""),
    ))
