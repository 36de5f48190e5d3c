"""Settings kept in the tree (mlbuild.local.toml: `mlbuild set`, `unset`, `settings`), read by every doit and mlbuild
command between pyproject.toml and MLBUILD_* variables; the first line of a run names what differs from the defaults."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, base_environment, make_project

LOCAL = "mlbuild.local.toml"
# What the synthetic project's pyproject.toml sets (tests/conftest.py), its signing key's settings last.
SYNTHETIC = "arches=x86_64 ccache_dir=.cache/ccache download_dir=.cache/downloads cache=[] sandbox=off cache_signing_key="


@pytest.fixture
def two_arches(tmp_path):
    return make_project(tmp_path, arches=("x86_64", "arm64"))


def listed(result) -> set[str]:
    assert result.returncode == 0, result.stderr
    return {line.split()[0] for line in result.stdout.splitlines() if line.startswith("build:")}


def arches_listed(result) -> set[str]:
    return {name.rsplit("-", 1)[1] for name in listed(result)}


def newest_run(project) -> dict:
    return json.loads(sorted(project.path("build/stats/runs").glob("*.json"))[-1].read_text())


def untouched(project):
    """The local file's bytes and time now, to compare after a refused command."""
    path = project.path(LOCAL)
    return (path.read_bytes(), path.stat().st_mtime_ns) if path.exists() else None


@pytest.mark.slow
def test_a_setting_kept_with_mlbuild_set_is_read_by_doit_and_mlbuild_and_the_command_line_and_environment_win(two_arches):
    project = two_arches
    assert arches_listed(project.doit("list", "--all")) == {"x86_64", "arm64"}
    result = project.cli("set", "arches=arm64")
    assert (result.returncode, result.stdout, result.stderr) == (0, f'{LOCAL}: arches = ["arm64"]\n', "")
    assert 'arches = ["arm64"]\n' in project.read(LOCAL)
    # doit, in a new process without any variable: the file alone.
    assert arches_listed(project.doit("list", "--all")) == {"arm64"}
    explain = project.cli("explain", "build:hello-arm64")
    assert explain.returncode == 0, explain.stderr
    first = explain.stdout.splitlines()[0]
    assert first.startswith(f"settings: arches=arm64 ({LOCAL}), ccache_dir=.cache/ccache ") and first.endswith("(pyproject.toml)")
    missing = project.cli("explain", "build:hello-x86_64")
    assert missing.returncode == 2 and "did you mean build:hello-arm64?" in missing.stderr
    # A key=value on the command line wins over the file, and so does an MLBUILD_* variable.
    assert arches_listed(project.doit("list", "--all", "arches=x86_64")) == {"x86_64"}
    assert arches_listed(project.doit("list", "--all", env={"MLBUILD_ARCHES": "x86_64"})) == {"x86_64"}
    assert "settings: arches=x86_64 (command line)" in project.cli("explain", "build:hello-x86_64", "arches=x86_64").stdout
    # unset: pyproject.toml's value again.
    result = project.cli("unset", "arches")
    assert (result.returncode, result.stdout) == (0, f"{LOCAL}: arches removed; now x86_64,arm64 (pyproject.toml)\n")
    assert "arches" not in project.read(LOCAL)
    assert arches_listed(project.doit("list", "--all")) == {"x86_64", "arm64"}
    again = project.cli("unset", "arches")
    assert (again.returncode, again.stdout) == (0, f"{LOCAL}: arches was not set\n")


@pytest.mark.slow
def test_jobs_from_the_file_reach_the_build_scripts_and_the_first_line_names_each_setting_and_its_origin(project):
    project.edit("templates/build/hello.sh.j2", "mkdir -p", 'echo "make gets -j$JOBS"\nmkdir -p')
    assert project.cli("set", "jobs=1").returncode == 0
    result = project.doit("progress=plain", env={"MLBUILD_LOG_RUNS": "3"}, verbose=False)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"settings: progress=plain (command line), log_runs=3 (environment), jobs=1 ({LOCAL}), {SYNTHETIC}")
    assert first.endswith(" (pyproject.toml)")
    assert "make gets -j1\n" in project.log("build:hello-x86_64") and newest_run(project)["jobs"] == 1
    for arguments, environment, jobs in ((["jobs=3"], {}, 3), ([], {"MLBUILD_JOBS": "4"}, 4), ([], {}, 1)):
        assert project.doit("clean", "build:hello-x86_64").returncode == 0
        result = project.doit(*arguments, env=environment)
        assert result.returncode == 0 and result.executed == {"build:hello-x86_64"}, result.stdout + result.stderr
        assert f"make gets -j{jobs}\n" in project.log("build:hello-x86_64"), (arguments, environment)


