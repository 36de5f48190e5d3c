"""The build state of mlbuild, independent of doit's DB: stamps, atomic writes, the tree lock.

A task's stamp (build/state/<task>.json) is written last, after its output was
renamed into place, so a task killed at any moment has no valid stamp and runs
again. The stamp holds the task's inputs (to explain a rebuild), their hash
(the signature) and a hash of the output (for early cutoff).
"""

import fcntl
import hashlib
import json
import os
import shutil
import stat
import sys
import threading
from pathlib import Path

from .errors import MlbuildError

ENGINE_FORMAT = "1"  # bump when the meaning of inputs changes: everything rebuilds


def signature_of(inputs: dict) -> str:
    payload = json.dumps({"format": ENGINE_FORMAT, "inputs": inputs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_if_changed(path: Path, text: str) -> bool:
    """Write text unless the file already holds it (nothing downstream sees a new file)."""
    try:
        if path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_atomic(path, text.encode())
    return True


class StampStore:
    """Stamps on disk, with a per-process cache: only this process writes them while it holds the tree lock."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._cache: dict[str, dict | None] = {}
        self._warned: set[str] = set()  # damaged stamps already reported by this process

    def path(self, task: str) -> Path:
        return self.folder / (task.replace(":", "_") + ".json")

    def read(self, task: str) -> dict | None:
        """The task's stamp; None when there is none or it is damaged (said once: the task runs again)."""
        if task not in self._cache:
            path = self.path(task)
            try:
                record = json.loads(path.read_bytes())
                problem = _stamp_problem(record)
            except FileNotFoundError:
                record, problem = None, None
            except (OSError, ValueError) as error:  # not UTF-8, not JSON, a folder, unreadable
                record, problem = None, getattr(error, "strerror", None) or "not a JSON stamp"
            if problem and task not in self._warned:
                self._warned.add(task)
                print(f"mlbuild: warning: {path}: damaged stamp ({problem}); {task} counts as not built and runs again",
                      file=sys.stderr, flush=True)
            if problem:
                record = None
            self._cache[task] = record
        return self._cache[task]

    def write(self, task: str, inputs: dict, output_hash: str, text: str | None = None, restored_from: str | None = None) -> None:
        """Record a finished task; text (its build script) is kept beside it for `mlbuild explain`.

        restored_from names the artifact cache its output came from (None: built here)."""
        if text is not None:
            write_atomic(self.path(task).with_suffix(".sh"), text.encode())
        record = {"task": task, "format": ENGINE_FORMAT, "signature": signature_of(inputs), "inputs": inputs, "output_hash": output_hash}
        if restored_from:
            record["restored_from"] = restored_from
        write_atomic(self.path(task), json.dumps(record, indent=1, sort_keys=True).encode())
        self._cache[task] = json.loads(json.dumps(record))  # exactly what a later read gives

    def read_text(self, task: str) -> str:
        try:
            return self.path(task).with_suffix(".sh").read_text()
        except FileNotFoundError:
            return ""

    def refresh(self) -> None:
        """Drop the cache: called once the tree lock is held, since others may have written before."""
        self._cache.clear()

    def forget(self, task: str) -> None:
        remove_tree(self.path(task))  # a stamp replaced by a folder heals too
        self._cache[task] = None


# What a stamp holds (StampStore.write); anything else is damage.
_STAMP_SHAPE = {"task": str, "format": str, "signature": str, "inputs": dict, "output_hash": str}


def _stamp_problem(record) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    for key, kind in _STAMP_SHAPE.items():
        if not isinstance(record.get(key), kind):
            return f"{key}: expected {'an object' if kind is dict else 'a string'}"
    return None


def hash_tree(root: Path) -> str:
    """A hash of a folder's names, kinds, modes, link targets and contents (not mtimes)."""
    digest = hashlib.sha256()
    for path in sorted(_walk(root)):
        relative = path.relative_to(root).as_posix()
        info = path.lstat()
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            digest.update(f"L {relative} {os.readlink(path)}\n".encode())
        elif stat.S_ISDIR(info.st_mode):
            digest.update(f"D {relative} {mode:o}\n".encode())
        else:
            digest.update(f"F {relative} {mode:o} {hash_file(path)}\n".encode())
    return digest.hexdigest()


def _walk(root: Path):
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            yield Path(folder, name)


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def merge_tree(source: Path, destination: Path, owner: str, owners: dict[str, str]) -> None:
    """Copy a folder into another, refusing a path that an earlier source (in owners) already brought."""
    if not source.is_dir():
        raise MlbuildError(f"{owner}: its output {source} is missing; run again")
    for folder, dirs, names in os.walk(source):
        relative = Path(folder).relative_to(source)
        target_folder = destination / relative
        target_folder.mkdir(exist_ok=True)
        shutil.copymode(folder, target_folder)
        for name in names + [d for d in dirs if Path(folder, d).is_symlink()]:
            key = (relative / name).as_posix()
            if key in owners:
                raise MlbuildError(f"{owner}: installs {key}, which {owners[key]} installs too")
            owners[key] = owner
            src = Path(folder, name)
            if src.is_symlink():
                (target_folder / name).symlink_to(os.readlink(src))
            else:
                shutil.copy2(src, target_folder / name)


def replace_tree(staging: Path, final: Path) -> None:
    """Put staging where final is: the old tree is moved aside first, then deleted."""
    old = final.with_name(f".{final.name}.old")
    remove_tree(old)
    if final.exists() or final.is_symlink():
        os.replace(final, old)
    os.replace(staging, final)
    remove_tree(old)


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
                print(f"mlbuild: waiting for the build running in this tree (pid {holder}) to finish…", file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self.waited = True
            # Whoever held it before: a run that ended, or one that was killed and may have left builds running.
            self.previous_holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._held[self.path] = fd
            return True
