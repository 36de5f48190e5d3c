"""Files mlbuild keeps for itself in build/ and reads back only if this user's mlbuild wrote them.

The engine's caches (build/cache/recipes.json: the validated recipes; render.json: the hashes
of the rendered scripts) decide signatures on the no-op path. Someone who can write build/ but
not the user's home (a shared or copied tree, a CI workspace restored from elsewhere) could plant
one with the right key and the wrong content. So each file is sealed: its first line is an
HMAC-SHA256 of its content (and of what it is for), keyed with a secret of 32 random bytes that
lives outside every tree: $XDG_CACHE_HOME/mlbuild/build-cache-secret (default ~/.cache/...),
mode 0600, created on first use. A file whose seal does not verify (planted, damaged, written
by another user or by an older mlbuild) is ignored, and the caller writes it anew.

Without a usable secret (no writable home, a secret others can read) nothing is sealed and
nothing is read back: every run parses and renders again — slower, never wrong.
"""

import hashlib
import hmac
import os
import stat
import sys
from pathlib import Path

SECRET_NAME = "build-cache-secret"
SECRET_BYTES = 32
HEADER = b"mlbuild-hmac-sha256 "

_secrets: dict[Path, bytes | None] = {}  # per secret file, read once per process


def secret_path() -> Path | None:
    """Where this user's secret is: under $XDG_CACHE_HOME or ~/.cache (None: no home to keep it in)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except (RuntimeError, KeyError):  # no HOME and no passwd entry
            return None
    return Path(base) / "mlbuild" / SECRET_NAME


def seal(purpose: str, payload: bytes) -> bytes | None:
    """The file's bytes: a seal line, then payload; None when there is no secret to seal with."""
    secret = _secret()
    if secret is None:
        return None
    return HEADER + _mac(secret, purpose, payload).encode() + b"\n" + payload


def unseal(purpose: str, data: bytes) -> bytes | None:
    """The payload of a file seal() wrote for purpose with this user's secret; None for anything else."""
    if not data.startswith(HEADER):
        return None
    line, newline, payload = data.partition(b"\n")
    secret = _secret() if newline else None
    if secret is None:
        return None
    if not hmac.compare_digest(line[len(HEADER):], _mac(secret, purpose, payload).encode()):
        return None
    return payload


def _mac(secret: bytes, purpose: str, payload: bytes) -> str:
    # The purpose too: a sealed render.json renamed to recipes.json does not verify.
    return hmac.new(secret, purpose.encode() + b"\0" + payload, hashlib.sha256).hexdigest()


def _secret() -> bytes | None:
    path = secret_path()
    if path is None:
        return None
    if path not in _secrets:
        _secrets[path] = _read_or_create(path)
    return _secrets[path]


def _read_or_create(path: Path) -> bytes | None:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    except OSError as error:  # a link (O_NOFOLLOW), a folder, no permission
        _warn(path, f"cannot be read ({error.strerror})")
        return None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".{SECRET_NAME}.{os.getpid()}.tmp")
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(handle, os.urandom(SECRET_BYTES))
            os.fsync(handle)
        finally:
            os.close(handle)
        try:
            os.link(temporary, path)  # never replaces a secret another run made first: that one is used
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
        return _read(path)
    except OSError:
        return None  # a read-only or full home: no caches, every run recomputes


def _read(path: Path) -> bytes | None:
    """The secret, if the file is this user's own, readable by nobody else, and whole."""
    handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a link there is refused (ELOOP), not followed
    try:
        info = os.fstat(handle)
        data = os.read(handle, SECRET_BYTES + 1)
    finally:
        os.close(handle)
    problem = ("not a regular file" if not stat.S_ISREG(info.st_mode)
               else f"owned by uid {info.st_uid}, not by this user" if info.st_uid != os.geteuid()
               else f"readable or writable by others (mode {stat.S_IMODE(info.st_mode):04o}; chmod 600 it)" if info.st_mode & 0o077
               else f"{len(data)} bytes, expected {SECRET_BYTES} (remove it: the next run makes a new one)" if len(data) != SECRET_BYTES
               else None)
    if problem:
        _warn(path, problem)
        return None
    return data


def _warn(path: Path, problem: str) -> None:
    print(f"mlbuild: warning: {path}: {problem}; the caches in build/cache are not used until it is fixed",
          file=sys.stderr, flush=True)
