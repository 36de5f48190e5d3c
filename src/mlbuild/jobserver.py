"""One job budget for a whole run: a GNU make jobserver (a pipe of tokens) shared by every task.

A run makes one pool of `jobs` tokens (`shared`). A task that uses the CPU takes one token
for its whole run (`job_slot`: its implicit token, as a top-level make has one); the make of
its build script joins the same pool through MAKEFLAGS (`--jobserver-auth=R,W` with the two
fds inherited: the form GNU make 4.3, Debian 12's, understands; 4.4's `fifo:` form is not
needed while the fds are passed) and starts a second compiler only for a token it read from
the pipe. So two kernels built side by side run `jobs` compilers between them, and when one
task is linking alone its neighbour's make takes the free token: no oversubscription, no idle
core while a make has work. make 4.3 obeys an explicit -jN over a jobserver ("-jN forced in
submake: resetting jobserver mode"), so under the pool build scripts get `MAKE_JOBS` empty
(standalone, as `mlbuild script` writes them: `-j$JOBS`).

ninja 1.11 takes no part in a jobserver. `python -m mlbuild.jobserver ninja … -jN` (what
`$JOBSERVER_HOLD` in front of a command says under the pool) takes up to N-1 tokens that are
free when it starts, runs the command with -j of the tokens it holds (its task's own + those),
and gives them back when it ends. Tasks that cannot take part at all count as one job.

make 4.3 sets O_NONBLOCK on the pipe's read end it inherited (the open file is shared with
this process); the pool sets it itself: a token is read without waiting, and waited for with
select() and a read again.
"""

import os
import re
import select
import subprocess
import sys
import threading
from contextlib import contextmanager

TOKEN = b"+"  # what GNU make writes into its own pool
_AUTH = re.compile(r"--jobserver-auth=(\d+),(\d+)")


class Jobserver:
    """A pipe holding `jobs` tokens; the fds GNU make is handed in MAKEFLAGS."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.read_fd, self.write_fd = os.pipe()  # not inheritable: only children given them as pass_fds see them
        # Non-blocking from the start, as make 4.3 makes it anyway: a read never waits for a token
        # another reader took between select() and read().
        os.set_blocking(self.read_fd, False)
        os.write(self.write_fd, TOKEN * jobs)

    @property
    def fds(self) -> tuple[int, int]:
        return self.read_fd, self.write_fd

    def makeflags(self) -> str:
        """MAKEFLAGS for a build script: what a top-level `make -jN` gives its sub-makes."""
        return f" -j{self.jobs} --jobserver-auth={self.read_fd},{self.write_fd}"

    def acquire(self) -> bytes:
        """A token, waiting for one."""
        return acquire(self.read_fd)

    def release(self, token: bytes) -> None:
        os.write(self.write_fd, token)


def acquire(read_fd: int, wait: bool = True) -> bytes | None:
    """One token from the pool's read end; None at once if none is free and wait is false."""
    while True:
        try:
            token = os.read(read_fd, 1)
        except BlockingIOError:  # make set O_NONBLOCK on the shared read end
            token = None
        except InterruptedError:
            continue
        if token:
            return token
        if token == b"":
            raise OSError("the job pool's pipe was closed")
        if not wait:
            return None
        select.select([read_fd], [], [])  # another waiter may take it first: read again


def _free(read_fd: int) -> bytes | None:
    """A token if one is free now, without waiting."""
    return acquire(read_fd, wait=False)


_lock = threading.Lock()
_pool: Jobserver | None = None


def shared(jobs: int) -> Jobserver:
    """The run's pool: made by the first task that asks, of `jobs` tokens, kept until the process ends."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = Jobserver(jobs)
        return _pool


def current() -> Jobserver | None:
    """The run's pool, if a task made one (a step run outside a doit run has none)."""
    return _pool


_held = threading.local()  # the token this thread's task holds (doit runs each task in one thread)


@contextmanager
def job_slot(jobs: int):
    """Hold one token of the run's pool for the duration: the task's own job."""
    pool = shared(jobs)
    token = pool.acquire()
    _held.token = token
    try:
        yield pool
    finally:
        _held.token = None
        pool.release(token)


@contextmanager
def lent():
    """The thread's token back in the pool for the duration (work that waits on the disk), then taken again."""
    token = getattr(_held, "token", None)
    if token is None or _pool is None:
        yield
        return
    _held.token = None
    _pool.release(token)
    try:
        yield
    finally:
        _held.token = _pool.acquire()


def script_environment(pool: Jobserver | None, python: str) -> dict[str, str]:
    """What a build script sees of the pool: MAKEFLAGS to join it, no -j of its own, ninja's holder."""
    if pool is None:
        return {}
    # An unquoted prefix in the scripts ($JOBSERVER_HOLD ninja …): a path with blanks would split,
    # so such an interpreter holds nothing more (ninja then counts as its task's one job).
    hold = "" if any(char.isspace() for char in python) else f"{python} -m mlbuild.jobserver"
    return {"MAKEFLAGS": pool.makeflags(), "MAKE_JOBS": "", "JOBSERVER_HOLD": hold}


def _with_jobs(command: list[str], jobs: int) -> list[str]:
    """The command with its -jN (or -j N) replaced by -j<jobs>; -j<jobs> added if it had none."""
    out, index, found = [], 0, False
    while index < len(command):
        word = command[index]
        if word == "-j" and index + 1 < len(command):
            out.append(f"-j{jobs}")
            index += 2
            found = True
            continue
        if re.fullmatch(r"-j\d+", word):
            out.append(f"-j{jobs}")
            found = True
        else:
            out.append(word)
        index += 1
    return out if found else [command[0], f"-j{jobs}", *command[1:]]


def _wanted(command: list[str]) -> int:
    for index, word in enumerate(command):
        if word == "-j" and index + 1 < len(command) and command[index + 1].isdigit():
            return int(command[index + 1])
        match = re.fullmatch(r"-j(\d+)", word)
        if match:
            return int(match.group(1))
    return 1


def hold_and_run(command: list[str], makeflags: str) -> int:
    """Run a command that takes no part in the pool with the tokens free now (up to its -j); its exit status."""
    match = _AUTH.search(makeflags or "")
    if not match:
        return subprocess.run(command).returncode
    read_fd, write_fd = int(match.group(1)), int(match.group(2))
    held: list[bytes] = []
    try:
        try:
            while len(held) + 1 < _wanted(command):
                token = _free(read_fd)
                if token is None:
                    break
                held.append(token)
        except OSError:  # fds not inherited: no pool to draw from
            held = []
        return subprocess.run(_with_jobs(command, len(held) + 1)).returncode
    finally:
        if held:
            os.write(write_fd, b"".join(held))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m mlbuild.jobserver COMMAND [ARG…] (its -jN: the most tokens it holds)", file=sys.stderr)
        return 2
    try:
        return hold_and_run(argv, os.environ.get("MAKEFLAGS", ""))
    except FileNotFoundError:
        print(f"mlbuild.jobserver: {argv[0]}: command not found", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
