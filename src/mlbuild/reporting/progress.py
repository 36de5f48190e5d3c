"""What a build shows while it runs and when it ends: mlbuild's doit reporter.

Quiet by default: a task that is up to date prints nothing (the summary counts it), a task
that ran prints one line as it ends (`built …`, `fetched …`, `restored … (the cache)`), and the
summary counts fetches, builds, restores and up-to-date tasks apart. On a terminal a live panel
(rich) shows tasks done/total, the tasks running now with their elapsed time and inner step
counter (ninja's `[1536/2838]`, CMake's `[ 45%]`, read from the end of their logs) and an ETA.
Elsewhere (CI, pipes): those lines, and a progress line at most every 30 s while tasks run;
never a control character. A run starts with the settings that differ from their defaults (and where each was set);
it ends with a summary and its statistics in build/stats/.

The ETA takes each task's time from this tree's earlier runs, else from the artifact cache's
manifests (the build time of whoever pushed it; a task the cache holds for its current inputs
is a restore, if the restore would take it: its signature checked as the restore checks it);
a task running past its usual time makes it a lower bound ("ETA ≥ 2m00s").

The configuration keys `progress` (auto, live, plain) and `progress_interval` (seconds
between plain progress lines) choose; like every key they can be set as MLBUILD_PROGRESS=plain
or `doit progress=plain`. `verbose` (or doit's `-v 2`) shows every task as it starts and as it
is found up to date (doit's `.  task` and `-- task`) and where each restore came from on a line
of its own.
"""

import graphlib
import os
import re
import sys
import threading
import time
from pathlib import Path

from doit.reporter import ConsoleReporter

from mlbuild.reporting import stats

CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")
STEP_COUNTER = re.compile(rb"\[\s*(\d+)\s*/\s*(\d+)\s*\]")  # ninja, LLVM's build
PERCENT = re.compile(rb"\[\s*(\d{1,3})%\]")  # CMake's Makefiles
INTERACTIVE = ("run:", "menuconfig:")  # they own the terminal: no display of ours beside them
TAIL_BYTES = 8192
RUN_WRITE_INTERVAL = 5.0  # seconds between writes of the run's statistics while it runs
LIVE_REFRESH = 0.5  # seconds between redraws of the live panel
# An artifact cache restore, for the ETA: copy, unpack, hash every file (measured on this project's
# 2-core machine: 0.8 MB in 0.2–0.6 s, 2 MB in 0.7–0.8 s, 8 MB in about 2 s).
RESTORE_BYTES_PER_SECOND = 4e6
RESTORE_OVERHEAD = 0.2  # seconds


def reporter_for(project, default_parallel: int | None = None) -> type:
    """The reporter class for doit's DOIT_CONFIG (doit makes the instance); default_parallel: the job budget."""
    return type("MlbuildReporter", (BuildReporter,), {"project": project, "default_parallel": default_parallel})


def plain(text: str) -> str:
    """Text without escape sequences or control characters (newlines and tabs stay)."""
    return CONTROL.sub("", text)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def inner_progress(log_path: Path) -> tuple[int, int] | None:
    """The last step counter in the end of a log: (done, total); a CMake percentage as (n, 100)."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return None
    best = None
    for pattern in (STEP_COUNTER, PERCENT):
        for match in pattern.finditer(tail):
            if best is None or match.start() > best[0]:
                done, total = int(match.group(1)), int(match.group(2)) if pattern is STEP_COUNTER else 100
                if 0 < total and done <= total:
                    best = (match.start(), done, total)
    return (best[1], best[2]) if best else None


def _number_option(argv: list[str], short: str, long: str) -> int | None:
    """The number given to doit's option `-x N`, `-xN`, `--long N` or `--long=N`, or None."""
    for index, word in enumerate(argv):
        value = None
        if word in (short, long) and index + 1 < len(argv):
            value = argv[index + 1]
        elif word.startswith(long + "="):
            value = word.split("=", 1)[1]
        elif word.startswith(short) and word[len(short):].isdigit():
            value = word[len(short):]
        if value is not None and value.isdigit():
            return int(value)
    return None


