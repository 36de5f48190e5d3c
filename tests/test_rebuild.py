"""A rebuild that rebuilds: `mlbuild rebuild TASK` (and `doit TASK rebuild=TASK`) runs the task's script though the
artifact cache holds its signature, then its dependents as their signatures decide; `doit forget` alone restores."""

import fcntl
import os
import re

import pytest

from conftest import DoitResult, make_project, parse_tasks, x86

LOCAL = "mlbuild.local.toml"
# hello's output changes at every build (a build that is not reproducible): its dependents then run again.
STAMPED_HELLO = 'date +%s%N > "$OUT/bin/built-at"\n'


def restored(result) -> set[str]:
    return {line.split(": restored from ")[0] for line in result.stdout.splitlines() if ": restored from " in line}


def summary(result) -> str:
    lines = [line for line in result.stdout.splitlines() if line.startswith("mlbuild: ")]
    assert len(lines) == 1, result.stdout
    return lines[0]


def warm(tmp_path, stamped: bool = False):
    """A project built once with a file:// artifact cache (filled), and a fresh clone of it restored from that cache."""
    cache = (tmp_path / "cache").as_uri()
    projects = []
    for name in ("first", "fresh"):
        project = make_project(tmp_path / name)
        if stamped:
            project.write("templates/build/hello.sh.j2", project.read("templates/build/hello.sh.j2") + STAMPED_HELLO)
        assert project.cli("set", f"cache={cache}").returncode == 0  # kept in the tree: every run below uses it
        result = project.doit()
        assert result.returncode == 0, result.stdout + result.stderr
        projects.append((project, result))
    (_, cold), (fresh, first_run) = projects
    assert restored(cold) == set() and restored(first_run) == x86("hello", "extra", "app", "target", "images")
    fresh.cache_uri = cache
    return fresh


def rebuild(project, *args, env=None) -> DoitResult:
    """`mlbuild rebuild ARGS`, with the tasks its doit run executed and found up to date."""
    result = project.cli("rebuild", *args, env={"MLBUILD_VERBOSE": "1", **(env or {})})  # doit's task lines
    return DoitResult(result.returncode, *parse_tasks(result.stdout), result.stdout, result.stderr)


@pytest.fixture(scope="module")
def warm_once(tmp_path_factory):
    """The two builds of warm() once per module; each test gets a copy of the fresh clone (see `fresh`)."""
    return warm(tmp_path_factory.mktemp("warm"))


@pytest.fixture
def fresh(warm_once, tmp_path):
    """A copy of the fresh clone restored from the cache, which the copies share (a rebuild pushes the same bytes)."""
    copy = warm_once.copy_to(tmp_path)
    copy.cache_uri = warm_once.cache_uri
    return copy


def test_doit_forget_with_a_cache_restores_the_task_and_runs_no_script(fresh):
    from test_conventions import use_mlbuild_commands

    use_mlbuild_commands(fresh)
    assert fresh.doit("forget", "build:hello-x86_64").returncode == 0
    result = fresh.doit()
    assert result.executed == x86("hello") and restored(result) == x86("hello")
    log = fresh.log("build:hello-x86_64")
    assert "# restored from file://" in log and "# running" not in log


def test_mlbuild_rebuild_runs_the_script_though_the_cache_holds_it_and_its_dependents_as_decided(fresh):
    result = rebuild(fresh, "hello-x86_64")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "rebuild: doit build:hello-x86_64 build:target-x86_64 build:images-x86_64 rebuild=build:hello-x86_64"
    assert lines[1].startswith(f"settings: rebuild=build:hello-x86_64 (command line), verbose=1 (environment), "
                               f"cache={fresh.cache_uri} ({LOCAL}), ")
    assert result.executed == x86("hello") and restored(result) == set()
    log = fresh.log("build:hello-x86_64")
    assert "# rebuild: built again, not restored from the artifact cache" in log and "# running" in log
    assert "# restored from" not in log
    # Built to the same bytes: app, the target and the images stay up to date (their signatures say so).
    assert result.up_to_date >= x86("app", "target", "images")
    assert summary(result).startswith("mlbuild: 1 built, 6 up to date; ")
    assert fresh.run_binary("hello") == "Hello, world!\n"
    # rebuild= is for that run only: the next one does nothing.
    assert fresh.doit().executed == set()


@pytest.mark.slow
def test_a_rebuild_whose_output_differs_runs_its_dependents_and_the_doit_way_does_the_same(tmp_path):
    fresh = warm(tmp_path, stamped=True)
    before = fresh.path("build/out/hello-x86_64/bin/built-at").read_text()
    result = rebuild(fresh, "build:hello-x86_64")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("hello", "app", "target", "images") and restored(result) == set()
    assert "# running" in fresh.log("build:app-x86_64")  # its dependency's output changed: built, not restored
    after = fresh.path("build/out/hello-x86_64/bin/built-at").read_text()
    assert after != before
    # The same with doit alone: the default tasks, hello rebuilt.
    result = fresh.doit("rebuild=build:hello-x86_64")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("hello", "app", "target", "images") and restored(result) == set()
    assert fresh.path("build/out/hello-x86_64/bin/built-at").read_text() != after


def test_mlbuild_rebuild_takes_the_tree_lock(fresh):
    with open(fresh.path("build/.lock"), "r+") as lock:  # held here, as a running build holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        result = rebuild(fresh, "hello-x86_64", env={"MLBUILD_LOCK_WAIT": "0"})
    assert result.returncode == 1
    assert f"build:hello-x86_64: {fresh.path('build/.lock')}: another build is running in this tree (pid {os.getpid()})\n" in result.stdout
    # How many were found up to date before the failure stopped the run depends on doit's threads (-n).
    assert re.match(r"mlbuild: \d+ up to date, 1 failed; ", summary(result)), summary(result)
    assert "# running" not in fresh.log("build:hello-x86_64")


def test_rebuild_mistakes_are_one_line(fresh):
    result = rebuild(fresh, "build:helo-x86_64")
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", "mlbuild: rebuild: no task 'build:helo-x86_64' (did you mean build:hello-x86_64?); `doit list --all` shows them\n")
    result = fresh.doit("rebuild=build:helo-x86_64")
    assert (result.returncode, result.stderr) == (
        2, "mlbuild: command line: rebuild: no task 'build:helo-x86_64' (did you mean build:hello-x86_64?); `doit list --all` shows them\n")
    # For one run only: neither a variable nor a file keeps it.
    result = fresh.doit(env={"MLBUILD_REBUILD": "build:hello-x86_64"})
    assert (result.returncode, result.stderr) == (
        2, "mlbuild: environment MLBUILD_REBUILD: rebuild: a key for one run only: give it on the command line "
           "(`doit rebuild=build:busybox-x86_64`), or run `mlbuild rebuild TASK`\n")
    fresh.write(LOCAL, fresh.read(LOCAL) + 'rebuild = ["build:hello-x86_64"]\n')
    result = fresh.doit("list")
    assert result.returncode == 2 and result.stderr.startswith(f"mlbuild: {LOCAL}: rebuild: a key for one run only")
