"""Task logs kept per run: build/logs/runs/<run id>/<task>.log, a `latest` link, the last N runs.

build/logs/<task>.log stays the place to look: it is a link to the newest log
of that task, whichever run wrote it. A run folder is made when the run's first
task starts, so a run that executes nothing leaves the logs as they are.
"""

import os
import shutil
import threading
import time
from pathlib import Path

from mlbuild.credentials import redact


def new_run_id() -> str:
    """Sortable by time; the pid tells two runs of the same second apart."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"


class RunLogs:
    def __init__(self, folder: Path, run_id: str, keep: int):
        self.folder = folder  # build/logs
        self.run_id = run_id
        self.keep = keep
        self._lock = threading.Lock()
        self._started = False

    @property
    def run_folder(self) -> Path:
        return self.folder / "runs" / self.run_id

    def link(self, task: str) -> Path:
        """The stable name of a task's log: a link to its newest log."""
        return self.folder / (task.replace(":", "_") + ".log")

    def new(self, task: str) -> Path:
        """A fresh log for task in this run's folder; returns its stable name, which now points at it."""
        with self._lock:
            if not self._started:
                self._start_run()
        name = task.replace(":", "_") + ".log"
        (self.run_folder / name).touch()
        _point(self.link(task), Path("runs") / self.run_id / name)
        return self.link(task)

    def _start_run(self) -> None:
        self.run_folder.mkdir(parents=True, exist_ok=True)
        _point(self.folder / "latest", Path("runs") / self.run_id)
        self._started = True
        self.prune()

    def prune(self) -> None:
        """Delete all but the newest `keep` run folders, and links to logs that went with them."""
        runs = sorted(path for path in (self.folder / "runs").iterdir() if path.is_dir())
        for old in runs[:-self.keep]:
            if old.name != self.run_id:
                shutil.rmtree(old, ignore_errors=True)
        for path in self.folder.glob("*.log"):
            if path.is_symlink() and not path.exists():
                path.unlink(missing_ok=True)


def _point(link: Path, target: Path) -> None:
    """Make link point at target (relative), replacing whatever was there in one rename."""
    temporary = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    os.replace(temporary, link)


class Log:
    """A task's log file: call it with a line (a URL's credentials redacted); subprocesses write to .file."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "w")

    def __call__(self, line: str) -> None:
        self.file.write(redact(line.rstrip("\n")) + "\n")
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def tail(self, lines: int = 20) -> list[str]:
        return self.path.read_text(errors="replace").splitlines()[-lines:]
