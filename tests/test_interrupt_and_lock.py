"""A build killed half-way, and two builds in one tree at the same time."""

import re
import signal
import subprocess

import pytest

from conftest import ALL_TASKS, SLOW_APP_SH, after_settings_line, assert_stamps_valid, parse_tasks, process_alive, wait_for, x86

APP_LOG = "build/logs/build_app-x86_64.log"


@pytest.fixture
def slow(built, tmp_path):
    """The built project, with app changed to a script that waits for the file `gate` (not there yet)."""
    gate = tmp_path / "gate"
    built.write("templates/build/app.sh.j2", SLOW_APP_SH)
    built.update_recipe("app", vars={"message": "after the wait", "gate": str(gate)})
    built.gate = gate
    return built


def started_pid(project, other_than: int | None = None) -> int | None:
    """The pid the slow script printed in the current log, if it started (and is not other_than)."""
    try:
        match = re.search(r"^started (\d+)$", project.read(APP_LOG), re.M)
    except FileNotFoundError:
        return None
    if match and int(match.group(1)) != other_than:
        return int(match.group(1))
    return None


def test_sigkill_during_a_build_then_rerun_rebuilds_the_killed_task_and_dependents_and_ends_correct(slow):
    first = slow.doit_background()
    rerun = leftover = None
    try:
        leftover = wait_for(lambda: started_pid(slow), what="the slow script to start")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)

        # The killed task has no stamp: it is "not built", whatever its output folder holds.
        assert not slow.stamp("build:app-x86_64").exists()
        assert slow.path("build/out/.app-x86_64.staging").is_dir()
        assert process_alive(leftover), "the script outlives doit (own session): the rerun must stop it"

        rerun = slow.doit_background()
        # Open the gate only once the rerun's own script runs: a leftover still alive would
        # then write into the new staging folder too.
        wait_for(lambda: started_pid(slow, other_than=leftover), what="the rerun's script to start")
        assert not process_alive(leftover)
        slow.gate.touch()
        stdout, stderr = rerun.communicate(timeout=60)
    finally:
        for process in (first, rerun):
            if process and process.poll() is None:
                process.kill()
        if leftover and process_alive(leftover):
            slow.gate.touch()  # lets it end by itself if the engine failed to stop it

    assert rerun.returncode == 0, stdout + stderr
    executed, _ = parse_tasks(stdout)
    assert executed == x86("app", "target", "images")
    assert slow.run_binary("app") == "after the wait\n"
    ran_by = [p.name for p in slow.path("build/out/app-x86_64").iterdir() if p.name.startswith("ran-by-")]
    assert ran_by == [f"ran-by-{started_pid(slow)}"], "only the rerun's script wrote the output"
    assert slow.leftovers() == []
    assert not slow.path("build/work/app-x86_64/.pgid").exists()
    assert_stamps_valid(slow)
    again = slow.doit()
    assert again.executed == set() and again.up_to_date == ALL_TASKS


@pytest.mark.slow
def test_a_second_doit_during_a_build_fails_naming_the_lock_while_list_and_explain_still_work(slow):
    first = slow.doit_background()
    try:
        wait_for(lambda: started_pid(slow), what="the slow script to start")

        try:
            second = slow.doit(env={"MLBUILD_LOCK_WAIT": "0"}, timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("the second doit waited for the lock although MLBUILD_LOCK_WAIT=0")
        assert second.returncode != 0
        assert second.executed == x86("app")  # it tried, and stopped at the lock
        output = second.stdout + second.stderr
        assert f"build/.lock: another build is running in this tree (pid {first.pid})" in output

        listing = slow.doit("list", "--all")
        assert listing.returncode == 0, listing.stderr
        assert "build:app-x86_64" in listing.stdout.split()

        explain = slow.cli("explain", "build:app-x86_64")
        assert explain.returncode == 0, explain.stderr
        assert after_settings_line(explain.stdout).startswith("build:app-x86_64 would run:")

        slow.gate.touch()
        stdout, stderr = first.communicate(timeout=60)
    finally:
        slow.gate.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stdout + stderr
    assert parse_tasks(stdout)[0] == x86("app", "target", "images")
    assert slow.doit().executed == set()


def test_doit_clean_during_a_build_cannot_leave_an_incomplete_target(slow):
    first = slow.doit_background()
    try:
        wait_for(lambda: started_pid(slow), what="the slow script to start")
        clean = slow.doit("clean", "build:hello-x86_64", env={"MLBUILD_LOCK_WAIT": "0"}, timeout=60)
        slow.gate.touch()
        stdout, stderr = first.communicate(timeout=120)
    finally:
        slow.gate.touch()
        if first.poll() is None:
            first.kill()
    # The clean is refused in one line while the build holds the tree: it removed nothing.
    said = clean.stdout + clean.stderr
    assert clean.returncode != 0, said
    assert "lock" in said and "Traceback" not in said, said
    assert first.returncode == 0, stdout + stderr
    # The build finished undisturbed: every task stamped and up to date, its outputs what the stamps say.
    assert_stamps_valid(slow)
    assert slow.path("target/x86_64/bin/hello").exists()
    assert slow.doit().executed == set()


def test_a_build_scripts_group_is_named_in_its_work_folder_before_the_script_runs_at_all(tmp_path):
    """A run killed right after its build script started must leave a .pgid the next run finds (processes.py):
    the group's first step writes it, so even the script's first command sees it."""
    from mlbuild.processes import run_in_group

    work = tmp_path / "work"
    work.mkdir()
    with open(tmp_path / "log", "wb") as log:
        status = run_in_group(["/bin/sh", "-c", 'cat .pgid > seen; echo "$$ $(ps -o pgid= -p $$)" > me'],
                              "build:demo-x86_64", work, None, log, work / ".pgid")
    assert status == 0, (tmp_path / "log").read_text()
    pid, pgid = (work / "me").read_text().split()
    assert (work / "seen").read_text() == f"{pgid} build:demo-x86_64\n" and pid == pgid
    assert not (work / ".pgid").exists()  # removed once the group has ended
