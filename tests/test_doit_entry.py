"""The `doit` command mlbuild installs: a pyproject.toml doit cannot read is one line, not doit's traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import base_environment, make_project

DOIT = Path(sys.executable).parent / "doit"


@pytest.fixture
def doit_command():
    if not DOIT.exists() or "mlbuild.frontend.doit_entry" not in DOIT.read_text(errors="replace"):
        pytest.skip(f"{DOIT} is not the doit command mlbuild installs (run scripts/setup.sh)")
    return str(DOIT)


@pytest.mark.parametrize("content, expected", [
    (b"[tool.mlbuild]\narches = [\n", "doit: pyproject.toml: not valid TOML: "),
    (b"\xff\xfe[tool.mlbuild]\n", "doit: pyproject.toml: not UTF-8 text (invalid start byte at byte 0)"),
])
def test_a_pyproject_doit_cannot_read_is_one_line_and_a_failure(doit_command, tmp_path, content, expected):
    (tmp_path / "pyproject.toml").write_bytes(content)
    result = subprocess.run([doit_command, "list"], cwd=tmp_path, capture_output=True, text=True,
                            env=base_environment(), timeout=60)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.startswith(expected) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_the_installed_doit_is_doit_otherwise(doit_command, tmp_path):
    project = make_project(tmp_path)
    result = subprocess.run([doit_command, "list"], cwd=project.root, capture_output=True, text=True,
                            env=base_environment(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "build " in result.stdout and "fetch " in result.stdout


def test_plain_doit_list_shows_the_groups_and_the_toolchain_and_all_lists_every_task():
    """The toolchain's parts and other arches' sysroots are top-level tasks only so that `doit build` leaves them
    out: a plain `doit list` shows the groups and build:toolchain, `doit list --all` every task."""
    repo = Path(__file__).resolve().parents[1]
    listed = {}
    for option in ("", "--all"):
        result = subprocess.run([sys.executable, "-m", "doit", "list", *filter(None, [option]), "target_llvm=0"], cwd=repo,
                                env=base_environment(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        listed[option] = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert listed[""] == {"boottest", "build", "build:toolchain", "fetch", "menuconfig", "run"}
    assert {"build:musl-riscv64", "build:llvm-host", "build:busybox-x86_64", "fetch:linux"} <= listed["--all"]
