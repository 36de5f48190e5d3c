"""Child processes of tasks: each in its own process group, stopped with the run that started it.

A task's commands run in a session of their own, so a terminal's Ctrl-C does not
reach them directly: the run's SIGINT/SIGTERM handler stops every group still
running (also those started by doit's worker threads under `-n 2`) and remembers
which tasks it interrupted. A group's id is written to `<work>/.pgid` while it
runs, so a later run finds what a killed run (SIGKILL leaves no handler) left
behind and stops it before anything else happens in the tree.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mlbuild.console import say

_lock = threading.Lock()
_groups: dict[int, str] = {}  # pgid -> task of every group running now
_running: set[str] = set()  # tasks whose action runs now (with or without a child process)
_interrupted: list[str] = []  # tasks running when the run was interrupted
_interrupt = threading.Event()


class Interrupted(KeyboardInterrupt):
    """Raised in a task whose processes were stopped by the run's interrupt."""


def interrupted_tasks() -> list[str]:
    return list(_interrupted)


class running_task:
    """Context manager: the task counts as running (named if the run is interrupted)."""

    def __init__(self, task: str):
        self.task = task

    def __enter__(self):
        with _lock:
            _running.add(self.task)
        return self

    def __exit__(self, *exc):
        with _lock:
            _running.discard(self.task)


def run_in_group(command: list[str], task: str, cwd: Path, env: dict | None, stdout, pgid_file: Path | None = None,
                 stdin: Path | None = None, pass_fds: tuple[int, ...] = ()) -> int:
    """Run command in a new session (its own process group); on any interruption the whole group is stopped.

    stdin: a file it reads (sfdisk's script), else nothing; pass_fds: open files the command inherits (the job
    pool's pipe, jobserver.py)."""
    if _interrupt.is_set():
        raise Interrupted()
    if pgid_file is not None:
        # The group's own first step names it, before the command runs at all: written by this
        # process after Popen returns, a run killed in between would leave a group nobody can find.
        command = ["/bin/sh", "-c", 'echo "$$ $1" > "$2" && shift 2 && exec "$@"', "sh", task, str(pgid_file), *command]
    with open(stdin, "rb") if stdin is not None else open(os.devnull, "rb") as source:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=source, stdout=stdout, stderr=subprocess.STDOUT,
            start_new_session=True, pass_fds=pass_fds,
        )
    with _lock:
        _groups[process.pid] = task
    try:
        status = wait_counted(process)
    except BaseException:
        kill_group(process.pid)
        process.wait()
        raise
    finally:
        with _lock:
            _groups.pop(process.pid, None)
        if pgid_file is not None:
            pgid_file.unlink(missing_ok=True)
    if _interrupt.is_set():
        raise Interrupted()
    return status


_reaped = threading.local()


def thread_children() -> list[tuple[float, int]]:
    """(CPU seconds, peak RSS in kB) of each child this thread reaped, in order: a task's cost (stats.py).

    Per thread: with -n 2 two tasks run in two threads, and their children must not mix."""
    if not hasattr(_reaped, "children"):
        _reaped.children = []
    return _reaped.children


def wait_counted(process: subprocess.Popen) -> int:
    """Popen.wait, keeping the child's resource usage (which includes every descendant it waited for) in
    this thread's tally, so that the task's CPU time in the statistics includes it."""
    if process.returncode is not None:
        return process.returncode  # reaped (and counted) already
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    thread_children().append((usage.ru_utime + usage.ru_stime, usage.ru_maxrss))
    return process.returncode


def kill_group(pgid: int) -> None:
    """SIGTERM, up to 2 s to exit, then SIGKILL and up to 10 s more: nothing of the group runs on after it."""
    kill_groups([pgid])


def kill_groups(pgids: list[int]) -> None:
    for sig, seconds in ((signal.SIGTERM, 2), (signal.SIGKILL, 10)):
        alive = []
        for pgid in pgids:
            try:
                os.killpg(pgid, sig)
                alive.append(pgid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + seconds
        while alive and time.monotonic() < deadline:
            alive = [pgid for pgid in alive if group_running(pgid)]
            if alive:
                time.sleep(0.05)
        pgids = alive
        if not pgids:
            return


def group_running(pgid: int) -> bool:
    """Whether a process of the group still runs; a zombie (dead, not yet reaped by its parent) does not."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_leftover(work: Path) -> str | None:
    """Stop the group a killed run left running in this work folder; the task it ran, if any was stopped."""
    pgid_file = work / ".pgid"
    try:
        words = pgid_file.read_text().split()
        pgid, task = int(words[0]), (words[1] if len(words) > 1 else work.name)
    except (OSError, ValueError, IndexError):
        pgid_file.unlink(missing_ok=True) if pgid_file.is_file() else None
        return None
    stopped = None
    try:
        environ = Path(f"/proc/{pgid}/environ").read_bytes()
    except OSError:
        environ = b""
    # Only a group that really builds in this folder: the pid may have been reused since.
    if f"WORK={work}".encode() in environ.split(b"\0") and group_running(pgid):
        kill_group(pgid)
        stopped = task
    pgid_file.unlink(missing_ok=True)
    return stopped


def stop_leftovers(work_folders: list[Path], previous_holder: str) -> list[str]:
    """At the start of a run: stop what a dead earlier run (previous_holder, from the lock file) left running."""
    stopped = []
    for folder in work_folders:
        try:
            candidates = [path.parent for path in folder.glob("*/.pgid")]
        except OSError:
            continue
        for work in candidates:
            task = stop_leftover(work)
            if task:
                stopped.append(task)
                say(f"mlbuild: stopped {task}, left running by an earlier run (pid {previous_holder or '?'}) that was killed",
                    sys.stderr)
    return stopped


def _on_signal(signum, frame):
    """SIGINT/SIGTERM: stop every running group, remember which tasks were running, end the run."""
    if _interrupt.is_set():
        raise KeyboardInterrupt  # a second Ctrl-C while stopping: just leave
    _interrupt.set()
    with _lock:
        _interrupted[:] = sorted(_running | set(_groups.values()))
        pgids = list(_groups)
    kill_groups(pgids)
    raise KeyboardInterrupt


def _excepthook(kind, value, trace):
    if issubclass(kind, KeyboardInterrupt):
        print(interrupt_message(), file=sys.stderr, flush=True)
        sys.stdout.flush()
        import atexit

        atexit._run_exitfuncs()  # caches are saved as on a normal exit
        os._exit(130)
    _previous_excepthook(kind, value, trace)


_previous_excepthook = sys.excepthook


def interrupt_message() -> str:
    tasks = interrupted_tasks()
    if not tasks:
        return "interrupted; rerun resumes"
    return f"interrupted: {', '.join(tasks)} stopped; rerun resumes"


def install_interrupt_handling() -> None:
    """In the main thread of a run: Ctrl-C and SIGTERM stop every task's processes and end in one line, exit 130."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    sys.excepthook = _excepthook
