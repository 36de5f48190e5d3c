"""Build statistics: what each executed task cost, kept per run in build/stats/, and the critical path.

A run file (build/stats/runs/<run id>.json) holds one record per task that ran:
start and end (seconds since the epoch), CPU time (the task's thread plus its
build script's processes), peak RSS, ccache hits and misses, output size, and
its outcome: "built", "restored" (taken from a cache instead of built: the
action, engine/execution.execute, returns it), "failed" or "interrupted". build/stats/durations.json keeps
the newest duration of every task for the next run's ETA.
"""

import graphlib
import heapq
import json
import os
import re
import time
from pathlib import Path

from mlbuild.trees import write_atomic

RUNS_KEPT = 100  # run files; each is a few kB
SHRINK_ALL_LIMIT = 300  # tasks in a run up to which `mlbuild stats` says "if free" for each of them
CCACHE_LINE = re.compile(rb"^# ccache: (\d+) hits, (\d+) misses$", re.M)


def stats_dir(build_dir: Path) -> Path:
    return build_dir / "stats"


# --- measuring one task (around its doit action, see tasks.py) -----------------------------

def measured(step, function, *args):
    """Run function(*args) as the step's action: a new log in this run's folder, and a record of its cost.

    function returns how the output came to be ("restored", or None: built); the record is kept
    for the reporter (record_of)."""
    log_path = step.project.new_log(step.name)
    record = begin(step, log_path)
    try:
        outcome = function(*args)
    except BaseException:
        finish(record, None, "failed")
        raise
    # An unpacked source is not measured: walking a kernel or LLVM tree (80,000+ files) takes seconds.
    kind = step.project.graph.nodes[step.name].get("kind")
    finish(record, None if kind == "fetch" else step.output, outcome or "built")


def begin(step, log_path: Path) -> dict:
    record = {
        "task": step.name,
        "deps": list(step.deps),
        "log": str(log_path),
        "start": time.time(),
        "outcome": "running",
        "_cpu": _cpu_now(),
    }
    _records[step.name] = record
    return record


_records: dict[str, dict] = {}  # this process's records, by task (doit's threads each write their own tasks')


def record_of(task: str) -> dict | None:
    """The record of a task measured in this process (its latest), or None."""
    return _records.get(task)


def _cpu_now() -> tuple[float, int]:
    """(this thread's CPU time, how many child processes it has reaped so far).

    Child processes are counted where processes.py reaps them with their rusage,
    per thread: with -n 2 two tasks' children must not mix."""
    return time.thread_time(), len(_children())


def _children() -> list:
    """This thread's reaped children as (CPU seconds, peak RSS kB), if processes.py records them."""
    from mlbuild import processes

    usage = getattr(processes, "thread_children", None)
    return usage() if usage else []


def finish(record: dict, output: Path | None, outcome: str) -> dict:
    """Complete a record once the task's output is in place (or once it failed: output None)."""
    record["end"] = time.time()
    record["duration"] = round(record["end"] - record["start"], 3)
    thread_before, reaped_before = record.pop("_cpu")
    children = _children()[reaped_before:]
    record["cpu"] = round(time.thread_time() - thread_before + sum(cpu for cpu, _ in children), 3)
    if children:
        record["peak_rss_kb"] = max(rss for _, rss in children)
    hits, misses = ccache_counts(Path(record["log"]))
    if hits is not None:
        record["ccache_hits"], record["ccache_misses"] = hits, misses
    if output is not None and output.exists():
        record["output_bytes"] = tree_size(output)
    if record.get("outcome") == "running":
        record["outcome"] = outcome
    return record


def ccache_counts(log_path: Path) -> tuple[int | None, int | None]:
    """The ccache line a build script's log ends with ("# ccache: N hits, M misses"): read from the tail only."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4096))
            tail = handle.read()
    except OSError:
        return None, None
    found = CCACHE_LINE.findall(tail)
    if not found:
        return None, None
    return int(found[-1][0]), int(found[-1][1])


def tree_size(path: Path) -> int:
    """Bytes in a file or folder (as stored: links counted by their own size)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size if path.exists() or path.is_symlink() else 0
    total = 0
    for folder, dirs, files in os.walk(path):
        # os.walk lists links to folders among dirs without following them: count them as links.
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass  # removed while we looked
    return total


# --- run files ---------------------------------------------------------------------------

def write_run(build_dir: Path, run: dict) -> Path:
    path = stats_dir(build_dir) / "runs" / f"{run['run']}.json"
    write_atomic(path, json.dumps(run, indent=1, sort_keys=True).encode())
    return path


def prune_runs(build_dir: Path, keep: int = RUNS_KEPT) -> None:
    runs = sorted((stats_dir(build_dir) / "runs").glob("*.json"))
    for path in runs[:-keep] if keep > 0 else runs:
        path.unlink(missing_ok=True)


