"""What doit users try first: host tasks under `doit list --all build`, doit from a subfolder, key=value for mlbuild."""

from conftest import run_doit

HOST_TOOL_SH = 'mkdir -p "$OUT/bin"\nprintf "#!/bin/sh\\necho tool\\n" > "$OUT/bin/tool"\n'


def add_host_recipe(project) -> None:
    project.write("templates/build/tool.sh.j2", HOST_TOOL_SH)
    project.write_recipe("tool", {"name": "tool", "version": "1.0", "summary": "a tool of the build machine",
                                  "homepage": "https://example.org/", "license": "MIT", "build": "tool",
                                  "source": "hello", "host": True})
    project.write("pyproject.toml", project.read("pyproject.toml").replace(
        "[tool.mlbuild]", '[tool.doit.plugins.command]\nlist = "mlbuild.doit_commands:List"\n\n[tool.mlbuild]'))


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


def test_mlbuild_commands_take_key_value_settings_like_doit(project):
    result = project.cli("explain", "build:hello-x86_64", "jobs=1", "progress=plain")
    assert result.returncode == 0, result.stderr
    assert "build:hello-x86_64 would run" in result.stdout
    wrong = project.cli("explain", "build:hello-x86_64", "jobs=0")
    assert wrong.returncode != 0 and "command line" in wrong.stderr and "jobs" in wrong.stderr
