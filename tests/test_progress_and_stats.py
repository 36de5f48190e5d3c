"""Seeing the build: progress in a pipe, the summary, statistics and the critical path, logs per run, sizes, the graph."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from conftest import ALL_TASKS, SLOW_APP_SH, after_settings_line, wait_for, x86

from mlbuild.reporting import stats, stats_report
from mlbuild.reporting.progress import duration

REPO = Path(__file__).resolve().parents[1]

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
SUMMARY = re.compile(r"^mlbuild: (?P<counts>.+?); wall [^,]+(?:, floor [^,]+ \(\d+ %\))?, CPU [^,]+"
                     r"(?:, ccache (\d+) hits / (\d+) misses \(\d+ %\))?$")
COUNT = re.compile(r"^(\d+) (fetched|built|restored|ran|up to date|failed|interrupted|not run \(a dependency failed\))$")
SUMMARY_ORDER = ["fetched", "built", "restored", "ran", "up to date", "failed", "interrupted", "not run (a dependency failed)"]


def summary(stdout: str) -> dict[str, int]:
    """{what: how many} from the summary line, which names only what is not zero, in SUMMARY_ORDER."""
    lines = [line for line in stdout.splitlines() if re.match(r"^mlbuild: (\d+ |no task)", line)]
    assert len(lines) == 1, stdout
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    counts = {}
    for part in match["counts"].split(", "):
        count = COUNT.match(part)
        assert count and int(count[1]) > 0, lines[0]
        counts[count[2]] = int(count[1])
    assert list(counts) == [what for what in SUMMARY_ORDER if what in counts], lines[0]
    return counts


def newest_run(project) -> dict:
    runs = sorted(project.path("build/stats/runs").glob("*.json"))
    return json.loads(runs[-1].read_text())


# --- progress in a pipe ---------------------------------------------------------------------

def test_progress_in_a_pipe_is_plain_lines_rate_limited_with_the_inner_step_counter_and_an_eta(built, tmp_path):
    gate = tmp_path / "gate"
    # A long task: prints a ninja-like step counter (with colour codes), then waits for the gate.
    built.write("templates/build/app.sh.j2", 'printf "\\033[32m[3/10] Building C object app.o\\033[0m\\n"\n' + SLOW_APP_SH)
    built.update_recipe("app", vars={"message": "after the wait", "gate": str(gate)})
    # Its history: half a second with the job budget's 2 tasks at once (the first build's own time, beside
    # the other tasks on a loaded machine, may be longer).
    durations = json.loads(built.read("build/stats/durations.json"))
    durations["build:app-x86_64"] = {"duration": 0.5, "parallel": 2}
    built.write("build/stats/durations.json", json.dumps(durations))
    started = time.monotonic()
    process = built.doit_background(env={"MLBUILD_PROGRESS_INTERVAL": "1"}, verbose=False)
    wait_for(lambda: "started" in built.path("build/logs/build_app-x86_64.log").read_text()
             if built.path("build/logs/build_app-x86_64.log").exists() else False, what="the slow script")
    time.sleep(3.5)
    gate.touch()
    stdout, stderr = process.communicate(timeout=60)
    elapsed = time.monotonic() - started
    assert process.returncode == 0, stdout + stderr

    assert not CONTROL.search(stdout.replace("\n", "")), [line for line in stdout.splitlines() if CONTROL.search(line)]
    lines = stdout.splitlines()
    # One line as the task ends (none as it starts, none for the up-to-date ones), progress lines before it.
    end = next((i for i, line in enumerate(lines) if line.startswith("built build:app-x86_64 ")), None)
    assert end is not None, stdout
    assert not [line for line in lines if line.startswith((".  ", "-- "))]
    progress = [line for line in lines[:end] if line.startswith("progress ")]
    # At most one progress line per interval (1 s here), and some while the task waited 3.5 s.
    assert 2 <= len(progress) <= elapsed / 1 + 1, progress
    for line in progress:
        # done/total, the running task with its elapsed time and its step counter, an ETA:
        # app took well under a second in the first build, so it is past its usual time: no "ETA 0.0 s",
        # but a lower bound (target and images still to come) or none.
        assert re.match(r"^progress \[\d+/7\] 1 running, ETA (≥ [0-9.]+ s|unknown) \(build:app-x86_64 past its usual [0-9.]+ s\): "
                        r"build:app-x86_64 [0-9.]+ s \[3/10\]$", line), line


def test_progress_interval_of_thirty_seconds_prints_no_progress_line_in_a_short_build(built):
    built.update_recipe("hello", vars={"greeting": "Howdy"})
    result = built.doit()
    assert result.returncode == 0, result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("progress ")]
    # verbose (as the tests' doit runs by default): one line as each task starts and one as it ends
    assert len([line for line in result.stdout.splitlines() if line.startswith(".  ")]) == 4
    assert len([line for line in result.stdout.splitlines() if line.startswith("ok ")]) == 4


# --- quiet by default: one line per task that ran, nothing for the up-to-date ones ------------------------

LINE = re.compile(r"^(fetched|built|restored) (\S+) [0-9.]+ s(?: \((\S+)\))? \[\d+/(\d+)\]$")


def ended(stdout: str) -> dict[str, tuple[str, str | None]]:
    """{task: (what happened, the cache it came from)} from the lines of tasks that ended."""
    found = {}
    for line in stdout.splitlines():
        if match := LINE.match(line):
            assert match[2] not in found, stdout
            found[match[2]] = (match[1], match[3])
    return found


def test_a_small_build_prints_a_line_per_task_that_ran_and_a_no_op_only_the_summary(project):
    first = project.doit(verbose=False)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert ended(first.stdout) == {"fetch:hello": ("fetched", None), "fetch:app": ("fetched", None),
                                   **{name: ("built", None) for name in x86("hello", "extra", "app", "target", "images")}}
    # the settings that differ from the defaults (the test project sets some), a line per download (where
    # from, how much), seven task lines, then the summary (counts, the slowest tasks, where the statistics
    # are): nothing else
    assert lines[0].startswith("settings: ")
    downloads = [line for line in lines if re.match(r"^mlbuild: fetch:(hello|app): got \S+ from file://", line)]
    assert len(downloads) == 2 and len(lines) == 13, first.stdout
    assert [line.split(":")[0] for line in lines[-3:]] == ["mlbuild", "slowest", "stats"]
    assert summary(first.stdout) == {"fetched": 2, "built": 5}
    assert first.stderr == ""

    nothing = project.doit(verbose=False)
    assert nothing.returncode == 0
    assert re.fullmatch(r"settings: [^\n]+\nmlbuild: 7 up to date; wall [0-9.]+ s, CPU [0-9.]+ s\n", nothing.stdout), nothing.stdout
    assert nothing.stderr == ""

    # -v 2 (doit's "print everything") and the verbose key: today's detail, a line per up-to-date task
    for detail in (project.doit("-v", "2", verbose=False), project.doit(env={"MLBUILD_VERBOSE": "1"}, verbose=False)):
        assert detail.up_to_date == ALL_TASKS and len(detail.stdout.splitlines()) == 9, detail.stdout


@pytest.mark.slow
def test_a_restore_is_one_line_naming_the_cache_and_a_fresh_tree_takes_its_eta_from_the_caches_manifests(project, tmp_path):
    cache = tmp_path / "artifacts"
    project.edit("pyproject.toml", "cache = []", f'cache = ["{cache.as_uri()}"]')
    project.write("templates/build/app.sh.j2", "sleep 3\n" + project.read("templates/build/app.sh.j2"))
    assert project.doit(verbose=False).returncode == 0  # built and pushed: app's manifest says about 3 s

    # A fresh tree (no build/, so no history of its own) against that cache; app changed, so it builds.
    shutil.rmtree(project.path("build"))
    shutil.rmtree(project.path("target"))
    project.update_recipe("app", vars={"message": "changed"})
    result = project.doit(env={"MLBUILD_PROGRESS_INTERVAL": "1"}, verbose=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ended(result.stdout) == {"fetch:hello": ("fetched", None), "fetch:app": ("fetched", None),
                                    "build:hello-x86_64": ("restored", cache.as_uri()),
                                    "build:extra-x86_64": ("restored", cache.as_uri()),
                                    **{name: ("built", None) for name in x86("app", "target", "images")}}
    assert ": restored from " not in result.stdout  # one line per restore, not two
    assert summary(result.stdout) == {"fetched": 2, "built": 3, "restored": 2}
    progress = [line for line in result.stdout.splitlines() if line.startswith("progress ") and ": build:app-x86_64 " in line]
    assert progress, result.stdout  # app sleeps 3 s: progress lines every second
    # app's time, and target's and images', from the manifests: an ETA, not "ETA unknown (no earlier run)"
    # (on a loaded machine app may outlast the time its manifest says: then a lower bound, as with history)
    assert not [line for line in progress if "no earlier run" in line], progress
    first = re.match(r"^progress \[\d+/7\] 1 running, ETA ([0-9.]+) s: build:app-x86_64 [0-9.]+ s$", progress[0])
    assert first and 0 < float(first[1]) < 4, progress
    counting = [float(match[1]) for line in progress if (match := re.search(r"ETA ([0-9.]+) s:", line))]
    assert counting == sorted(counting, reverse=True), progress  # counting down


def test_a_fresh_tree_foresees_its_whole_chain_of_restores_from_the_caches_entries(project, tmp_path):
    """The reporter's ETA before any task ran, in a fresh clone against a warm cache: every task is a restore
    (each entry's output hash gives its dependents' inputs), not the build times of the manifests."""
    from types import SimpleNamespace

    from mlbuild.frontend.project import Project
    from mlbuild.reporting.progress import reporter_for

    cache = tmp_path / "artifacts"
    project.edit("pyproject.toml", "cache = []", f'cache = ["{cache.as_uri()}"]')
    project.write("templates/build/hello.sh.j2", "sleep 3\n" + project.read("templates/build/hello.sh.j2"))
    assert project.doit().returncode == 0  # built and pushed: hello's manifest says 3 s and more

    def eta_before_the_first_task(command_line=None) -> float:
        loaded = Project(project.root, command_line, environ={})
        reporter = reporter_for(loaded)(io.StringIO(), {})
        tasks = {name: SimpleNamespace(task_dep=step.deps, actions=[None]) for name, step in loaded.steps.items()}
        reporter.initialize(tasks, ["build:images-x86_64"])
        reporter._load_history()
        seconds, unknown, overdue = reporter.eta()
        assert unknown == 2 and not overdue  # the two fetches: not in the artifact cache, no history
        return seconds

    shutil.rmtree(project.path("build"))  # a fresh clone: no history, no stamps
    shutil.rmtree(project.path("target"))
    restores = eta_before_the_first_task()
    assert restores < 2, restores  # five restores of a few kB: about 0.2 s each, two at a time
    # rebuild= builds hello though the cache holds it: a build's time (its manifest's 3 s), not a restore's
    assert eta_before_the_first_task({"rebuild": "build:hello-x86_64"}) > 3
    # hello changed: no entry for its new inputs, so it is a build (its manifest's time, 3 s and more), and
    # so are app, target and images after it (their inputs are not known before hello's output)
    project.update_recipe("hello", vars={"greeting": "changed"})
    assert eta_before_the_first_task() > 3


def test_a_task_past_its_usual_time_makes_the_eta_a_lower_bound_never_zero(built, tmp_path):
    gate = tmp_path / "gate"
    built.write("templates/build/app.sh.j2", SLOW_APP_SH)
    built.update_recipe("app", vars={"message": "later", "gate": str(gate)})
    durations = json.loads(built.read("build/stats/durations.json"))
    # Its history: 2 s with 2 tasks at once, as this run has them (the job budget of the test project).
    durations["build:app-x86_64"] = {"duration": 2.0, "parallel": 2}
    built.write("build/stats/durations.json", json.dumps(durations))
    process = built.doit_background(env={"MLBUILD_PROGRESS_INTERVAL": "1"}, verbose=False)
    wait_for(lambda: built.path("build/logs/build_app-x86_64.log").exists()
             and "started" in built.path("build/logs/build_app-x86_64.log").read_text(), what="the slow script")
    time.sleep(4.5)
    gate.touch()
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stdout + stderr
    progress = [line for line in stdout.splitlines() if line.startswith("progress ") and ": build:app-x86_64 " in line]
    counting = [line for line in progress if re.match(r"^progress \S+ 1 running, ETA [0-9.]+ s: ", line)]
    overdue = [line for line in progress if re.match(r"^progress \S+ 1 running, ETA (≥ [0-9.]+ s|unknown) "
                                                     r"\(build:app-x86_64 past its usual 2\.0 s\): ", line)]
    assert counting and overdue and len(counting) + len(overdue) == len(progress), progress
    assert progress.index(overdue[0]) > progress.index(counting[-1])  # first its history, then a lower bound
    assert not [line for line in progress if "ETA 0.0 s" in line], progress


def run_on_a_terminal(project, *args: str, env: dict) -> bytes:
    """doit ARGS in the project with a pseudo-terminal as its stdin, stdout and stderr; what it wrote there."""
    import os
    import pty
    import select
    import subprocess
    import sys

    from conftest import base_environment

    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project.root, stdin=slave, stdout=slave, stderr=slave,
                               env=base_environment({"TERM": "xterm", "COLUMNS": "120", "LINES": "40", **env}))
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                output += os.read(master, 65536)
            except OSError:
                break
        elif process.poll() is not None:
            break
    assert process.wait(timeout=60) == 0, output.decode(errors="replace")
    os.close(master)
    os.close(slave)
    return output


def test_the_live_panel_never_shows_a_task_that_has_ended(built):
    # hello takes a second: the panel is drawn a few times while it runs
    built.write("templates/build/hello.sh.j2", "sleep 1.5\n" + built.read("templates/build/hello.sh.j2"))
    output = run_on_a_terminal(built, env={"MLBUILD_PROGRESS": "live"}).decode(errors="replace")
    row = "  build:hello-x86_64  "  # its row in the panel (two spaces either side), not its end line
    end = output.index("built build:hello-x86_64 ")
    assert row in output[:end]  # the panel showed it running
    assert row not in output[end:], output[end:]  # and never again once it ended
    assert "mlbuild: " in output[end:]  # the summary


# --- the summary --------------------------------------------------------------------------------

def test_the_summary_counts_built_and_up_to_date_and_names_the_slowest_tasks(built):
    built.update_recipe("hello", vars={"greeting": "Howdy"})
    result = built.doit()
    assert result.returncode == 0, result.stdout
    assert result.executed == x86("hello", "app", "target", "images")
    assert summary(result.stdout) == {"built": 4, "up to date": 3}
    # ccache's counts of this run: the sum of what the logs of the two compiling tasks say
    logged = [re.search(r"^# ccache: (\d+) hits, (\d+) misses$", built.log(f"build:{name}-x86_64"), re.M) for name in ("hello", "app")]
    hits_misses = re.search(r"ccache (\d+) hits / (\d+) misses", result.stdout)
    assert hits_misses and (int(hits_misses[1]), int(hits_misses[2])) == (sum(int(m[1]) for m in logged), sum(int(m[2]) for m in logged))
    assert int(hits_misses[2]) >= 1  # hello's new greeting is a new compile
    slowest = next(line for line in result.stdout.splitlines() if line.startswith("slowest: "))
    assert len(slowest.split(", ")) == 3 and all(name in x86("hello", "app", "target", "images")
                                                  for name in re.findall(r"(build:\S+) ", slowest))

    # the floor beside the wall time: the run's own (stats.floor), as its file has it; a no-op has none
    best = stats.floor(newest_run(built))
    floor_clause = re.search(r"; wall [^,]+, floor (\S+(?: s)?) \((\d+) %\), CPU ", result.stdout)
    assert floor_clause, result.stdout
    assert floor_clause[1] == duration(best["floor"]) and int(floor_clause[2]) == round(100 * best["efficiency"])
    assert 0 < best["floor"] <= newest_run(built)["wall"]

    nothing = built.doit()
    assert summary(nothing.stdout) == {"up to date": 7}
    assert "slowest" not in nothing.stdout and "floor" not in nothing.stdout


def test_a_failure_in_the_summary_names_the_task_its_kept_log_and_shows_its_last_20_lines(built):
    lines = "".join(f"echo 'line {n}'\n" for n in range(1, 31))
    built.edit("templates/build/hello.sh.j2", "mkdir", lines + "printf '\\033[31mboom\\033[0m\\n' >&2\nexit 3\nmkdir")
    result = built.doit()
    assert result.returncode != 0
    # doit stops at the failure: the up-to-date tasks are those it looked at before (2 or 3, in its order)
    up_to_date = result.stdout.count("\n-- ") + result.stdout.startswith("-- ")
    assert summary(result.stdout) == ({"up to date": up_to_date} if up_to_date else {}) | {"failed": 1}
    out = result.stdout.splitlines()
    failed = next(i for i, line in enumerate(out) if line.startswith("failed: build:hello-x86_64; log "))
    log = re.match(r"failed: build:hello-x86_64; log (\S+); its last 20 lines:$", out[failed])[1]
    assert re.fullmatch(r"build/logs/runs/[0-9]{8}-[0-9]{6}-[0-9]+/build_hello-x86_64\.log", log), log
    tail = built.path(log).read_text().splitlines()[-20:]
    assert out[failed + 1:failed + 21] == ["  | " + CONTROL.sub("", line.replace("\x1b[31m", "").replace("\x1b[0m", "")) for line in tail]
    assert "  | line 30" in out and "  | boom" in out  # the colour codes are gone
    assert "\x1b" not in result.stdout
    assert newest_run(built)["outcome"] == "failed"


# --- statistics -----------------------------------------------------------------------------------

def test_each_run_records_start_end_cpu_ccache_and_output_size_of_every_task_it_ran(built):
    run = newest_run(built)  # the first build, of the copied project
    records = {record["task"]: record for record in run["tasks"]}
    assert set(records) == ALL_TASKS and run["up_to_date"] == []
    for name, record in records.items():
        assert record["outcome"] == "built"
        assert record["start"] <= record["end"] and abs(record["duration"] - (record["end"] - record["start"])) < 0.01
        assert record["cpu"] >= 0
        # sizes of outputs, not of unpacked sources (walking a kernel tree would cost seconds)
        assert (record["output_bytes"] > 0) if name.startswith("build:") else ("output_bytes" not in record)
    for name in x86("hello", "extra", "app"):
        assert (records[name]["ccache_hits"], records[name]["ccache_misses"]) == (0, 1)
        assert 1000 < records[name]["peak_rss_kb"] < 10_000_000  # clang's, in kB: more than 1 MB, less than 10 GB
        assert records[name]["cpu"] > 0  # clang ran in the script's processes
        assert records[name]["output_bytes"] == built.path(f"build/out/{name[6:]}/bin/{name[6:].split('-')[0]}").stat().st_size
    assert records["build:app-x86_64"]["deps"] == ["build:hello-x86_64", "fetch:app"]
    # an earlier task that it needs ended before it started
    assert records["build:hello-x86_64"]["end"] <= records["build:app-x86_64"]["start"]

    table = built.cli("stats")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line.split() and line.split()[0] in ALL_TASKS}
    assert set(rows) == ALL_TASKS
    assert rows["build:app-x86_64"].split()[1] == "built"
    # peak RSS and output size in powers of 1024, named as such (app's output: a few KiB; clang's RSS: MiB)
    assert re.search(r" \d+\.\d MiB ", rows["build:app-x86_64"]) and re.search(r" \d+\.\d KiB", rows["build:app-x86_64"])
    assert not {"kB", "MB", "GB"} & set(table.stdout.split())
    assert "critical path" in table.stdout


def test_the_plot_is_an_svg_timeline_naming_each_task_and_outlining_the_critical_path(built):
    result = built.cli("stats", "--plot")
    assert result.returncode == 0, result.stderr
    path = built.path(result.stdout.split()[-1])
    root = ElementTree.parse(path).getroot()  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = "".join(root.itertext())
    for name in ALL_TASKS:
        assert name in text
    assert "#d62728" in path.read_text()  # the critical path's outline


def test_stats_without_a_recorded_run_is_one_line(project):
    result = project.cli("stats")
    assert result.returncode != 0
    assert result.stderr.startswith("mlbuild: stats: no recorded run yet") and result.stderr.count("\n") == 1


# --- the critical path on a graph with known durations ------------------------------------------------------

#   a(3) -> b(2) -> d(4)
#   a(3) -> c(6) -> d(4)        e(1) alone
DURATIONS = {"a": 3.0, "b": 2.0, "c": 6.0, "d": 4.0, "e": 1.0}
DEPS = {"b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}
ORDER = ["a", "e", "b", "c", "d"]


def test_the_critical_path_is_the_longest_chain_and_each_task_on_it_shrinks_the_build_by_hand_computed_amounts():
    assert stats.critical_path(DURATIONS, DEPS) == ["a", "c", "d"]  # 3 + 6 + 4 = 13 (a-b-d is 9)
    # As many slots as needed, and with two: a and e start at 0, b and c at 3, d at 9, end at 13.
    for slots in (None, 2):
        assert stats.schedule(DURATIONS, DEPS, ORDER, slots) == 13
        assert stats.shrink_if_free(DURATIONS, DEPS, ORDER, slots, ["b", "e"]) == {"b": 0, "e": 0}
    # Unlimited: a free: c ends at 6, d at 10 (-3); c free: b ends at 5, d at 9 (-4); d free: ends at 9 (-4).
    assert stats.shrink_if_free(DURATIONS, DEPS, ORDER, None) == {"a": 3, "c": 4, "d": 4}
    # Two slots: a free, b starts at 0 beside e, c only when e ends at 1: c ends at 7, d at 11 (-2).
    assert stats.shrink_if_free(DURATIONS, DEPS, ORDER, 2) == {"a": 2, "c": 4, "d": 4}
    # One slot: everything in a row (16 s), so every task shrinks it by its own duration.
    assert stats.schedule(DURATIONS, DEPS, ORDER, 1) == 16
    assert stats.shrink_if_free(DURATIONS, DEPS, ORDER, 1, ORDER) == DURATIONS


# --- the floor and the efficiency on synthetic runs ----------------------------------------------------------

def synthetic_run(tasks: list[tuple[str, float, float, float, list[str]]], wall: float, cpu: float, jobs: int = 2,
                  parallel: int = 2) -> dict:
    """A run file's content: tasks as (name, start, end, CPU seconds, deps), times from 1000 s."""
    return {"run": "20261207-120000-1", "started": 1000.0, "wall": wall, "cpu": cpu, "jobs": jobs, "parallel": parallel,
            "outcome": "ok", "up_to_date": [], "skipped": [],
            "tasks": [{"task": name, "deps": deps, "start": 1000 + start, "end": 1000 + end, "duration": end - start,
                       "cpu": task_cpu, "outcome": "built"} for name, start, end, task_cpu, deps in tasks]}


