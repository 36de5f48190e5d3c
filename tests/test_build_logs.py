"""Build scripts' logs: ccache statistics, and what a failing script leaves behind."""

import re
import shutil

from conftest import ALL_TASKS, assert_stamps_valid, x86

CCACHE_LINE = re.compile(r"^# ccache: (\d+) hits, (\d+) misses$")
RECIPES = ("hello", "extra", "app")


def ccache_counts(project, recipe: str) -> tuple[int, int]:
    """(hits, misses) from the build log; the ccache line closes the script's part of the log."""
    lines = project.log(f"build:{recipe}-x86_64").splitlines()
    # The engine's trailer ("# output hash ...") follows it.
    assert lines[-1].startswith("# output hash "), lines
    match = CCACHE_LINE.match(lines[-2])
    assert match, lines
    return int(match.group(1)), int(match.group(2))


def test_build_logs_end_with_ccache_counts_and_a_rebuild_after_deleting_build_hits_the_cache(built):
    for recipe in RECIPES:
        assert ccache_counts(built, recipe) == (0, 1)  # one compile each, into an empty cache

    shutil.rmtree(built.path("build"))
    result = built.doit()
    assert result.returncode == 0, result.stdout
    assert result.executed == ALL_TASKS
    for recipe in RECIPES:
        assert ccache_counts(built, recipe) == (1, 0)


def test_a_script_that_compiles_nothing_says_so_in_its_log(built):
    built.write("templates/build/extra.sh.j2", 'mkdir -p "$OUT/share"\necho data > "$OUT/share/extra.txt"\n')
    result = built.doit()
    assert result.executed == x86("extra", "target", "images")
    assert built.log("build:extra-x86_64").splitlines()[-2] == "# ccache: no compilations"


def test_a_failing_build_script_fails_doit_shows_the_log_leaves_no_stamp_and_keeps_the_work_folder(built):
    built.edit("templates/build/hello.sh.j2", "mkdir", 'echo "something went wrong" >&2\nexit 3\nmkdir')
    result = built.doit()
    assert result.returncode != 0
    assert result.executed == x86("hello")
    log = built.path("build/logs/build_hello-x86_64.log")
    lines = result.stdout.splitlines()
    failure = lines.index("TaskFailed - taskid:build:hello-x86_64")
    assert lines[failure + 1] == f"build:hello-x86_64: build script failed (exit status 3); log: {log}"
    assert lines[failure + 2:failure + 5] == [  # the log's last lines
        "# build:hello-x86_64: build hello 1.0 for x86_64",
        "# running build/work/hello-x86_64/build.sh (log of the commands follows)",
        "something went wrong",
    ]
    assert not built.stamp("build:hello-x86_64").exists()
    work = built.path("build/work/hello-x86_64")
    assert {"build.sh", "hello.o", "greeting.h"} <= {p.name for p in work.iterdir()}

    # No stamp: the next run tries again (and its dependents wait for it).
    again = built.doit()
    assert again.returncode != 0
    assert again.executed == x86("hello")

    built.edit("templates/build/hello.sh.j2", 'echo "something went wrong" >&2\nexit 3\n', "")
    fixed = built.doit()
    assert fixed.returncode == 0, fixed.stdout
    # The script is back to what it was: same output as before the failure, so nothing downstream runs.
    assert fixed.executed == x86("hello")
    assert built.leftovers() == []
    assert built.run_binary("hello") == "Hello, world!\n"
    assert_stamps_valid(built)
