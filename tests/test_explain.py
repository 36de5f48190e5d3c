"""`mlbuild explain TASK`: whether a task would run, and why."""

from conftest import after_settings_line


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