def test_the_floor_of_a_chain_of_three_tasks_is_their_wall_time_alone():
    # a 0-2 s, b 2-5 s, c 5-6 s, one after the other; the run's 0.5 s before its first task is not work.
    run = synthetic_run([("a", 0, 2, 3.0, []), ("b", 2, 5, 1.0, ["a"]), ("c", 5, 6, 2.0, ["b"])], wall=6.5, cpu=6.5)
    assert stats.alone_times(run["tasks"]) == {"a": 2, "b": 3, "c": 1}  # touching tasks do not overlap
    # each alone throughout: max(cpu ÷ 2, wall alone) = its wall time (a: max(1.5, 2))
    assert stats.cpu_bound_times(run["tasks"], 2) == {"a": 2, "b": 3, "c": 1}
    best = stats.floor(run)
    assert best["path"] == ["a", "b", "c"] and best["path_seconds"] == 6 and best["cpu_seconds"] == 3.25
    assert best["floor"] == 6 and round(100 * best["efficiency"]) == 92  # 6 ÷ 6.5
    # one slot would have done: the second is idle throughout
    assert stats.idle_spans(run["tasks"], stats_report.job_slots(run["tasks"]), 2) == {0: [], 1: [(1000, 1006)]}


def test_the_floor_of_a_diamond_is_its_cpu_over_jobs_when_that_is_larger_than_its_critical_path():
    #   a 0-2 -> b 2-8 (10 s CPU) -> d 8-10
    #   a 0-2 -> c 2-5 ( 3 s CPU) -> d
    run = synthetic_run([("a", 0, 2, 2.0, []), ("b", 2, 8, 10.0, ["a"]), ("c", 2, 5, 3.0, ["a"]), ("d", 8, 10, 4.0, ["b", "c"])],
                        wall=10, cpu=19)
    assert stats.alone_times(run["tasks"]) == {"a": 2, "b": 3, "c": 0, "d": 2}  # b alone from 5 to 8
    # b: max(10 ÷ 2, 3) = 5; c: max(3 ÷ 2, 0) = 1.5 (it shared the machine throughout)
    assert stats.cpu_bound_times(run["tasks"], 2) == {"a": 2, "b": 5, "c": 1.5, "d": 2}
    best = stats.floor(run)
    assert best["path"] == ["a", "b", "d"] and best["path_seconds"] == 9  # a-c-d: 5.5
    assert best["cpu_seconds"] == 9.5 and best["floor"] == 9.5 and best["efficiency"] == 0.95
    # with 4 jobs the chain sets the floor: b: max(2.5, 3) = 3, so a-b-d = 7 > 19 ÷ 4
    assert stats.floor({**run, "jobs": 4})["floor"] == 7
    slots = stats_report.job_slots(run["tasks"])
    assert slots == {"a": 0, "b": 0, "c": 1, "d": 0}
    assert stats.idle_spans(run["tasks"], slots, 2) == {0: [], 1: [(1000, 1002), (1005, 1010)]}


