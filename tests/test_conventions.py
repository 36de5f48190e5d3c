"""What doit users try first: list, info, forget and clean of a task, doit from a subfolder, key=value for mlbuild,
a mistyped task, a pipe into head."""

import os
import subprocess
import sys
import tomllib

import pytest

from conftest import ALL_TASKS, REPO, base_environment, run_doit, x86

# The checkout's pyproject.toml declares mlbuild's doit commands; the synthetic project gets the same lines.
COMMANDS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["doit"]["plugins"]["command"]
PLUGINS = "[tool.doit.plugins.command]\n" + "".join(f'{name} = "{where}"\n' for name, where in COMMANDS.items()) + "\n"


def use_mlbuild_commands(project) -> None:
    if "[tool.doit.plugins.command]" not in project.read("pyproject.toml"):
        project.write("pyproject.toml", PLUGINS + project.read("pyproject.toml"))


def installed_doit(cwd, *args, env=None):
    """The `doit` command mlbuild installs (mlbuild.frontend.doit_entry), of this checkout, run in cwd."""
    return subprocess.run([sys.executable, "-m", "mlbuild.frontend.doit_entry", *args], cwd=cwd, env=base_environment(env),
                          capture_output=True, text=True, timeout=120)

HOST_TOOL_SH = 'mkdir -p "$OUT/bin"\nprintf "#!/bin/sh\\necho tool\\n" > "$OUT/bin/tool"\n'


def add_host_recipe(project) -> None:
    project.write("templates/build/tool.sh.j2", HOST_TOOL_SH)
    project.write_recipe("tool", {"name": "tool", "version": "1.0", "summary": "a tool of the build machine",
                                  "homepage": "https://example.org/", "license": "MIT", "build": "tool",
                                  "source": "hello", "host": True})
    use_mlbuild_commands(project)


def test_doit_list_all_build_lists_the_host_tasks_that_doit_build_leaves_out(project):
    add_host_recipe(project)
    listed = project.doit("list", "--all", "build")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert "build:tool-host" in names and "build:toolchain" in names
    assert "build:hello-x86_64" in names and "build:target-x86_64" in names
    assert len(names) == len(set(names))
    # ... and `doit build` still leaves them out.
    dry = project.doit("info", "build")
    assert "build:target-x86_64" in dry.stdout and "build:tool-host" not in dry.stdout


def test_doit_works_from_a_subfolder_of_the_checkout(project):
    (project.root / "recipes" / "deeper").mkdir()
    result = run_doit(project.root / "recipes" / "deeper", "list", env={"DOIT_SEEK_FILE": "1"})
    assert result.returncode == 0, result.stderr
    assert "build:hello-x86_64" in run_doit(project.root / "recipes", "list", "--all", env={"DOIT_SEEK_FILE": "1"}).stdout


def test_the_installed_doit_works_from_any_subfolder_with_the_checkouts_commands(project):
    add_host_recipe(project)  # only mlbuild's list shows the host tasks under `build`: proof that [tool.doit] was read
    (project.root / "recipes" / "deeper").mkdir()
    for folder, seek in ((project.root / "recipes" / "deeper", {}), (project.root / "templates" / "build", {}),
                         (project.root / "recipes", {"DOIT_SEEK_FILE": "1"})):  # what scripts/setup.sh's venv sets
        result = installed_doit(folder, "list", "--all", "build", env=seek)
        assert result.returncode == 0, result.stderr
        assert "build:tool-host" in result.stdout and "build:hello-x86_64" in result.stdout
        assert result.stderr == ""
    # doit's own, from a subfolder (-k), runs doit's forget: a warning says so rather than forgetting nothing in silence.
    plain = run_doit(project.root / "recipes", "-k", "forget", "build:hello-x86_64")
    assert "mlbuild: warning: doit started in " in plain.stderr and "`doit forget` is doit's own here" in plain.stderr


def test_doit_info_shows_the_reasons_in_words_and_the_inputs_output_stamp_and_log(built):
    use_mlbuild_commands(built)
    result = built.doit("info", "build:app-x86_64")
    assert result.returncode == 0, result.stderr
    assert "status     : up-to-date" in result.stdout
    assert "output     : build/out/app-x86_64\n" in result.stdout
    assert "stamp      : build/state/build_app-x86_64.json\n" in result.stdout
    assert "log        : build/logs/build_app-x86_64.log\n" in result.stdout
    assert ' - recipe:vars: {"message": "app says hi"}\n' in result.stdout
    assert " - dep:build:hello-x86_64: " in result.stdout

    built.update_recipe("app", vars={"message": "changed"})
    result = built.doit("info", "build:app-x86_64")
    assert result.returncode == 1  # doit's convention: 1 when the task would run
    assert ' * recipe field vars changed: {"message": "app says hi"} -> {"message": "changed"}\n' in result.stdout
    assert "function" not in result.stdout  # no uptodate callable's repr

    wrong = built.doit("info", "build:ap-x86_64")
    assert wrong.returncode == 3 and "Traceback" not in wrong.stderr
    assert wrong.stderr == "mlbuild: info: no task 'build:ap-x86_64' (did you mean build:app-x86_64?); `doit list --all` shows them\n"


