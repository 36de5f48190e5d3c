"""Hostile inputs and faults met by the engine (issue 12): each ends in one line, a non-zero exit and a state that heals."""

import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ALL_TASKS, SLOW_APP_SH, assert_stamps_valid, process_alive, wait_for, x86

APP_STAMP = "build:app-x86_64"


def no_traceback(result) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "File \"" not in output, output


def error_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("mlbuild:")]


# --- stamps (defect 4) -------------------------------------------------------------

@pytest.mark.parametrize("content", [b"\x89PNG\x00\xff\xfe garbage", b'["a", "list"]', b'{"inputs": 5}', b'{"task": "x"}'],
                         ids=["binary", "json-list", "wrong-types", "missing-keys"])
def test_a_damaged_stamp_counts_as_not_built_with_one_warning_and_heals(built, content):
    built.stamp(APP_STAMP).write_bytes(content)
    result = built.doit()
    no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert APP_STAMP in result.executed
    warnings = [line for line in result.stderr.splitlines() if "damaged stamp" in line]
    assert len(warnings) == 1 and "build_app-x86_64.json" in warnings[0], result.stderr
    assert built.doit().executed == set()
    assert_stamps_valid(built)


# --- caches and doit's database (defect 5) -------------------------------------------

class _Planted:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_planted_pickle_in_build_cache_runs_no_code_and_the_cache_is_rebuilt(built, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Planted(str(marker)))
    for name in ("recipes.pickle", "render.pickle", "recipes.json", "render.json"):
        built.path(f"build/cache/{name}").write_bytes(payload)
    result = built.doit("list")
    no_traceback(result)
    assert result.returncode == 0
    assert not marker.exists(), "a file in build/cache ran code"
    assert built.doit().executed == set()
    assert built.path("build/cache/recipes.json").read_bytes().startswith(b"mlbuild-hmac-sha256 ")  # rebuilt, sealed