def parallel_from_argv(argv: list[str], default: int = 1) -> int:
    """doit's -n/--process from the command line (doit gives reporters no other way to know it), else default."""
    return max(1, _number_option(argv, "-n", "--process") or default)


def verbosity_from_argv(argv: list[str]) -> int:
    """doit's -v/--verbosity from the command line (0 when not given): 2 asks for every detail."""
    return _number_option(argv, "-v", "--verbosity") or 0


def estimate(remaining: dict[str, float | None], deps: dict[str, list[str]], parallel: int) -> tuple[float | None, int]:
    """ETA of tasks still to finish, given each one's remaining time: (seconds, how many have no history).

    The larger of their total work spread over the parallel slots and their
    longest chain of dependent tasks."""
    known = {name: value for name, value in remaining.items() if value is not None}
    unknown = len(remaining) - len(known)
    if not known:
        return (None if unknown else 0.0), unknown
    graph = {name: [dep for dep in deps.get(name, []) if dep in remaining] for name in remaining}
    chain: dict[str, float] = {}
    for name in graphlib.TopologicalSorter(graph).static_order():
        chain[name] = known.get(name, 0.0) + max((chain[dep] for dep in graph[name]), default=0.0)
    return max(sum(known.values()) / max(1, parallel), max(chain.values())), unknown


