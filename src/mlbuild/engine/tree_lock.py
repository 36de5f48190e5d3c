"""One mutating build per build tree: a flock'ed file that says who holds it."""

import fcntl
import os
import stat
import sys
import threading
from pathlib import Path

from mlbuild.console import say
from mlbuild.errors import MlbuildError


class TreeLock:
    """One mutating build per tree: the second one waits, saying for whom."""

    _held: dict[Path, int] = {}
    _mutex = threading.Lock()

    def __init__(self, path: Path):
        self.path = path
        self.previous_holder = ""
        self.waited = False  # whether another run held the lock when this one asked for it

    def acquire(self) -> bool:
        """Hold the lock for the rest of this process; True when it was taken just now."""
        with self._mutex:
            if self.path in self._held:
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_dir() and not self.path.is_symlink() and not any(self.path.iterdir()):
                self.path.rmdir()  # an empty folder in the lock's place: nothing to lose, heal
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise MlbuildError(f"{self.path}: expected a regular file (the tree lock); remove it and run again")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                if os.environ.get("MLBUILD_LOCK_WAIT", "1") == "0":
                    os.close(fd)
                    raise MlbuildError(f"{self.path}: another build is running in this tree (pid {holder})") from None
                say(f"mlbuild: waiting for the build running in this tree (pid {holder}) to finish…", sys.stderr)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self.waited = True
            # Whoever held it before: a run that ended, or one that was killed and may have left builds running.
            self.previous_holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._held[self.path] = fd
            return True
