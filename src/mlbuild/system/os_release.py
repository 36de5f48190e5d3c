"""What /etc/os-release says about a system: the project's version and an id of the build.

templates/target/etc/os-release.j2 writes the file (os-release(5)); steps/target.py puts these
values in its context. BUILD_ID must be reproducible (the same inputs give the same id on any
machine, at any time, so never a time): it is a hash of what each component of the system is
built from (its recipe, rendered script and files, toolchain: its own inputs), which is known
before anything is built, so the file can be rendered, and checked, when the project loads.
"""

import hashlib
import json
import re
import tomllib
from pathlib import Path

from mlbuild.errors import InputError

# os-release(5): VERSION_ID is "0–9, a–z, '.', '_' and '-'", no spaces.
VERSION_ID = re.compile(r"^[0-9a-z._-]+$")
BUILD_ID_LENGTH = 16  # hex digits: plenty to tell builds apart, short enough to read


def project_version(root: Path) -> str | None:
    """[project] version of the project's pyproject.toml, as VERSION_ID; None when it has none."""
    try:
        document = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # reading the configuration has said what is wrong with the file already
    project = document.get("project")
    version = project.get("version") if isinstance(project, dict) else None
    if version is None:
        return None
    if not isinstance(version, str) or not VERSION_ID.match(version.lower()):
        raise InputError(f"pyproject.toml: project.version: expected a version of 0-9, a-z, '.', '_' and '-' "
                         f"(it is /etc/os-release's VERSION_ID), got {version!r}")
    return version.lower()


def build_id(components: dict[str, dict]) -> str:
    """A short hash of {component task: its own inputs}: changes with any of them, and only then."""
    payload = json.dumps(components, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:BUILD_ID_LENGTH]