def run_files(build_dir: Path) -> list[Path]:
    """Recorded runs, oldest first (run ids start with the date and time)."""
    return sorted((stats_dir(build_dir) / "runs").glob("*.json"))


def load_run(build_dir: Path, run_id: str | None = None) -> dict | None:
    """A recorded run: the newest, or the one whose id starts with run_id."""
    files = run_files(build_dir)
    if run_id:
        files = [path for path in files if path.stem.startswith(run_id)]
    if not files:
        return None
    return json.loads(files[-1].read_text())


def load_durations(build_dir: Path) -> dict[str, dict]:
    """{task: {"duration": seconds, "parallel": the -n of the run that measured it}}."""
    try:
        return json.loads((stats_dir(build_dir) / "durations.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def save_durations(build_dir: Path, records: list[dict], parallel: int) -> None:
    """Remember the newest duration of each task that was built (not restored, not failed)."""
    built = {r["task"]: {"duration": r["duration"], "parallel": parallel}
             for r in records if r.get("outcome") == "built" and "duration" in r}
    if built:
        durations = load_durations(build_dir)
        durations.update(built)
        write_atomic(stats_dir(build_dir) / "durations.json", json.dumps(durations, indent=1, sort_keys=True).encode())


def expected_durations(build_dir: Path, parallel: int) -> dict[str, float]:
    """Each task's last duration, scaled to running `parallel` tasks at once.

    Build scripts use every core (make -j<jobs>), so tasks running side by side
    share the cores: a task measured alone takes about twice as long beside
    another on a machine whose cores they both fill."""
    cores = os.cpu_count() or 1
    scaled = {}
    for task, entry in load_durations(build_dir).items():
        then = min(max(1, entry.get("parallel", 1)), cores)
        scaled[task] = entry["duration"] * min(parallel, cores) / then
    return scaled


# --- the critical path ------------------------------------------------------------------

def schedule(durations: dict[str, float], deps: dict[str, list[str]], order: list[str], slots: int | None) -> float:
    """The wall time of a run of these tasks: each starts when its dependencies ended and a slot is free.

    Of the tasks ready at a moment, those earlier in `order` (the order the real
    run started them) start first; slots None means as many at once as are
    ready. Dependencies outside `durations` did not run and cost nothing.
    """
    rank = {task: index for index, task in enumerate(order)}
    waiting_on = {task: {dep for dep in deps.get(task, []) if dep in durations} for task in order}
    dependents: dict[str, list[str]] = {task: [] for task in order}
    for task, before in waiting_on.items():
        for dep in before:
            dependents[dep].append(task)
    ready = [(rank[task], task) for task, before in waiting_on.items() if not before]
    heapq.heapify(ready)
    running: list[tuple[float, int, str]] = []  # (end, rank, task)
    now, finished = 0.0, 0
    while ready or running:
        while ready and (slots is None or len(running) < slots):
            _, task = heapq.heappop(ready)
            heapq.heappush(running, (now + durations[task], rank[task], task))
        if not running:
            break
        now, _, task = heapq.heappop(running)
        finished += 1
        for dependent in dependents[task]:
            waiting_on[dependent].discard(task)
            if not waiting_on[dependent]:
                heapq.heappush(ready, (rank[dependent], dependent))
    if finished != len(order):
        raise ValueError("tasks wait for each other: " + ", ".join(sorted(t for t, before in waiting_on.items() if before)))
    return now


def critical_path(durations: dict[str, float], deps: dict[str, list[str]]) -> list[str]:
    """The chain of dependent tasks with the largest total duration, first task first."""
    graph = {task: [dep for dep in deps.get(task, []) if dep in durations] for task in durations}
    best: dict[str, tuple[float, str | None]] = {}
    for task in graphlib.TopologicalSorter(graph).static_order():
        length, previous = max(((best[dep][0], dep) for dep in graph[task]), default=(0.0, None))
        best[task] = (length + durations[task], previous)
    if not best:
        return []
    end = max(best, key=lambda task: (best[task][0], task))
    chain = []
    while end is not None:
        chain.append(end)
        end = best[end][1]
    return chain[::-1]


def shrink_if_free(durations: dict[str, float], deps: dict[str, list[str]], order: list[str], slots: int | None,
                   tasks: list[str] | None = None) -> dict[str, float]:
    """For each task (default: those on the critical path): by how much the wall time would shrink if it took no time."""
    whole = schedule(durations, deps, order, slots)
    return {
        task: round(whole - schedule({**durations, task: 0.0}, deps, order, slots), 3)
        for task in (critical_path(durations, deps) if tasks is None else tasks)
    }


def analyse(run: dict) -> dict:
    """The critical path of a recorded run and, per task, how much the run would shrink if that task were free."""
    records = [r for r in run.get("tasks", []) if "duration" in r]
    durations = {r["task"]: r["duration"] for r in records}
    deps = {r["task"]: r.get("deps", []) for r in records}
    order = [r["task"] for r in sorted(records, key=lambda r: r["start"])]
    slots = run.get("parallel") or 1
    # One replay per task: for every task up to a few hundred, beyond that for the critical path's only.
    which = order if len(order) <= SHRINK_ALL_LIMIT else None
    return {"critical_path": critical_path(durations, deps), "shrink": shrink_if_free(durations, deps, order, slots, which)}


# --- the floor: how soon this run could have ended at best ------------------------------------
#
# A run cannot end sooner than its CPU time spread over every job (ΣCPU ÷ jobs), nor sooner
# than its longest chain of dependent tasks. How fast a task could go with the machine to
# itself is not recorded (its useful parallelism is unknown), so each task on a chain counts
# for its CPU-bound time, two lower bounds of it: max(its CPU ÷ jobs: it cannot use more than
# `jobs` CPUs; the wall time it ran with no other task beside it: alone, it was not slowed by
# another, and sharing never speeds a task up). A task that ran alone throughout counts for
# its whole wall time; one that shared the machine throughout for its CPU ÷ jobs. So the floor
# is a lower bound of the run's wall time on `jobs` CPUs, and floor ÷ wall its efficiency.

def alone_times(records: list[dict]) -> dict[str, float]:
    """For each task, the seconds of its run during which no other task of the run was running."""
    events = sorted([(r["start"], 1, r["task"]) for r in records] + [(r["end"], 0, r["task"]) for r in records])
    alone = {r["task"]: 0.0 for r in records}
    running: set[str] = set()
    previous = None
    for moment, starts, task in events:  # ends before starts at the same moment: touching tasks do not overlap
        if len(running) == 1 and previous is not None:
            (only,) = running
            alone[only] += moment - previous
        if starts:
            running.add(task)
        else:
            running.discard(task)
        previous = moment
    return {task: round(seconds, 3) for task, seconds in alone.items()}


def cpu_bound_times(records: list[dict], jobs: int) -> dict[str, float]:
    """Each task's CPU-bound time: max(its CPU ÷ jobs, the wall time it ran alone); see above."""
    alone = alone_times(records)
    return {r["task"]: max(r.get("cpu", 0.0) / max(1, jobs), alone[r["task"]]) for r in records}


def floor(run: dict) -> dict:
    """The run's floor and efficiency: {"floor", "path" (its CPU-bound critical path, first task first),
    "path_seconds", "cpu_seconds" (ΣCPU ÷ jobs), "jobs", "wall", "efficiency" (floor ÷ wall, None for no wall)}.

    ΣCPU is the run's own (the doit process and every process it reaped), jobs the run's `jobs`. An
    efficiency above 1 says the run used more than `jobs` CPUs at once (tasks side by side, each
    running `make -j<jobs>`, on a machine with more cores than `jobs`)."""
    records = [r for r in run.get("tasks", []) if "end" in r and "start" in r]
    jobs = max(1, run.get("jobs") or 1)
    weights = cpu_bound_times(records, jobs)
    deps = {r["task"]: r.get("deps", []) for r in records}
    path = critical_path(weights, deps)
    path_seconds = sum(weights[task] for task in path)
    cpu_seconds = run.get("cpu", 0.0) / jobs
    lowest = max(path_seconds, cpu_seconds)
    wall = run.get("wall", 0.0)
    return {"floor": round(lowest, 3), "path": path, "path_seconds": round(path_seconds, 3),
            "cpu_seconds": round(cpu_seconds, 3), "jobs": jobs, "wall": wall,
            "efficiency": lowest / wall if wall > 0 else None}


def idle_spans(records: list[dict], slots: dict[str, int], rows: int) -> dict[int, list[tuple[float, float]]]:
    """Per job slot (row), the spans (start, end) from the first task's start to the last task's end in
    which the slot ran no task."""
    if not records:
        return {row: [] for row in range(rows)}
    begin, end = min(r["start"] for r in records), max(r["end"] for r in records)
    busy: dict[int, list[tuple[float, float]]] = {row: [] for row in range(rows)}
    for record in records:
        busy[slots[record["task"]]].append((record["start"], record["end"]))
    idle: dict[int, list[tuple[float, float]]] = {}
    for row, spans in busy.items():
        idle[row], cursor = [], begin
        for start, stop in sorted(spans):
            if start > cursor + 1e-6:
                idle[row].append((cursor, start))
            cursor = max(cursor, stop)
        if end > cursor + 1e-6:
            idle[row].append((cursor, end))
    return idle
