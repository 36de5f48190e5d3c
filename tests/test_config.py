"""Configuration: [tool.mlbuild] in pyproject.toml, then MLBUILD_* variables, then doit's key=value."""

from pathlib import Path

import pytest

from conftest import make_project
from mlbuild.model.config import Settings, load_config
from mlbuild.errors import InputError


@pytest.fixture
def two_arches(tmp_path):
    return make_project(tmp_path, arches=("x86_64", "arm64"))


def listed(result) -> set[str]:
    assert result.returncode == 0, result.stderr
    return {line.split()[0] for line in result.stdout.splitlines() if line.startswith("build:")}


def _build_tasks(*arches):
    return {f"build:{name}-{arch}" for arch in arches for name in ("hello", "extra", "app", "target", "images")}


def test_mlbuild_arches_in_the_environment_changes_the_listed_tasks(two_arches):
    assert listed(two_arches.doit("list", "--all")) == _build_tasks("x86_64", "arm64")
    assert listed(two_arches.doit("list", "--all", env={"MLBUILD_ARCHES": "arm64"})) == _build_tasks("arm64")


def test_arches_on_the_doit_command_line_changes_the_listed_tasks_and_wins_over_the_environment(two_arches):
    assert listed(two_arches.doit("list", "--all", "arches=x86_64")) == _build_tasks("x86_64")
    result = two_arches.doit("list", "--all", "arches=x86_64", env={"MLBUILD_ARCHES": "arm64"})
    assert listed(result) == _build_tasks("x86_64")


def test_changing_the_number_of_jobs_rebuilds_nothing(built):
    assert built.doit("jobs=1").executed == set()
    assert built.doit(env={"MLBUILD_JOBS": "7"}).executed == set()


BAD_VALUES = {
    "jobs-0-in-the-environment": (
        [], {"MLBUILD_JOBS": "0"},
        "mlbuild: environment MLBUILD_JOBS: jobs: Input should be greater than or equal to 1"),
    "riscv-on-the-command-line": (
        ["arches=riscv"], {},
        "mlbuild: command line: arches: unsupported arch 'riscv' (did you mean 'riscv64'?), expected one of: x86_64, arm64, riscv64"),
    "riscv-in-the-environment": (
        [], {"MLBUILD_ARCHES": "x86_64,riscv"},
        "mlbuild: environment MLBUILD_ARCHES: arches: unsupported arch 'riscv' (did you mean 'riscv64'?), expected one of: x86_64, arm64, riscv64"),
    "no-arch-at-all": (
        ["arches="], {},
        "mlbuild: command line: arches: expected at least one arch"),
}


@pytest.mark.parametrize("case", BAD_VALUES, ids=list(BAD_VALUES))
def test_a_bad_configuration_value_exits_2_with_one_line_naming_its_source(case, two_arches):
    arguments, environment, message = BAD_VALUES[case]
    result = two_arches.doit(*arguments, env=environment)
    assert result.returncode == 2
    assert result.stderr == message + "\n"
    assert result.executed == set() and result.stdout == ""


def test_a_check_of_an_unknown_arch_exits_2_with_one_line_and_a_suggestion(project):
    project.write("pyproject.toml", project.read("pyproject.toml")
                  + '[[tool.mlbuild.checks]]\nname = "mine"\ncommand = "true"\nexpect = "^$"\narches = ["arm46"]\n')
    result = project.doit("list")
    assert (result.returncode, result.stderr) == (2, "mlbuild: pyproject.toml [tool.mlbuild]: checks[0].arches: "
                                                     "unsupported arch 'arm46' (did you mean 'arm64'?), expected one of: x86_64, arm64, riscv64\n")


def test_an_unknown_key_in_pyproject_exits_2_with_a_suggestion(project):
    project.write("pyproject.toml", project.read("pyproject.toml") + "job = 3\n")
    result = project.doit("list")
    assert result.returncode == 2
    assert result.stderr == "mlbuild: pyproject.toml [tool.mlbuild]: job: unknown field (did you mean 'jobs'?)\n"


# --- load_config, in-process --------------------------------------------------------

def _project_with(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def test_load_config_precedence_is_pyproject_then_environment_then_command_line(tmp_path):
    root = _project_with(tmp_path, '[tool.mlbuild]\narches = ["x86_64"]\njobs = 3\nprogress = "plain"\n')
    config = load_config(root, environ={})
    assert (config.arches, config.jobs, config.progress) == (["x86_64"], 3, "plain")
    config = load_config(root, environ={"MLBUILD_JOBS": "5", "MLBUILD_ARCHES": "arm64 x86_64"})
    assert (config.arches, config.jobs) == (["arm64", "x86_64"], 5)
    config = load_config(root, {"jobs": "7", "arches": "x86_64,arm64"}, environ={"MLBUILD_JOBS": "5"})
    assert (config.arches, config.jobs) == (["x86_64", "arm64"], 7)


def test_load_config_ignores_foreign_variables(tmp_path):
    root = _project_with(tmp_path, "[tool.mlbuild]\n")
    # The engine's own MLBUILD_ variables pass through; foreign settings do not (test_hostile_engine.py).
    defaults = load_config(root, {}, environ={})
    settings = Settings(root, {}, environ={"MLBUILD_LOCK_WAIT": "0", "MLBUILD_PYTHON": "/x", "HOME": "/root"})
    assert settings.config() == defaults and settings.options({}) == {}  # they set nothing of the configuration
    with pytest.raises(InputError, match="MLBUILD_LOCK_WAITS"):  # a near miss of an engine variable is refused
        Settings(root, {}, environ={"MLBUILD_LOCK_WAITS": "0"}).options({})


def test_load_config_makes_relative_folders_absolute_against_the_project(tmp_path):
    root = _project_with(tmp_path, '[tool.mlbuild]\nbuild_dir = "out/b"\nccache_dir = "/var/cache/cc"\n')
    config = load_config(root, environ={"MLBUILD_DOWNLOAD_DIR": "dl"})
    assert config.build_dir == tmp_path / "out" / "b"
    assert config.ccache_dir == Path("/var/cache/cc")
    assert config.download_dir == tmp_path / "dl"
    assert config.target_dir == tmp_path / "target"


@pytest.mark.parametrize("pyproject, command_line, environ, message", [
    ("[tool.mlbuild]\njobs = 0\n", {}, {},
     "pyproject.toml [tool.mlbuild]: jobs: Input should be greater than or equal to 1"),
    ("[tool.mlbuild]\n", {"toolchain": "gcc"}, {},
     "command line: toolchain: Input should be 'host' or 'llvm'"),
    ("[tool.mlbuild]\n", {}, {"MLBUILD_PROGRESS": "fancy"},
     "environment MLBUILD_PROGRESS: progress: Input should be 'auto', 'live' or 'plain'"),
    ("[tool.mlbuild\n", {}, {},
     "pyproject.toml: not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 14)"),
    ("[tool.mlbuild]\n", {"boot": "uefi"}, {},
     "command line: boot: Input should be 'kernel' or 'firmware'"),
    ("[tool.mlbuild]\n", {}, {"MLBUILD_NETWORK": "open"},
     "environment MLBUILD_NETWORK: network: Input should be 'user', 'restricted' or 'none'"),
], ids=["pyproject", "command-line", "environment", "invalid-toml", "boot", "network"])
def test_load_config_errors_name_where_the_value_came_from(tmp_path, pyproject, command_line, environ, message):
    root = _project_with(tmp_path, pyproject)
    with pytest.raises(InputError) as raised:
        load_config(root, command_line, environ=environ)
    assert str(raised.value) == message
    assert raised.value.exit_status == 2