def test_an_idle_gap_lowers_the_efficiency_and_shows_as_idle_slots_in_the_plot(tmp_path):
    # a 0-2 s, nothing from 2 to 5 s, b 5-7 s: the floor is the 4 s of work, the wall 7 s
    run = synthetic_run([("a", 0, 2, 2.0, []), ("b", 5, 7, 2.0, ["a"])], wall=7, cpu=4)
    best = stats.floor(run)
    assert best["floor"] == 4 and best["cpu_seconds"] == 2 and round(100 * best["efficiency"]) == 57
    slots = stats_report.job_slots(run["tasks"])
    assert stats.idle_spans(run["tasks"], slots, 2) == {0: [(1002, 1005)], 1: [(1000, 1007)]}
    lines = stats_report.table(run)
    assert "wall 7.0 s, floor 4.0 s (57 %), CPU 4.0 s" in lines[0]
    assert ("floor 4.0 s: the larger of the CPU-bound critical path (4.0 s, 2 tasks) and CPU ÷ jobs (2.0 s, 2 jobs); "
            "efficiency 57 % (floor ÷ wall)") in lines

    svg = stats_report.plot(run, tmp_path / "run.svg")
    root = ElementTree.parse(svg).getroot()
    groups = {g.get("id"): g for g in root.iter("{http://www.w3.org/2000/svg}g")}
    assert {"idle-1", "idle-2"} <= set(groups)  # both slots were idle at some time
    # slot 1's one idle span (3 s) is one shaded path, slot 2's (7 s, the whole run) another
    assert len(list(groups["idle-1"].iter("{http://www.w3.org/2000/svg}path"))) >= 1
    assert "floor 4.0 s (57 %)" in "".join(root.itertext())


