"""One job budget for a whole run (src/mlbuild/jobserver.py): the makes of tasks running side by side
share one GNU make jobserver of `jobs` tokens, so they never run more jobs than that between them,
and use every token while they have work.

Real doit, real GNU make (the host's, 4.3 on Debian 12), real processes; each make job writes its
start and end time into a file, from which the peak number of jobs running at once is computed.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import SRC, base_environment

from mlbuild import jobserver

TARGETS = 12
SLEEP = 0.3

# Each task's make has many jobs to run at once (TARGETS independent targets); its -j comes from $MAKE_JOBS,
# as in mlbuild's templates: empty under the run's pool (make 4.3 obeys an explicit -jN over MAKEFLAGS and
# leaves the pool: "-jN forced in submake: resetting jobserver mode"), -j<jobs> in an exported script.
MAKE_SH = textwrap.dedent("""\
    mkdir -p "$WORK/m" && cd "$WORK/m"
    {{
      printf 'all:'
      for i in $(seq {targets}); do printf ' t%s' "$i"; done
      printf '\\n\\n'
      printf 't%%:\\n'
      printf '\\t@echo start $$(date +%%s.%%N) > {times}/$(MLBUILD_TASK)-$@\\n'
      printf '\\t@sleep {sleep}\\n'
      printf '\\t@echo end $$(date +%%s.%%N) >> {times}/$(MLBUILD_TASK)-$@\\n'
    }} > Makefile
    make $MAKE_JOBS --no-print-directory >/dev/null 2>make.err || {{ cat make.err; exit 1; }}
    cat make.err
    mkdir -p "$OUT/bin"
    touch "$OUT/bin/made-by-"{{{{ recipe.name }}}}
    """)


def _intervals(times: Path) -> list[tuple[float, float]]:
    found = []
    for path in times.iterdir():
        words = path.read_text().split()
        found.append((float(words[1]), float(words[3])))
    return found


def _peak(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def _two_make_tasks(project, times: Path) -> None:
    times.mkdir()
    script = MAKE_SH.format(targets=TARGETS, sleep=SLEEP, times=times)
    project.write("templates/build/hello.sh.j2", script)
    project.write("templates/build/extra.sh.j2", script)


def test_two_makes_side_by_side_share_the_budget(project, tmp_path):
    """jobs = 2: two tasks whose makes each have 12 jobs ready never run more than 2 jobs between them, and use both."""
    times = tmp_path / "times"
    _two_make_tasks(project, times)
    result = project.doit("build:hello-x86_64", "build:extra-x86_64")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {"build:hello-x86_64", "build:extra-x86_64"} <= result.executed
    intervals = _intervals(times)
    assert len(intervals) == 2 * TARGETS
    assert _peak(intervals) == 2, sorted(intervals)
    # The two tasks overlapped (doit's default -n is jobs + 2): a task's jobs ran while the other's did.
    starts = {name.name.split("-t")[0]: [] for name in times.iterdir()}
    for path in times.iterdir():
        starts[path.name.split("-t")[0]].append(float(path.read_text().split()[1]))
    first, second = (sorted(values) for values in starts.values())
    assert first[0] < second[-1] and second[0] < first[-1], starts
    # Neither make was told to leave the pool ("-jN forced in submake: resetting jobserver mode").
    for task in ("build:hello-x86_64", "build:extra-x86_64"):
        assert "jobserver" not in project.log(task), project.log(task)


def test_one_job_is_one_task_of_its_own(project, tmp_path):
    """jobs = 1: the pool holds one token, so the two tasks' makes run one job at a time in all."""
    times = tmp_path / "times"
    _two_make_tasks(project, times)
    project.edit("pyproject.toml", "jobs = 2", "jobs = 1")
    result = project.doit("-n", "2", "build:hello-x86_64", "build:extra-x86_64", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _peak(_intervals(times)) == 1


def test_the_exported_script_keeps_its_own_parallelism(project):
    """`mlbuild script`: no pool outside mlbuild, so make gets -j<jobs> itself and ninja runs as it is."""
    result = project.cli("script", "build:hello-x86_64")
    assert result.returncode == 0, result.stderr
    assert "MAKE_JOBS=-j2" in result.stdout
    # no pool outside a run: make keeps its own -j (MAKEFLAGS is set empty, so the caller's cannot leak in)
    assert "--jobserver-auth" not in result.stdout and "MAKEFLAGS='' \\\n" in result.stdout


# --- the holder for commands that take no part in the pool (ninja) ------------------------------

ARGV = [sys.executable, "-c", "import sys; print(' '.join(sys.argv[1:]))"]


def _hold(pool: jobserver.Jobserver, *args: str) -> str:
    """What `python -m mlbuild.jobserver` runs, as its child prints it."""
    result = subprocess.run([sys.executable, "-m", "mlbuild.jobserver", *ARGV, *args], capture_output=True, text=True,
                            env=base_environment({"PYTHONPATH": str(SRC), "MAKEFLAGS": pool.makeflags()}),
                            pass_fds=pool.fds, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _free_tokens(pool: jobserver.Jobserver) -> int:
    count = 0
    taken = []
    while (token := jobserver._free(pool.read_fd)) is not None:
        taken.append(token)
        count += 1
    os.write(pool.write_fd, b"".join(taken))
    return count


def test_a_command_outside_the_pool_runs_with_the_tokens_free_when_it_starts():
    pool = jobserver.Jobserver(4)
    own = pool.acquire()  # the task's own token, as job_slot holds it
    assert _hold(pool, "-j8", "all") == "-j4 all"  # its own + the 3 free
    other = pool.acquire()  # another task holds one
    assert _hold(pool, "-j", "8") == "-j3"
    assert _hold(pool, "-j2") == "-j2"  # never more than it asked for
    pool.release(other)
    pool.release(own)
    assert _free_tokens(pool) == 4  # every token it took came back


def test_without_a_pool_the_command_runs_unchanged():
    result = subprocess.run([sys.executable, "-m", "mlbuild.jobserver", *ARGV, "-j8"], capture_output=True, text=True,
                            env=base_environment({"PYTHONPATH": str(SRC), "MAKEFLAGS": ""}), timeout=60)
    assert result.stdout.strip() == "-j8"


def test_a_token_lent_while_unpacking_goes_back_to_the_pool_and_returns(monkeypatch):
    monkeypatch.setattr(jobserver, "_pool", None)  # this test's own pool, not left to other tests in the process
    with jobserver.job_slot(1) as pool:
        assert _free_tokens(pool) == 0
        with jobserver.lent():
            assert _free_tokens(pool) == 1
        assert _free_tokens(pool) == 0
    assert _free_tokens(pool) == 1