@pytest.mark.slow
def test_mlbuild_settings_lists_what_differs_from_the_defaults_with_origins_and_all_with_defaults(project):
    assert project.cli("set", "jobs=1", "progress=plain").returncode == 0
    result = project.cli("settings", "log_runs=4")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[:3] == [["log_runs=4", "(command", "line)"], ["jobs=1", f"({LOCAL})"], ["progress=plain", f"({LOCAL})"]]
    assert ["sandbox=off", "(pyproject.toml)"] in rows and ["accel=auto", "(default)"] not in rows
    # What the file says is shown, also a value that is the default: it was set on purpose.
    assert project.cli("set", "boot_timeout=300").returncode == 0
    rows = [line.split(maxsplit=1) for line in project.cli("settings").stdout.splitlines()]
    assert ["boot_timeout=300", f"({LOCAL}, the default too)"] in rows
    every = [line.split() for line in project.cli("settings", "--all").stdout.splitlines()]
    assert ["accel=auto", "(default)"] in every and ["jobs=1", f"({LOCAL})"] in every
    assert not any(row[0].startswith("rebuild=") for row in every)  # for one run only: not a setting


def test_a_project_at_its_defaults_prints_no_settings_line(tmp_path):
    project = make_project(tmp_path)
    project.write("pyproject.toml", "[tool.mlbuild]\narches = [\"x86_64\", \"arm64\"]\n")  # set, but to the default
    result = project.cli("explain", "build:hello-x86_64", env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("build:hello-x86_64 would run:")


@pytest.mark.slow
def test_a_credential_in_a_setting_is_not_shown_in_the_first_line_or_by_set_and_settings(project):
    result = project.cli("explain", "build:hello-x86_64", env={"MLBUILD_MIRRORS": "https://me:s3cret@mirror.example/dist"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("settings: mirrors=https://me:***@mirror.example/dist (environment), ")
    assert "s3cret" not in result.stdout + result.stderr
    kept = project.cli("set", "mirrors=https://me:s3cret@mirror.example/dist")
    assert kept.stdout == f'{LOCAL}: mirrors = ["https://me:***@mirror.example/dist"]\n'
    assert "https://me:s3cret@mirror.example/dist" in project.read(LOCAL)  # the file is the user's: it keeps the secret
    shown = project.cli("settings")
    assert "mirrors=https://me:***@mirror.example/dist" in shown.stdout and "s3cret" not in shown.stdout


@pytest.mark.slow
def test_an_unknown_key_or_a_bad_value_is_one_line_and_the_file_is_untouched(project):
    assert project.cli("set", "jobs=1").returncode == 0
    before = untouched(project)
    cases = {
        ("set", "jbos=2"): f"mlbuild: set: jbos: unknown configuration key (did you mean 'jobs'?); "
                           f"`mlbuild settings --all` lists them; {LOCAL} not changed\n",
        ("set", "jobs=0"): f"mlbuild: set: jobs=0: Input should be greater than or equal to 1; {LOCAL} not changed\n",
        ("set", "arches=riscv"): f"mlbuild: set: arches=riscv: unsupported arch 'riscv' (did you mean 'riscv64'?), expected one of: x86_64, arm64, riscv64; "
                                 f"{LOCAL} not changed\n",
        ("set", "rebuild=build:hello-x86_64"): f"mlbuild: set: rebuild: a key for one run only, not kept in {LOCAL}: "
                                               "`mlbuild rebuild TASK`\n",
        ("set", "Jobs=2"): "mlbuild: set: 'Jobs=2': expected KEY=VALUE with a lowercase key, as in target_llvm=0\n",
        ("set",): "mlbuild: set: expected KEY=VALUE…, as in `mlbuild set target_llvm=0`\n",
        ("unset", "jbos"): f"mlbuild: unset: jbos: unknown configuration key (did you mean 'jobs'?); {LOCAL} not changed\n",
    }
    for arguments, message in cases.items():
        result = project.cli(*arguments)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", message), arguments
        assert untouched(project) == before, arguments
    # One good and one bad key at once: nothing of either is written.
    assert project.cli("set", "progress=plain", "jobs=0").returncode == 2
    assert untouched(project) == before
    assert list(project.root.glob(f".{LOCAL}*")) == []


@pytest.mark.slow
def test_a_hand_edited_file_is_checked_like_pyproject_and_named_in_one_line(project):
    project.write(LOCAL, 'jobs = "3"\n')  # TOML has integers: text is a mistake, as in pyproject.toml
    result = project.doit("list")
    assert (result.returncode, result.stderr) == (2, f"mlbuild: {LOCAL}: jobs: Input should be a valid integer, got '3'\n")
    project.write(LOCAL, "jobz = 3\n")
    message = f"mlbuild: {LOCAL}: jobz: unknown configuration key (did you mean 'jobs'?); `mlbuild unset jobz` removes it\n"
    assert project.doit("list").stderr == message
    assert project.cli("explain", "build:hello-x86_64").stderr == message
    fixed = project.cli("unset", "jobz")  # the way out the message gives works though the file is wrong
    assert (fixed.returncode, fixed.stdout) == (0, f"{LOCAL}: jobz removed\n")
    assert project.doit("list").returncode == 0
    project.write(LOCAL, "jobs = [\n")
    result = project.doit("list")
    assert result.returncode == 2 and result.stderr.startswith(f"mlbuild: {LOCAL}: not valid TOML: ")
    assert result.stderr.count("\n") == 1


def test_set_and_unset_keep_the_files_comments_and_other_keys(project):
    project.write(LOCAL, "# my machine is small\njobs = 1  # keep it cool\n\n# the boots\nboot_timeout = 600\n")
    project.path(LOCAL).chmod(0o600)
    (project.root.parent / "hello-src").mkdir()  # an override is checked when set: the folder must exist
    assert project.cli("set", "progress=plain", "override=hello=../hello-src", "boot_timeout=900").returncode == 0
    assert project.path(LOCAL).stat().st_mode & 0o777 == 0o600  # a private file stays private
    text = project.read(LOCAL)
    assert "# my machine is small\njobs = 1  # keep it cool\n" in text and "# the boots\n" in text
    assert "boot_timeout = 900\n" in text and 'progress = "plain"\n' in text and 'override = {hello = "../hello-src"}' in text
    assert project.cli("unset", "override", "progress").returncode == 0
    assert project.read(LOCAL) == "# my machine is small\njobs = 1  # keep it cool\n\n# the boots\nboot_timeout = 900\n"
    assert list(project.root.glob(f".{LOCAL}*")) == []  # written through a temporary file renamed over it


LOUD = {"help": "greet loudly", "default": False}
STYLE = {"help": "how long the greeting is", "choices": ["short", "long"], "default": "short"}
WITH_EXTRA = {"help": "put extra in the system", "default": True}


@pytest.mark.slow
def test_options_recipes_declare_are_kept_and_checked_and_every_command_follows_them(project):
    project.update_recipe("hello", options={"loud": LOUD, "style": STYLE, "with_extra": WITH_EXTRA})
    project.update_recipe("extra", when="with_extra")
    result = project.cli("set", "loud=on", "style=long", "with_extra=0")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{LOCAL}: loud = true\n{LOCAL}: style = \"long\"\n{LOCAL}: with_extra = false\n"
    wrong = project.cli("set", "style=medium")
    assert wrong.stderr == (f"mlbuild: set: style (option of recipes/hello.toml): expected one of: short, long, "
                            f"got 'medium'; {LOCAL} not changed\n")
    # with_extra=0 in the file: no extra in doit's tasks, the graph or the SBOM.
    assert "build:extra-x86_64" not in listed(project.doit("list", "--all"))
    graph = project.cli("graph")
    assert graph.stdout.startswith(f"settings: loud=true style=long with_extra=false ({LOCAL}), ")
    assert "extra" not in project.read("build/graph.dot")
    sbom = project.cli("sbom", "x86_64")
    assert sbom.returncode == 0, sbom.stderr
    names = {e["name"] for e in json.loads(project.read("build/sbom/x86_64.spdx.json"))["@graph"]
             if e["type"] == "software_Package" and e.get("software_primaryPurpose") != "source"}
    assert names == {"mlbuild-system-x86_64", "hello", "app"}
    # The option's recipe is gone: the file's key is now unknown, said with the way out.
    project.update_recipe("hello", options={"loud": LOUD, "style": STYLE})
    project.write_recipe("extra", {key: value for key, value in project.recipes["extra"].items() if key != "when"})
    broken = project.doit("list")
    assert broken.returncode == 2 and "`mlbuild unset with_extra` removes it" in broken.stderr


def test_the_real_projects_sbom_with_target_llvm_off_in_the_file_lists_no_clang(tmp_path):
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("recipes", "arches", "templates"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / LOCAL).write_text("target_llvm = false\n")
    result = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "sbom", "x86_64", "download_dir=downloads"],
                            cwd=root, env=base_environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"settings: download_dir=downloads (command line), target_llvm=false ({LOCAL})"
    names = {e["name"] for e in json.loads((root / "build/sbom/x86_64.spdx.json").read_text())["@graph"]
             if e["type"] == "software_Package"}
    assert "clang" not in names and {"linux", "musl", "busybox"} <= names