# --- logs per run -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_logs_are_kept_per_run_with_a_latest_link_and_pruned_to_the_last_n_runs(built):
    first_runs = sorted(p.name for p in built.path("build/logs/runs").iterdir())
    assert len(first_runs) == 1
    for greeting in ("one", "two", "three"):
        built.update_recipe("hello", vars={"greeting": greeting})
        assert built.doit("log_runs=2").returncode == 0
        time.sleep(1.1)  # run ids have a resolution of a second (and the pid)
    runs = sorted(p.name for p in built.path("build/logs/runs").iterdir())
    assert len(runs) == 2 and first_runs[0] not in runs
    latest = built.path("build/logs/latest")
    assert latest.is_symlink() and latest.resolve().name == runs[-1]
    # The stable name is the newest log of the task, whichever run wrote it.
    assert built.path("build/logs/build_hello-x86_64.log").resolve().parent.name == runs[-1]
    assert (latest / "build_hello-x86_64.log").read_text() == built.log("build:hello-x86_64")
    # extra ran only in the pruned first run: its link is gone with it, not left dangling
    assert not built.path("build/logs/build_extra-x86_64.log").is_symlink()
    # a run that executes nothing leaves the logs alone
    assert built.doit("log_runs=2").executed == set()
    assert sorted(p.name for p in built.path("build/logs/runs").iterdir()) == runs