@pytest.mark.parametrize("damage", ["garbage", "folder", "bad-record"])
def test_a_damaged_doit_database_is_moved_aside_with_a_warning(built, damage):
    database = built.path("build/doit.sqlite3")
    if damage == "garbage":
        database.write_bytes(b"this is not an sqlite database" * 100)
    elif damage == "folder":
        database.unlink()
        database.mkdir()
    else:
        import sqlite3
        with sqlite3.connect(database) as connection:
            connection.execute("update doit set task_data = 'not json {'")
    result = built.doit()
    no_traceback(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == set()  # stamps decide, not doit's records
    assert len([line for line in result.stderr.splitlines() if "doit's database is damaged" in line]) == 1
    assert [p.name for p in built.path("build").glob("doit.sqlite3.damaged-*")]
    assert built.doit().stderr == ""


# --- escaping (defects 6 and 7) --------------------------------------------------------

INJECTION = 'x")\nexecute_process(COMMAND touch pwned)\n#'


def test_a_triple_that_is_not_a_triple_is_refused_by_validation(project):
    project.update_recipe("app", vars={"message": "hi", "default_triple": INJECTION})
    for result in (project.doit("list"), project.cli("check")):
        assert result.returncode == 2
        assert result.stderr.startswith("mlbuild: recipes/app.toml: vars: default_triple: expected a target triple"), result.stderr
        no_traceback(result)


def test_values_in_a_cmake_file_are_escaped_and_cmake_reads_them_back_unchanged(project, tmp_path):
    from mlbuild.render import render

    project.write("templates/t.cmake.j2",
                  'cmake_minimum_required(VERSION 3.20)\nset(QUOTED "{{ value }}")\nset(BARE {{ value }})\n# {{ value }}\n'
                  'message(STATUS "Q=[${QUOTED}]")\nmessage(STATUS "B=[${BARE}]")\n')
    tricky = 'x")\nexecute_process(COMMAND touch pwned)\n#$(id) ${HOME} [[a]] @b@'
    text = render(project.path("templates"), "t.cmake.j2", {"value": tricky})
    script = tmp_path / "t.cmake"
    script.write_text(text)
    result = subprocess.run(["cmake", "-P", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "pwned").exists()
    expected = tricky  # CMake prints the value itself, line breaks included
    assert f"Q=[{expected}]" in result.stdout and f"B=[{expected}]" in result.stdout, result.stdout


@pytest.mark.slow
def test_a_kconfig_value_with_a_line_break_is_refused_naming_the_template(project):
    project.write("templates/app/extra.config", 'CONFIG_GREETING="{{ vars.note }}"\n')
    project.update_recipe("app", files=["app/extra.config"], vars={"message": "hi", "note": 'hi"\nCONFIG_MODULES=y'})
    result = project.doit()
    no_traceback(result)
    assert result.returncode == 2
    assert result.stderr.startswith("mlbuild: templates/app/extra.config:1: "), result.stderr
    assert "Kconfig" in result.stderr
    project.update_recipe("app", vars={"message": "hi", "note": 'say "hi" \\o/'})
    assert project.doit().returncode == 0
    assert project.read("build/work/app-x86_64/files/extra.config") == 'CONFIG_GREETING="say \\"hi\\" \\\\o/"\n'


def test_a_value_inside_double_quotes_in_a_shell_template_is_refused_by_check_and_build(project, tmp_path):
    project.edit("templates/build/app.sh.j2", "ccache clang", 'echo "message: {{ vars.message }}"\nccache clang')
    project.update_recipe("app", vars={"message": f"$(touch {tmp_path}/pwned)"})
    expected = "mlbuild: templates/build/app.sh.j2:3: {{ vars.message }} is inside double quotes"
    check = project.cli("check")
    assert check.returncode == 2 and check.stderr.startswith(expected), check.stderr
    result = project.doit()
    assert result.returncode == 2 and result.stderr.startswith(expected), result.stderr
    no_traceback(result)
    assert not (tmp_path / "pwned").exists()


def test_a_value_with_a_line_break_in_a_shell_comment_runs_nothing(project, tmp_path):
    project.edit("templates/build/app.sh.j2", "ccache clang", "# note: {{ vars.note }}\nccache clang")
    project.update_recipe("app", vars={"message": "hi", "note": f"hi\ntouch {tmp_path}/pwned #"})
    result = project.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "pwned").exists()
    assert project.read("build/work/app-x86_64/build.sh").splitlines()[2] == f"# note: $'hi\\ntouch {tmp_path}/pwned #'"


# --- bad files and folders (defect 8) ------------------------------------------------------

BAD_PROJECTS = {
    "recipe-is-a-folder": (lambda p: p.path("recipes/zzz.toml").mkdir(), "mlbuild: recipes/zzz.toml: cannot read: a folder, not a file", 2),
    "recipe-dangling-link": (lambda p: p.path("recipes/zzz.toml").symlink_to("/nonexistent/zzz.toml"),
                             "mlbuild: recipes/zzz.toml: cannot read: a dangling symbolic link", 2),
    "template-divides-by-zero": (lambda p: p.edit("templates/build/app.sh.j2", "mkdir", "echo {{ 1 // 0 }}\nmkdir"),
                                 "mlbuild: templates/build/app.sh.j2:5: ZeroDivisionError: integer division or modulo by zero", 2),
    "pyproject-binary": (lambda p: p.path("pyproject.toml").write_bytes(b"\xff\xfe\x00garbage"),
                         "mlbuild: pyproject.toml: not UTF-8 text (byte 0)", 2),
    "pyproject-tool-not-a-table": (lambda p: p.write("pyproject.toml", 'tool = "x"\n'),
                                   "mlbuild: pyproject.toml: tool.mlbuild: expected a table ([tool.mlbuild])", 2),
    "strict-boolean": (lambda p: p.update_recipe("app", target="yes"),
                       "mlbuild: recipes/app.toml: target: Input should be a valid boolean, got 'yes'", 2),
    "union-member-names": (lambda p: p.update_recipe("app", vars={"message": {"a": 1}}),
                           "mlbuild: recipes/app.toml: vars.message: expected a string, an integer, a boolean or a list of strings, got {'a': 1}", 2),
}


@pytest.mark.parametrize("case", BAD_PROJECTS, ids=list(BAD_PROJECTS))
@pytest.mark.slow
def test_a_bad_file_is_one_line_for_doit_list_doit_and_check(project, case):
    change, message, status = BAD_PROJECTS[case]
    change(project)
    # doit itself reads pyproject.toml (for [tool.doit]) before mlbuild is loaded: its errors there are doit's.
    runs = [project.cli("check")] if case.startswith("pyproject") else [project.doit("list"), project.doit(), project.cli("check")]
    for result in runs:
        assert result.returncode == status, result.stdout + result.stderr
        assert result.stderr.splitlines() == [message], result.stderr
        no_traceback(result)


def test_build_being_a_file_is_one_line(project):
    project.write("build", "oops")
    result = project.doit("list")
    assert result.returncode != 0
    assert result.stderr.splitlines() == [f"mlbuild: {project.path('build')}: expected the build folder, found a file; move it away and run again"]


def test_a_lock_that_is_a_folder_heals_when_empty_and_is_one_line_otherwise(built):
    built.update_recipe("app", vars={"message": "lock"})
    lock = built.path("build/.lock")
    lock.unlink()
    lock.mkdir()
    (lock / "something").write_text("x")
    result = built.doit()
    no_traceback(result)
    assert result.returncode != 0
    assert f"build:app-x86_64: {lock}: is a folder where a file was expected" in result.stdout
    (lock / "something").unlink()
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert lock.is_file()


# --- configuration keys (weak spot) --------------------------------------------------------

def test_an_unknown_key_on_the_command_line_or_in_the_environment_is_refused_with_a_suggestion(project):
    result = project.doit("list", "arch=arm64")
    assert result.returncode == 2
    line, = result.stderr.splitlines()
    assert line.startswith("mlbuild: command line: arch=: unknown configuration key (did you mean 'arches'?); known keys: ")
    assert "arches, boot, boot_timeout" in line
    result = project.doit("list", env={"MLBUILD_ARCH": "arm64"})
    assert result.returncode == 2
    assert result.stderr.startswith("mlbuild: environment: MLBUILD_ARCH: unknown configuration key (did you mean 'arches'?)")
    assert project.doit("list", env={"MLBUILD_LOCK_WAIT": "0"}).returncode == 0


# --- faults of the machine: full and read-only disks --------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_output_disk_is_one_line_naming_the_path_and_free_space_then_heals(built, small_disk):
    built.write("pyproject.toml", built.read("pyproject.toml") + f'target_dir = "{small_disk}/target"\n')
    built.edit("templates/build/app.sh.j2", 'cp app "$OUT/bin/app"', 'cp app "$OUT/bin/app"\nhead -c 3000000 /dev/zero > "$OUT/bin/big"')
    result = built.doit()
    no_traceback(result)
    assert result.returncode != 0
    failure = [line for line in result.stdout.splitlines() if "no space left on the device" in line]
    assert len(failure) == 1 and str(small_disk) in failure[0] and "free)" in failure[0], result.stdout
    built.edit("templates/build/app.sh.j2", 'head -c 3000000 /dev/zero > "$OUT/bin/big"', "true")
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert_stamps_valid(built)


def test_a_read_only_target_folder_is_one_line_and_the_next_run_heals(built, small_disk):
    built.write("pyproject.toml", built.read("pyproject.toml") + f'target_dir = "{small_disk}/target"\n')
    (small_disk / "target").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = built.doit()
    no_traceback(result)
    assert result.returncode != 0
    assert [line for line in result.stdout.splitlines() if "the file system is read-only" in line and str(small_disk) in line]
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert_stamps_valid(built)


# --- host tools (weak spot) ---------------------------------------------------------------------

def test_a_missing_host_tool_is_named_before_any_build_starts(built):
    built.update_recipe("app", tools=["make", "mlbuild-absent-tool"], vars={"message": "tools"})
    result = built.doit()
    no_traceback(result)
    assert result.returncode != 0
    assert ("host tools missing before the build starts: mlbuild-absent-tool (package ?; needed by build:app-x86_64)"
            in result.stdout), result.stdout
    assert not built.path("build/logs/build_app-x86_64.log").read_text().count("tools")  # the script never ran


# --- interrupts and the lock (defect 9, weak spots) ----------------------------------------------

@pytest.fixture
def slow(built, tmp_path):
    gate = tmp_path / "gate"
    built.write("templates/build/app.sh.j2", SLOW_APP_SH)
    built.update_recipe("app", vars={"message": "after the wait", "gate": str(gate)})
    built.gate = gate
    return built


def _script_pid(project) -> int | None:
    try:
        match = re.search(r"^started (\d+)$", project.read("build/logs/build_app-x86_64.log"), re.M)
    except FileNotFoundError:
        return None
    return int(match.group(1)) if match else None


def test_ctrl_c_under_doit_n_2_stops_the_build_scripts_and_says_so_in_one_line(slow):
    run = slow.doit_background("-n", "2", "build")
    try:
        script = wait_for(lambda: _script_pid(slow), what="the slow script to start")
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
        slow.gate.touch()
    assert run.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == "interrupted: build:app-x86_64 stopped; rerun resumes", stderr
    assert not process_alive(script), "the build script outlived doit"
    result = slow.doit()
    assert result.returncode == 0 and x86("app") <= result.executed


@pytest.mark.slow
def test_after_sigkill_the_next_run_stops_the_leftover_and_says_so(slow):
    first = slow.doit_background()
    try:
        leftover = wait_for(lambda: _script_pid(slow), what="the slow script to start")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        assert process_alive(leftover)
        rerun = slow.doit_background()
        wait_for(lambda: not process_alive(leftover), timeout=120, what="the leftover to be stopped")
        slow.gate.touch()
        stdout, stderr = rerun.communicate(timeout=60)
    finally:
        slow.gate.touch()
    assert rerun.returncode == 0, stdout + stderr
    assert f"mlbuild: stopped build:app-x86_64, left running by an earlier run (pid {first.pid}) that was killed" in stderr


@pytest.mark.slow
def test_a_run_that_waited_for_the_lock_does_not_rebuild_what_the_first_run_just_built(slow):
    import threading

    first = slow.doit_background("build:app-x86_64")
    second = None
    second_err: list[str] = []
    try:
        wait_for(lambda: _script_pid(slow), what="the slow script to start")
        second = slow.doit_background("build:app-x86_64")
        reader = threading.Thread(target=lambda: second_err.extend(second.stderr), daemon=True)
        reader.start()
        # The second run decided app is not up to date (no stamp while it builds) and waits on the lock.
        wait_for(lambda: any("waiting for the build running in this tree" in line for line in second_err),
                 timeout=60, what="the second run to wait on the lock")
        slow.gate.touch()
        first_out, first_err = first.communicate(timeout=60)
        second_out = second.stdout.read()
        second.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        slow.gate.touch()
        for process in (first, second):
            if process and process.poll() is None:
                process.kill()
    assert first.returncode == 0, first_out + first_err
    assert second.returncode == 0, second_out + "".join(second_err)
    assert f"mlbuild: build:app-x86_64 was built by the run this one waited for (pid {first.pid}): nothing to do" in second_out
    ran_by = [p.name for p in slow.path("build/out/app-x86_64").iterdir() if p.name.startswith("ran-by-")]
    assert len(ran_by) == 1  # built once


def test_a_user_fragment_that_is_not_text_is_one_line_naming_it(project):
    project.path("fragments").mkdir()
    project.path("fragments/app.config").write_bytes(b"\xff\xfe\x00binary")
    result = project.doit("list")
    no_traceback(result)
    assert result.returncode != 0
    assert result.stderr.splitlines() == ["mlbuild: fragments/app.config: not UTF-8 text (byte 0)"]


def test_the_mlbuild_command_reports_a_file_system_error_in_one_line(project):
    result = project.cli("graph", "-o", "/proc/mlbuild-graph.dot")
    no_traceback(result)
    assert result.returncode == 1
    line, = result.stderr.splitlines()
    assert line.startswith("mlbuild: graph: /proc/mlbuild-graph.dot: "), line