class BuildReporter(ConsoleReporter):
    desc = "mlbuild: live progress with an ETA, a summary, statistics"
    project = None  # set by reporter_for
    default_parallel: int | None = None  # the run's job budget: the tasks that compute at once, whatever doit's -n

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.lock = threading.RLock()
        config = self.project.config
        self.mode = self._choose_mode(outstream, getattr(config, "progress", "auto"))
        self.verbose = bool(getattr(config, "verbose", False)) or verbosity_from_argv(sys.argv) >= 2
        # Tasks at once that compute: doit's -n, but never more than the job budget (jobserver.py) lets run.
        budget = self.default_parallel
        self.parallel = min(parallel_from_argv(sys.argv, budget), budget) if budget else parallel_from_argv(sys.argv)
        self.interval = float(getattr(config, "progress_interval", 30))
        self.at_least = "≥" if _can_write(outstream, "≥") else ">="
        self.started = time.time()
        self.started_monotonic = time.monotonic()
        self.times_at_start = os.times()
        self.running: dict[str, float] = {}  # task -> monotonic start
        self.records: list[dict] = []  # tasks that ran, finished or failed
        self.up_to_date: list[str] = []
        self.skipped: list[str] = []  # not run because a dependency failed
        self.selected: set[str] = set()
        self.deps: dict[str, list[str]] = {}
        self.expected: dict[str, float] | None = None  # per task, from history (loaded when a task first runs)
        self.restores: dict[str, float | None] = {}  # per task not started yet: a restore's time, None: not one
        self.predicted: dict[str, str] = {}  # the output hash a task to be restored will have (its entry's)
        self.nothing_to_do: set[str] = set()
        self.live = None
        self.ticker = None
        self.stopping = threading.Event()
        self.last_progress_line = time.monotonic()
        self.last_run_write = time.monotonic()

    @staticmethod
    def _choose_mode(outstream, chosen: str) -> str:
        if chosen in ("live", "plain"):
            return chosen
        terminal = hasattr(outstream, "isatty") and outstream.isatty()
        return "live" if terminal and os.environ.get("TERM", "dumb") != "dumb" else "plain"

    # --- output ---------------------------------------------------------------------------

    def write(self, text):
        with self.lock:
            if self.live is not None:
                # The panel as it is now first: the line goes above it, and it is drawn again below.
                self.live.update(self._render(), refresh=True)
                self.live.console.print(plain(text), end="", markup=False, highlight=False, soft_wrap=True)
            else:
                self.outstream.write(plain(text) if self.mode != "live" else text)
                self.outstream.flush()

    # --- doit's calls ---------------------------------------------------------------------

    def initialize(self, tasks, selected_tasks):
        # Every task this run may execute: the selected ones and what they need.
        todo = list(selected_tasks)
        seen = set()
        while todo:
            name = todo.pop()
            if name in seen or name not in tasks:
                continue
            seen.add(name)
            todo.extend(tasks[name].task_dep)
        self.selected = {name for name in seen if tasks[name].actions and not name.startswith("_")}
        self.deps = {name: [dep for dep in tasks[name].task_dep if dep in self.selected] for name in self.selected}
        if any(name.startswith(INTERACTIVE) for name in self.selected):
            self.mode = "interactive"  # QEMU's console or menuconfig own the terminal: lines, no panel, no summary
        # The run's first line: what differs from the defaults, and where it was set (a choice made
        # once with `mlbuild set` is said at every run, also before QEMU's console).
        line = self.project.settings_line()
        if line:
            self.write(line + "\n")

    def execute_task(self, task):
        if not task.actions or task.name.startswith("_"):
            return
        with self.lock:
            self.running[task.name] = time.monotonic()
            if self.expected is None:
                self._load_history()
            if self.mode == "live":
                self._start_live()
                return
            if self.verbose:
                super().execute_task(task)  # ".  task"
            if self.mode == "plain" and self.ticker is None:
                self._start_ticker(self._tick_plain)

    def add_success(self, task):
        if not task.actions or task.name.startswith("_"):
            return
        with self.lock:
            record = self._finish(task.name, "built")
            if self.mode == "interactive" and task.name.startswith(INTERACTIVE):
                return  # run:, menuconfig: end when the user leaves them
            for line in self._end_lines(task.name, record):
                self.write(line + "\n")

    def add_failure(self, task, fail):
        with self.lock:
            if task.name in self.running:
                self._finish(task.name, "failed")
            else:
                self.skipped.append(task.name)
        super().add_failure(task, fail)

    def skip_uptodate(self, task):
        if task.actions:
            self.up_to_date.append(task.name)
        if self.verbose and self.mode != "live":
            super().skip_uptodate(task)  # "-- task"

    def complete_run(self):
        self.stopping.set()
        with self.lock:
            self._stop_live()
            for name in list(self.running):
                self._finish(name, "interrupted")
        super().complete_run()
        if self.mode == "interactive":
            return
        run = self._run_record()
        path = None
        if self.records:
            path = stats.write_run(self.project.build_dir, run)
            stats.prune_runs(self.project.build_dir)
            stats.save_durations(self.project.build_dir, self.records, self.parallel)
        for line in summary_lines(run, self.project, path):
            self.write(line + "\n")

    # --- the line of a task that ended ---------------------------------------------------

    def _end_lines(self, name: str, record: dict) -> list[str]:
        """Quiet: `built|fetched|restored|ok TASK TIME [(the cache)] [done/total]`; verbose: as doit's
        reporters always had it (`ok TASK …`, and a restore's cache on a line of its own first)."""
        counter = f"[{self.done}/{len(self.selected)}]"
        took = duration(record.get("duration"))
        origin = self._restored_from(name) if record["outcome"] == "restored" else None
        if self.verbose:
            lines = [f"{name}: restored from {origin}"] if origin else []
            return lines + [f"{'ok' if record['outcome'] == 'built' else record['outcome']} {name} {took} {counter}"]
        word = record["outcome"]
        if word == "built":
            kind = getattr(self.project.steps.get(name), "kind", None)
            word = "fetched" if kind == "fetch" else "built" if kind else "ok"  # ok: a boot test passed
        return [f"{word} {name} {took}" + (f" ({origin})" if origin else "") + f" {counter}"]

    def _restored_from(self, name: str) -> str | None:
        step = self.project.steps.get(name)
        stamp = self.project.stamps.read(step.stamp) if step is not None else None
        return (stamp or {}).get("restored_from")

    # --- bookkeeping ----------------------------------------------------------------------

    @property
    def done(self) -> int:
        return len(self.records) + len(self.up_to_date) + len(self.skipped)

    def _finish(self, name: str, outcome: str) -> dict:
        started = self.running.pop(name, None)
        record = stats.record_of(name)
        if record is None or record.get("task") != name:
            # A task without a step (boottest:…) or one that failed before its action started.
            now = time.time()
            begun = now - (time.monotonic() - started) if started is not None else now
            record = {"task": name, "deps": self.deps.get(name, []), "start": begun, "end": now,
                      "duration": round(now - begun, 3)}
        if "end" not in record:  # interrupted: its action never finished
            record["end"] = time.time()
            record["duration"] = round(record["end"] - record["start"], 3)
            record.pop("_cpu", None)
        if record.get("outcome") in (None, "running"):
            record["outcome"] = outcome
        if outcome in ("failed", "interrupted"):
            record["outcome"] = outcome
        record.setdefault("deps", self.deps.get(name, []))
        self.records.append(record)
        # Written as the run goes (a SIGKILLed run keeps most of its record), at most every few
        # seconds: rewriting it after each of thousands of short tasks would cost more than they do.
        if self.mode != "interactive" and time.monotonic() - self.last_run_write >= RUN_WRITE_INTERVAL:
            self.last_run_write = time.monotonic()
            stats.write_run(self.project.build_dir, self._run_record())
        return record

    def _run_record(self) -> dict:
        now = os.times()
        cpu = sum(now[:4]) - sum(self.times_at_start[:4])
        failed = any(r["outcome"] in ("failed", "interrupted") for r in self.records)
        return {
            "run": self.project.run_logs.run_id,
            "started": self.started,
            "wall": round(time.monotonic() - self.started_monotonic, 3),
            "cpu": round(cpu, 3),
            "parallel": self.parallel,
            "jobs": self.project.config.jobs,
            "command": sys.argv[1:],
            "outcome": "failed" if failed or self.skipped else "ok",
            "tasks": sorted(self.records, key=lambda r: r["start"]),
            "up_to_date": sorted(self.up_to_date),
            "skipped": sorted(self.skipped),
        }

    # --- the ETA ----------------------------------------------------------------------------

    def _load_history(self) -> None:
        """Each task's expected time: this tree's earlier runs (scaled to this run's parallelism), else
        the artifact cache's manifests; and which tasks will not run at all."""
        self.expected = stats.expected_durations(self.project.build_dir, self.parallel)
        try:
            from mlbuild.engine.plan import UP_TO_DATE, next_actions

            names = [name for name in self.selected if name in self.project.steps]
            plan = next_actions(self.project, names, consult_cache=False)
            self.nothing_to_do = {name for name, action in plan.items() if action == UP_TO_DATE and name in self.selected
                                  and name not in self.project.config.rebuild}
            without = {self.project.steps[name].stamp: name for name in names
                       if name not in self.expected and name not in self.nothing_to_do and self.project.steps[name].artifact}
            if without and self.project.config.cache:
                for stamp, seconds in self.project.artifact_cache.build_times(set(without)).items():
                    self.expected[without[stamp]] = seconds
        except Exception:  # the estimate is a nicety: never let it stop a build
            pass

    def _restore_time(self, name: str, pending: set[str]) -> float | None:
        """For a task not started yet: a restore's time when a local cache holds it for the inputs it will
        have, else None. Its dependencies' output hashes must be known: from their stamps when they are
        done or not part of this run, from a source's identity, or from the entry of a dependency that
        will be restored itself; so a fresh clone's whole chain of restores is foreseen at the start.
        Decided once per task (asked again while a dependency's output is not known)."""
        if name in self.restores:
            return self.restores[name]
        step = self.project.steps.get(name)
        # A task named by rebuild= builds though the cache holds it.
        if step is None or not step.artifact or not self.project.config.cache or name in self.project.config.rebuild:
            self.restores[name] = None
            return None
        outputs = {}
        for dep in step.deps:
            if dep not in pending:
                continue  # done, up to date or not in this run: step.inputs() reads its stamp
            known = self.predicted.get(dep) or self.project.steps[dep].known_output_hash()
            if known is None:
                return None  # not known yet: asked again later
            outputs[f"dep:{self.project.steps[dep].input_name}"] = known
        try:
            entry = self.project.artifact_cache.local_entry({**step.inputs(), **outputs})
        except Exception:  # the estimate is a nicety
            entry = None
        self.restores[name] = None if entry is None else RESTORE_OVERHEAD + entry[0] / RESTORE_BYTES_PER_SECOND
        if entry is not None:
            self.predicted[name] = entry[1]
        return self.restores[name]

    def usual(self, name: str, pending: set[str]) -> float | None:
        """The time a task is expected to take: a restore's when the cache holds it (a running task is
        asked too: its dependents' foresight needs its entry's output hash), else its history's."""
        restore = self._restore_time(name, pending)
        return restore if restore is not None else (self.expected or {}).get(name)

    @property
    def finished(self) -> set[str]:
        return {r["task"] for r in self.records} | set(self.up_to_date) | set(self.skipped)

    def eta(self) -> tuple[float | None, int, list[str]]:
        """(seconds still to go, or a lower bound of it when some task is overdue; how many tasks have no
        history; the running tasks past their usual time, which count as 0 s more)."""
        now = time.monotonic()
        remaining: dict[str, float | None] = {}
        overdue = []
        pending = self.selected - self.finished - self.nothing_to_do
        # Dependencies first: a task's restore is foreseen from its dependencies' foreseen outputs.
        order = graphlib.TopologicalSorter({name: [dep for dep in self.deps.get(name, []) if dep in pending]
                                            for name in pending}).static_order()
        for name in order:
            expected = self.usual(name, pending)
            if name in self.running:
                elapsed = now - self.running[name]
                counter = inner_progress(self.project.log_path(name)) if name in self.project.steps else None
                if counter and counter[0] and elapsed > 5:
                    remaining[name] = elapsed * (counter[1] - counter[0]) / counter[0]
                elif expected is not None and elapsed > expected:
                    overdue.append(name)
                    remaining[name] = 0.0  # how much longer it takes is unknown: the ETA is a lower bound
                elif expected is not None:
                    remaining[name] = expected - elapsed
                else:
                    remaining[name] = None
            else:
                remaining[name] = expected
        seconds, unknown = estimate(remaining, self.deps, self.parallel)
        return seconds, unknown, sorted(overdue)

    def status_line(self) -> str:
        seconds, unknown, overdue = self.eta()
        text = f"[{self.done}/{len(self.selected)}] {len(self.running)} running"
        if overdue:
            why = (f"{overdue[0]} past its usual {duration(self.usual(overdue[0], set()))}" if len(overdue) == 1
                   else f"{len(overdue)} tasks past their usual time")
            if seconds is not None and seconds >= 0.1:
                text += f", ETA {self.at_least} {duration(seconds)} ({why})"
            else:
                text += f", ETA unknown ({why})"
        elif seconds is not None:
            text += f", ETA {duration(seconds)}" + (f" (+{unknown} tasks without history)" if unknown else "")
        elif unknown:
            text += ", ETA unknown (no earlier run)"
        return text

    def running_lines(self) -> list[str]:
        now = time.monotonic()
        lines = []
        for name, started in sorted(self.running.items(), key=lambda item: item[1]):
            counter = inner_progress(self.project.log_path(name)) if name in self.project.steps else None
            inner = f" [{counter[0]}/{counter[1]}]" if counter else ""
            lines.append(f"{name} {duration(now - started)}{inner}")
        return lines

    # --- a timer thread: plain progress lines, or the live panel's redraws -----------------------

    def _start_ticker(self, tick) -> None:
        self.ticker = threading.Thread(target=tick, name="mlbuild-progress", daemon=True)
        self.ticker.start()

    def _tick_plain(self):
        while not self.stopping.wait(max(0.2, self.interval)):
            with self.lock:
                if self.running and time.monotonic() - self.last_progress_line >= self.interval and not self.stopping.is_set():
                    self.last_progress_line = time.monotonic()
                    self.write(f"progress {self.status_line()}: {'; '.join(self.running_lines())}\n")

    def _tick_live(self):
        while not self.stopping.wait(LIVE_REFRESH):
            with self.lock:
                if self.live is not None:
                    self.live.update(self._render(), refresh=True)

    # --- live: a rich panel under the lines of finished tasks -------------------------------

    def _start_live(self):
        if self.live is not None:
            return
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.outstream, highlight=False)
        # No refresh thread of rich's own, and no callback into this reporter from rich's lock: the
        # panel is made under this reporter's lock (from its state now) and handed over, by the timer
        # below and before every line written above it. So it never shows a task that has ended.
        self.live = Live(self._render(), console=console, auto_refresh=False, transient=True)
        self.live.start(refresh=True)
        if self.ticker is None:
            self._start_ticker(self._tick_live)

    def _stop_live(self):
        if self.live is not None:
            live, self.live = self.live, None
            live.stop()

    def _render(self):
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            table = Table.grid(padding=(0, 2))
            table.add_row(Text(self.status_line(), style="bold"))
            now = time.monotonic()
            for name, started in sorted(self.running.items(), key=lambda item: item[1]):
                counter = inner_progress(self.project.log_path(name)) if name in self.project.steps else None
                line = Text(f"  {name}  {duration(now - started)}")
                if counter:
                    filled = int(20 * counter[0] / counter[1])
                    line.append(f"  [{counter[0]}/{counter[1]}] ")
                    line.append("█" * filled + "░" * (20 - filled), style="cyan")
                table.add_row(line)
            return table