# --- sizes ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_size_report_per_component_with_the_change_since_the_previous_build_and_an_svg(built):
    first = built.cli("size", "x86_64")
    assert first.returncode == 0, first.stderr
    hello_bytes = built.path("target/x86_64/bin/hello").stat().st_size
    # "  hello  15.6 KiB  33.3 %  1  [change]": powers of 1024, named as such
    rows = {line.split()[0]: line.split() for line in first.stdout.splitlines() if line.startswith("  ")}
    assert set(rows) >= {"hello", "extra", "app", "component"}
    assert rows["hello"][5] == "1"  # one file
    assert " ".join(rows["hello"][1:3]) == f"{hello_bytes / 1024:.1f} KiB"
    assert not {"kB", "MB", "GB"} & set(first.stdout.split())

    built.write("templates/build/extra.sh.j2", built.read("templates/build/extra.sh.j2")
                + 'mkdir -p "$OUT/share"\nhead -c 5000 /dev/zero > "$OUT/share/data"\n')
    assert built.doit().executed == x86("extra", "target", "images")
    second = built.cli("size", "x86_64")
    rows = {line.split()[0]: line.split() for line in second.stdout.splitlines() if line.startswith("  ")}
    assert rows["extra"][-2:] == ["+4.9", "KiB"]  # 5000 bytes more
    assert rows["extra"][5] == "2"  # two files now
    assert len(rows["hello"]) == 6  # no change column for hello
    assert "share/data" in second.stdout
    svg = built.path("build/stats/size-x86_64.svg")
    root = ElementTree.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and "/bin/hello" in "".join(root.itertext())


