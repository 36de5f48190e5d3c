"""`mlbuild explain TASK`: whether a task would run, and why; `--diff`: whether a build again gives the same files."""

import subprocess
import sys

from conftest import after_settings_line, base_environment


def answer(result) -> str:
    """explain's answer, after its first line (the synthetic project's settings that differ from the defaults)."""
    return after_settings_line(result.stdout)


def test_explain_says_up_to_date_after_a_build(built):
    result = built.cli("explain", "build:app-x86_64")
    assert result.returncode == 0, result.stderr
    assert answer(result).startswith("build:app-x86_64 is up to date (signature ")
    assert answer(result).rstrip().endswith("output build/out/app-x86_64)")
    # the build: prefix may be left out
    assert built.cli("explain", "app-x86_64").stdout == result.stdout


def test_explain_after_editing_a_template_says_would_run_and_shows_the_changed_line(built):
    built.edit("templates/build/app.sh.j2", "-O1", "-O2")
    result = built.cli("explain", "build:app-x86_64")
    assert result.returncode == 0, result.stderr
    assert answer(result) == (
        "build:app-x86_64 would run:\n"
        '  - its build script changed: -ccache clang -O1 -I. -c "$SRC/app.c" -o app.o'
        ' | +ccache clang -O2 -I. -c "$SRC/app.c" -o app.o\n'
    )


def test_explain_after_a_dependency_changes_lists_it(built):
    built.update_recipe("hello", vars={"greeting": "Howdy"})
    result = built.cli("explain", "build:app-x86_64")
    assert result.returncode == 0, result.stderr
    lines = answer(result).splitlines()
    assert lines[0] == "build:app-x86_64 is up to date, but may run after its dependencies:"
    pending = [line for line in lines if line.startswith("  - ")]
    assert len(pending) == 1
    assert pending[0].startswith("  - build:hello-x86_64: recipe field vars changed: "
                                 '{"greeting": "Hello, world!"} -> {"greeting": "Howdy"}; its build script changed: ')

    # Once hello is rebuilt, app itself would run, because its dependency's output changed.
    assert built.doit("build:hello-x86_64").executed == {"build:hello-x86_64"}
    result = built.cli("explain", "build:app-x86_64")
    assert answer(result) == "build:app-x86_64 would run:\n  - dependency build:hello-x86_64 has a new output\n"


def test_explain_of_an_unknown_task_exits_2_with_a_suggestion(built):
    result = built.cli("explain", "build:ap-x86_64")
    assert result.returncode == 2
    assert result.stderr == ("mlbuild: explain: no task 'build:ap-x86_64' (did you mean build:app-x86_64?); "
                             "`doit list --all` shows them\n")


# --- explain --diff: a build again, compared file by file --------------------------------------------

# A script that writes the time into its output: a build again gives another file, though no input changed.
CLOCK_SH = 'mkdir -p "$OUT/share"\ndate +%s%N > "$OUT/share/clock"\necho fixed > "$OUT/share/fixed"\n'


def add_clock(project) -> None:
    project.write("templates/build/clock.sh.j2", CLOCK_SH)
    project.write_recipe("clock", {"name": "clock", "version": "1.0", "summary": "writes the time", "license": "MIT",
                                   "homepage": "https://example.org/", "build": "clock", "source": "hello", "target": False})
    assert project.doit("build:clock-x86_64").executed == {"build:clock-x86_64"}


def test_explain_diff_names_the_file_that_a_build_again_changes_and_commits_nothing(built):
    add_clock(built)
    output = built.path("build/out/clock-x86_64")
    stamp, clock = built.stamp("build:clock-x86_64").read_bytes(), (output / "share/clock").read_text()
    result = built.cli("explain", "--diff", "clock-x86_64")
    assert result.returncode == 1, result.stderr
    assert answer(result).splitlines() == [
        "build:clock-x86_64: building it again aside to compare with build/out/clock-x86_64 "
        "(log: build/logs/diff_build_clock-x86_64.log)",
        "differs: share/clock (content)",
        "build:clock-x86_64: its inputs did not change, its output did: the build reads something its signature "
        "does not cover (the time, the machine, an undeclared file)",
    ]
    # The output and the stamp are as they were, no staging folder is left, the task is still up to date.
    assert built.stamp("build:clock-x86_64").read_bytes() == stamp and (output / "share/clock").read_text() == clock
    assert built.leftovers() == []
    assert "build:clock-x86_64 is up to date" in built.cli("explain", "build:clock-x86_64").stdout
    assert "# build:clock-x86_64: built again to compare with build/out/clock-x86_64" in built.log("diff:build:clock-x86_64")
    assert built.doit().executed == set()


def test_explain_diff_of_a_task_that_builds_the_same_bytes_says_same(built):
    result = built.cli("explain", "--diff", "build:app-x86_64")
    assert result.returncode == 0, result.stderr
    assert answer(result).splitlines()[1:] == ["same"]
    assert built.leftovers() == []


def test_explain_diff_needs_an_up_to_date_task_and_the_tree_lock(built):
    built.edit("templates/build/app.sh.j2", "-O1", "-O2")
    result = built.cli("explain", "--diff", "build:app-x86_64")
    assert (result.returncode, result.stderr) == (2, (
        "mlbuild: explain --diff: build:app-x86_64 is not up to date (its build script changed: "
        '-ccache clang -O1 -I. -c "$SRC/app.c" -o app.o | +ccache clang -O2 -I. -c "$SRC/app.c" -o app.o); '
        "build it first (`doit build:app-x86_64`): --diff compares a build again with an output of the same inputs\n"))
    # A build running in the tree: --diff waits for it (here: is told not to wait), it never builds beside it.
    lock = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom mlbuild.engine.tree_lock import TreeLock\n"
                             f"TreeLock(__import__('pathlib').Path({str(built.path('build/.lock'))!r})).acquire()\n"
                             "print('held', flush=True)\ntime.sleep(60)\n"],
                            env=base_environment(), stdout=subprocess.PIPE, text=True)
    try:
        assert lock.stdout.readline() == "held\n"
        result = built.cli("explain", "--diff", "build:hello-x86_64", env={"MLBUILD_LOCK_WAIT": "0"})
        assert result.returncode == 1 and "another build is running in this tree" in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    finally:
        lock.kill()
        lock.wait()


def test_differences_names_content_mode_link_kind_and_the_files_only_one_side_has(tmp_path):
    from mlbuild.engine.output_diff import differences

    old, new = tmp_path / "output", tmp_path / "again"
    for root in (old, new):
        (root / "bin").mkdir(parents=True)
        (root / "bin/same").write_text("same")
    (old / "bin/app").write_text("one")
    (new / "bin/app").write_text("two")
    (old / "bin/tool").write_text("tool")
    (new / "bin/tool").write_text("tool")
    (new / "bin/tool").chmod(0o755)
    (old / "bin/tool").chmod(0o644)
    (old / "lib").symlink_to("bin")
    (new / "lib").symlink_to("usr/lib")
    (old / "etc").mkdir()
    (new / "etc").write_text("a file now")
    (old / "gone").write_text("")
    (new / "extra").write_text("")
    assert differences(old, new) == [
        "differs: bin/app (content)",
        "differs: bin/tool (mode 0644 -> 0755)",
        "differs: etc (a folder in the output, a file in the new build)",
        "only in the new build: extra",
        "only in the output: gone",
        "differs: lib (link target bin -> usr/lib)",
    ]
    assert differences(old, old) == []