def test_doit_forget_makes_the_task_run_again_and_nothing_else(built):
    use_mlbuild_commands(built)
    result = built.doit("forget", "build:hello-x86_64")
    assert result.returncode == 0, result.stderr
    assert not built.stamp("build:hello-x86_64").exists()
    result = built.doit()
    # Rebuilt to the same bytes: its dependents stay up to date (early cutoff).
    assert result.executed == x86("hello")

    assert built.doit("forget", "--all").returncode == 0
    assert built.doit().executed == ALL_TASKS


def test_doit_clean_removes_the_output_and_stamp_of_a_fetch_too_and_its_dry_run_names_what(built):
    dry = built.doit("clean", "-n", "fetch:hello")
    assert "fetch:hello - executing 'Python: function mlbuild_clean(output, work folder, stamp)'" in dry.stdout
    assert built.path("build/src/hello").is_dir() and built.stamp("fetch:hello").exists()
    result = built.doit("clean", "fetch:hello")
    assert result.returncode == 0, result.stderr
    assert "fetch:hello: removed build/src/hello" in result.stdout
    assert not built.path("build/src/hello").exists() and not built.stamp("fetch:hello").exists()
    # Unpacked again, to the same tree: nothing downstream runs.
    assert built.doit().executed == {"fetch:hello"}


def test_mlbuild_commands_take_key_value_settings_like_doit(project):
    result = project.cli("explain", "build:hello-x86_64", "jobs=1", "progress=plain")
    assert result.returncode == 0, result.stderr
    assert "build:hello-x86_64 would run" in result.stdout
    wrong = project.cli("explain", "build:hello-x86_64", "jobs=0")
    assert wrong.returncode != 0 and "command line" in wrong.stderr and "jobs" in wrong.stderr


# --- a mistyped task, a closed pipe ----------------------------------------------------------------------

def test_the_checkout_declares_every_command_mlbuild_extends():
    assert set(COMMANDS) == {"run", "list", "info", "forget", "clean", "ignore", "help"}


@pytest.mark.parametrize("command", [(), ("run",), ("list",), ("forget",), ("clean",), ("ignore",)])
def test_a_mistyped_task_under_doit_is_one_line_naming_the_nearest_task(project, command):
    use_mlbuild_commands(project)
    result = project.doit(*command, "build:helo-x86_64")
    assert (result.returncode, result.stdout, result.stderr) == (
        3, "", "doit: no task 'build:helo-x86_64' (did you mean build:hello-x86_64?); `doit list --all` shows them\n")
    assert not project.path("build/state").exists() or not any(project.path("build/state").iterdir())


def test_a_task_nothing_resembles_is_one_line_too_and_the_installed_doit_says_the_same(project):
    use_mlbuild_commands(project)
    result = project.doit("busybx")
    assert (result.returncode, result.stderr) == (3, "doit: no task 'busybx'; `doit list --all` shows them\n")
    installed = installed_doit(project.root, "build:app-x86_46")
    assert (installed.returncode, installed.stderr) == (
        3, "doit: no task 'build:app-x86_46' (did you mean build:app-x86_64?); `doit list --all` shows them\n")


def into_a_closed_pipe(cwd, *arguments):
    """python ARGUMENTS with stdout a pipe whose reader has gone, as `| head -1`'s once it has its line."""
    read, write = os.pipe()
    os.close(read)  # before the first byte: deterministic, whatever the pipe's buffer would have taken
    try:
        return subprocess.run([sys.executable, *arguments], cwd=cwd, env=base_environment(), stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)


@pytest.mark.parametrize("arguments", [
    ("-m", "doit", "list"), ("-m", "doit", "info", "build:app-x86_64"), ("-m", "doit", "help"),
    ("-m", "mlbuild.frontend.doit_entry", "list", "--all"), ("-m", "mlbuild.frontend.doit_entry", "info", "fetch:hello"),
    ("-m", "mlbuild.frontend.cli", "explain", "build:app-x86_64"), ("-m", "mlbuild.frontend.cli", "script", "build:app-x86_64"),
], ids=lambda arguments: " ".join(arguments[1:3]))
def test_a_reader_that_went_away_ends_the_command_quietly(project, arguments):
    use_mlbuild_commands(project)
    result = into_a_closed_pipe(project.root, *arguments)
    # 141: what a shell reports for a program SIGPIPE ended; not a word, neither traceback nor "Exception ignored".
    assert (result.returncode, result.stderr) == (141, "")


def test_a_pipe_into_head_gives_its_line_and_nothing_on_stderr(project):
    use_mlbuild_commands(project)
    for command in ("python -m doit list", "python -m mlbuild.frontend.cli script build:app-x86_64"):
        result = subprocess.run(["bash", "-c", f"set -o pipefail; {command.replace('python', sys.executable)} | head -1"],
                                cwd=project.root, env=base_environment(), capture_output=True, text=True, timeout=120)
        assert result.stderr == "" and len(result.stdout.splitlines()) == 1, result
        assert result.returncode in (0, 141)


def test_a_broken_pipe_that_is_not_stdout_still_fails_loudly(tmp_path):
    """A child process that died under us is a failure, not a reader that went away: it is not swallowed."""
    program = ("from mlbuild.frontend.closed_pipe import quiet_when_the_reader_goes\n"
               "@quiet_when_the_reader_goes\n"
               "def main():\n"
               "    print('some output')\n"
               "    raise BrokenPipeError(32, 'Broken pipe')\n"
               "main()\n")
    result = subprocess.run([sys.executable, "-c", program], env=base_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "BrokenPipeError" in result.stderr and result.stdout == "some output\n"