def test_size_of_an_unbuilt_target_is_one_line(project):
    result = project.cli("size", "x86_64")
    assert result.returncode != 0
    assert result.stderr == "mlbuild: size: target/x86_64 is not built yet (doit build:target-x86_64)\n"


# --- the graph ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_graph_colours_tasks_by_what_the_next_build_would_do_and_shows_one_tasks_ancestors(built):
    built.update_recipe("hello", vars={"greeting": "Howdy"})
    result = built.cli("graph")
    assert result.returncode == 0, result.stderr
    assert after_settings_line(result.stdout).splitlines()[0] == "next build: 3 up to date, 1 run, 3 run if a dependency's output changes"
    dot = built.read("build/graph.dot")
    colour = dict(re.findall(r'"([^"]+)" \[shape=\w+, style=filled, fillcolor="(#[0-9a-f]+)"\]', dot))
    assert colour["build:hello-x86_64"] == "#fdae6b"  # runs
    assert colour["build:app-x86_64"] == colour["build:images-x86_64"] == "#fee6ce"  # after hello
    assert colour["build:extra-x86_64"] == colour["fetch:hello"] == "#c7e9c0"  # up to date

    only = built.cli("graph", "app-x86_64", "--ancestors")
    assert only.returncode == 0, only.stderr
    nodes = set(re.findall(r'^  "([^"]+:[^"]+)" \[shape', built.read("build/graph.dot"), re.M))
    assert nodes == {"fetch:hello", "fetch:app", "build:hello-x86_64", "build:app-x86_64"}
    down = built.cli("graph", "build:hello-x86_64", "--descendants")
    nodes = set(re.findall(r'^  "([^"]+:[^"]+)" \[shape', built.read("build/graph.dot"), re.M))
    assert down.returncode == 0 and nodes == x86("hello", "app", "target", "images")