def _can_write(stream, text: str) -> bool:
    """Whether the stream's encoding has these characters (an ASCII-only CI log does not have ≥)."""
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


def summary_lines(run: dict, project, stats_path: Path | None) -> list[str]:
    """The end of a run in a few lines: counts, times, ccache, the slowest tasks, a failure's log."""
    records = run["tasks"]
    count = {outcome: sum(1 for r in records if r["outcome"] == outcome) for outcome in ("built", "restored", "failed", "interrupted")}
    # What a task that did its work did: a fetch fetched, a step built; a task without a step (boottest:) ran.
    kinds = [getattr(project.steps.get(r["task"]), "kind", None) for r in records if r["outcome"] == "built"]
    fetched, ran = kinds.count("fetch"), kinds.count(None)
    hits = sum(r.get("ccache_hits", 0) for r in records)
    misses = sum(r.get("ccache_misses", 0) for r in records)
    counts = [(fetched, "fetched"), (count["built"] - fetched - ran, "built"), (count["restored"], "restored"), (ran, "ran"),
              (len(run["up_to_date"]), "up to date"), (count["failed"], "failed"), (count["interrupted"], "interrupted"),
              (len(run["skipped"]), "not run (a dependency failed)")]
    line = "mlbuild: " + (", ".join(f"{number} {what}" for number, what in counts if number) or "no task to run")
    line += f"; wall {duration(run['wall'])}"
    if records:  # the floor: how soon the run could have ended at best (stats.floor); none for a no-op
        best = stats.floor(run)
        if best["efficiency"] is not None:
            line += f", floor {duration(best['floor'])} ({100 * best['efficiency']:.0f} %)"
    line += f", CPU {duration(run['cpu'])}"
    if hits + misses:
        line += f", ccache {hits} hits / {misses} misses ({100 * hits / (hits + misses):.0f} %)"
    lines = [line]
    slowest = sorted((r for r in records if r["outcome"] in ("built", "restored")), key=lambda r: -r["duration"])[:3]
    if slowest:
        lines.append("slowest: " + ", ".join(f"{r['task']} {duration(r['duration'])}" for r in slowest))
    for record in records:
        if record["outcome"] == "failed" and record.get("log"):
            log = Path(record["log"])
            real = log.resolve() if log.exists() else log
            lines.append(f"failed: {record['task']}; log {project.relative(real)}; its last 20 lines:")
            try:
                lines += ["  | " + plain(text) for text in real.read_text(errors="replace").splitlines()[-20:]]
            except OSError:
                lines.append("  (the log is missing)")
        elif record["outcome"] == "failed":
            lines.append(f"failed: {record['task']}")
    if stats_path is not None:
        lines.append(f"stats: {project.relative(stats_path)} (mlbuild stats, mlbuild stats --plot)")
    return lines