@pytest.mark.slow
def test_graph_colours_a_task_the_artifact_cache_holds_as_restore(built, tmp_path):
    cache = tmp_path / "artifacts"
    built.edit("pyproject.toml", "cache = []", f'cache = ["{cache.as_uri()}"]')
    assert built.doit("clean", "build:hello-x86_64").returncode == 0
    assert built.doit().executed == x86("hello")  # built again (same output) and pushed
    assert built.doit("clean", "build:hello-x86_64").returncode == 0
    result = built.cli("graph")
    assert result.returncode == 0, result.stderr
    assert after_settings_line(result.stdout).splitlines()[0] == "next build: 3 up to date, 3 run if a dependency's output changes, 1 restore from cache"
    colour = dict(re.findall(r'"([^"]+)" \[shape=\w+, style=filled, fillcolor="(#[0-9a-f]+)"\]', built.read("build/graph.dot")))
    assert colour["build:hello-x86_64"] == "#9ecae1"
    shutil.rmtree(cache)  # the entry gone: the same task would run
    assert "1 run," in after_settings_line(built.cli("graph").stdout).splitlines()[0]


def test_graph_counts_what_doit_build_would_do_and_the_tasks_it_leaves_out_apart(tmp_path):
    """The real project: the LLVM toolchain and riscv64 (not a default arch) are drawn, but a no-op build
    must not read as "N run" because of them: the counts are the tasks `doit build` runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MLBUILD_CACHE": ""}
    settings = ["target_llvm=0", "arches=x86_64"]
    result = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "graph", "--output", str(tmp_path / "g.dot"),
                             *settings], cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[1]  # after the settings line
    counted, _, outside = line.partition("; ")
    total = sum(int(count) for count in re.findall(r"(\d+) ", counted.removeprefix("next build: ")))
    script = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "script", "build", *settings], cwd=REPO,
                            capture_output=True, text=True, env=env)
    assert total == len(re.findall(r"^step \S+$", script.stdout, re.M)) == 13, line  # 4 fetches, 9 builds
    drawn = int(re.match(r"(\d+) more drawn, outside `doit build` \(", outside).group(1))
    nodes = re.findall(r'^\s+"((?:fetch|build):[^"]+)" \[', (tmp_path / "g.dot").read_text(), re.M)
    assert drawn >= 2 and drawn + total == len(nodes) and "build:toolchain" in nodes, line
