"""Downloads into a cache keyed by sha256: nothing unverified is ever used.

The cache holds <download_dir>/<sha256>/<file name>. The file name is only a label for
people and messages: it is taken from a URL only when it is a plain, safe name (never
".", ".." or empty), otherwise it is "source". Downloads go to <download_dir>/.partial
first, are retried with backoff when the connection drops (resuming with an HTTP Range
request where the server allows), and enter the cache only once their sha256 is right.
Every download ends (transfer.py): past its deadline, below the minimum rate, or beyond
the source's size (or download_max_size) it is given up on in one line and the next
alternative is tried. A failure leaves no partial file; partial files of runs that died
are removed once nobody has written to them for an hour (the cache may be shared by
several trees).
A URL's user:password@ (a private mirror) is sent to its own origin only, and every URL
is shown redacted (credentials.py).
"""

import fcntl
import hashlib
import http.client
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
from pathlib import Path
from typing import NamedTuple

from mlbuild import credentials
from mlbuild.errors import MlbuildError
from mlbuild.model.models import Recipe, Source
from mlbuild.sources.transfer import CHUNK, GaveUp, Limits, Meter, human, rate

ATTEMPTS = 4  # per URL, within its deadline; waits of BACKOFF, 2 × BACKOFF, 4 × BACKOFF seconds between them
BACKOFF = 1.0
STALE_PARTIAL = 3600  # seconds since a partial file was last written: its download died
FALLBACK_NAME = "source"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,199}")


class CacheError(MlbuildError):
    """The download folder itself cannot be used (read-only, full, wrong file type): no other source helps."""


def _cache_failure(path: Path, error: OSError, doing: str) -> CacheError:
    return CacheError(f"download cache {path}: cannot {doing} ({error.strerror or error}); "
                      "expected a writable folder with free space (download_dir)")


def local_name(url: str) -> str | None:
    """The file name a URL ends in, if it is a plain, safe one; None otherwise."""
    segment = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    return segment if _SAFE_NAME.fullmatch(segment) else None


def cached_file(cache: Path, sha256: str, log=None, size: int | None = None) -> Path | None:
    """The cached file with this checksum (and size, if given), re-verified; a corrupt entry (or one of the wrong
    file type) is removed."""
    folder = cache / sha256
    try:
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            _discard(folder, log, "is not a folder")
            return None
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.is_symlink() or not path.is_file():
                _discard(path, log, "is not a regular file")
            elif size is not None and path.stat().st_size != size:
                _discard(path, log, f"is {path.stat().st_size} bytes, not the recipe's size {size}")
            elif _sha256_of(path) == sha256:
                return path
            else:
                _discard(path, log, "has the wrong sha256")
    except OSError as error:
        raise _cache_failure(folder, error, "read or repair an entry") from None
    return None


def _discard(path: Path, log, why: str) -> None:
    if log:
        log(f"warning: download cache entry {path} {why}: removed, downloading again")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def fetch(recipe: Recipe, cache: Path, mirrors: list[str], log, offline: bool = False, say=None,
          limits: Limits | None = None) -> Path:
    """A verified copy of the recipe's source in the cache, trying each alternative in order.

    offline: only the cache, never the network. say: where the line per downloaded file
    (size, time, rate), the progress of long downloads and the ones given up on go, besides
    the log. limits: the deadline, rate and size every download keeps to (Limits.of(config))."""
    limits = limits or Limits()
    for source in recipe.sources:
        hit = cached_file(cache, source.sha256, log, source.size)
        if hit:
            log(f"cached: {hit}")
            return hit
    if offline:
        raise MlbuildError(f"fetch:{recipe.name}: offline, and not in the download cache {cache}: "
                           + describe_missing(recipe) + f"; {HOW_TO_GET}")
    label = f"fetch:{recipe.name}"

    def report(line: str) -> None:
        log(line)
        if say:
            say(f"{label}: {line}")
    failures = []
    for source in recipe.sources:
        for where, get in _alternatives(source, mirrors, cache, limits):
            log(f"trying {where}")
            try:
                started = time.monotonic()
                path = get(source.sha256, report)
                report(f"got {path.name} from {where}: {human(path.stat().st_size)} in "
                       f"{time.monotonic() - started:.2f} s ({rate(path.stat().st_size, time.monotonic() - started)})")
                return path
            except CacheError as error:
                raise MlbuildError(f"fetch:{recipe.name}: {error}") from None
            except GaveUp as error:  # one line on the console too: the next alternative is tried now
                report(f"gave up on {where}: {error}")
                failures.append(f"{where}: gave up: {error}")
            except MlbuildError as error:
                log(f"  failed: {error}")
                failures.append(f"{where}: {error}")
    raise MlbuildError(f"fetch:{recipe.name}: every source failed: " + "; ".join(failures))


HOW_TO_GET = ("get them with `doit fetch` on a connected machine (same download_dir), "
              "or `mlbuild mirror <folder>` there and mirrors = [\"file:///<folder>\"] here")


def describe_missing(recipe: Recipe) -> str:
    """How a message names a recipe's source that is not cached: its file name and sha256 (each alternative)."""
    return f"{recipe.name}: " + " or ".join(f"{missing_name(source)} (sha256 {source.sha256})" for source in recipe.sources)


def missing_name(source: Source) -> str:
    """The name a message gives a source that is not cached: the URL's file, or Debian's orig tarball's."""
    names = source_names(source) or [FALLBACK_NAME]
    return names[0] if source.url else f"{names[0].rsplit('.', 1)[0]}.* (Debian {source.debian})"


def source_names(source: Source) -> list[str]:
    """The file names a mirror holds a source under: the URL's, or Debian's orig tarball's (by compression)."""
    if source.url:
        name = local_name(source.url)
        return [name] if name else []
    package, _, version = source.debian.partition("=")
    upstream = version.split(":", 1)[-1].rsplit("-", 1)[0]  # no epoch, no Debian revision
    return [f"{package}_{upstream}.orig.tar.{ext}" for ext in ("xz", "gz", "bz2")]


def _alternatives(source: Source, mirrors: list[str], cache: Path, limits: Limits):
    names = source_names(source)
    mirrored = [(f"{mirror.rstrip('/')}/{name}", name) for name in names for mirror in mirrors]
    # Each alternative is named by its URL redacted: messages and logs never hold a password.
    if source.url:
        filename = names[0] if names else None
        yield credentials.redact(source.url), lambda sha, say: download(source.url, filename or FALLBACK_NAME, sha, cache, say=say,
                                                                        limits=limits, size=source.size)
    # A mirror is asked for the same file name; for a Debian source before apt, which is slow and needs the archive.
    for url, name in mirrored:
        yield credentials.redact(url), lambda sha, say, url=url, name=name: download(url, name, sha, cache, say=say,
                                                                                     limits=limits, size=source.size)
    if source.debian:
        yield f"Debian source {source.debian}", lambda sha, say: debian_orig(source.debian, sha, cache)


def download(url: str, filename: str, sha256: str | None, cache: Path, attempts: int = ATTEMPTS, backoff: float = BACKOFF,
             say=None, limits: Limits | None = None, size: int | None = None) -> Path:
    """Download url into the cache under sha256/filename, retrying and resuming; nothing is left on failure.

    Within limits (a deadline, a minimum rate, at most size bytes, else limits.max_size): GaveUp otherwise.
    sha256 None: a source nobody has a checksum of yet (`mlbuild new`): it enters the cache under its own."""
    if not _SAFE_NAME.fullmatch(filename):
        raise MlbuildError(f"refusing the cache file name {filename!r}: expected a plain file name")
    partial_dir = cache / ".partial"
    try:
        partial_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(partial_dir)
        handle, name = tempfile.mkstemp(dir=partial_dir, prefix=f"{(sha256 or 'new')[:16]}-")
        # Locked until it is admitted or removed (a descriptor of its own: the writer's closes before the
        # checksum is taken): another run's or thread's clean-up of stale partial files, judged by its own
        # clock, which may be set differently, leaves it alone.
        lock = os.open(name, os.O_RDONLY)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        raise _cache_failure(partial_dir, error, "create a file") from None
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, \
                Meter(limits or Limits(), size, "the recipe's size", say, filename) as meter:
            _transfer(url, out, partial, attempts, backoff, meter, say)
        if size is not None and meter.received != size:
            raise MlbuildError(f"{filename}: expected {size} bytes (the recipe's size), got {meter.received}")
        return _admit(partial, filename, sha256, cache)
    finally:
        partial.unlink(missing_ok=True)  # gone already when it was admitted
        os.close(lock)


def _remove_stale_partials(folder: Path) -> None:
    now = time.time()
    for path in folder.iterdir():
        try:
            if now - path.lstat().st_mtime <= STALE_PARTIAL:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif not _in_use(path):
                path.unlink()
        except FileNotFoundError:  # another run cleaned it first
            pass


def _in_use(path: Path) -> bool:
    """Whether a download still writes this partial file (it holds the file's lock)."""
    try:
        with open(path, "rb") as partial:
            fcntl.flock(partial, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def _transfer(url: str, out, partial: Path, attempts: int, backoff: float, meter: Meter, say=None) -> None:
    """Write url's content to out: retry a dropped connection, resume with Range if the server can; all under meter.

    say(line): a redirect to another origin, which is followed without the URL's credentials."""
    last = "no attempt"
    for attempt in range(attempts):
        if attempt:
            meter.pause(backoff * 2 ** (attempt - 1))
        headers = {"User-Agent": "mlbuild"}
        if meter.received:
            headers["Range"] = f"bytes={meter.received}-"
        meter.new_attempt()
        try:
            with meter.open(credentials.request(url, headers), say) as response:
                resumed = getattr(response, "status", None) == 206 and \
                    response.headers.get("Content-Range", "").startswith(f"bytes {meter.received}-")
                if meter.received and not resumed:  # the server sends the whole file again
                    _write(out, partial, None)
                    meter.restart()
                length = response.headers.get("Content-Length")
                length = int(length) if length is not None and length.isdigit() else None
                meter.expect(length)
                body = 0
                while chunk := meter.read(response):
                    _write(out, partial, chunk)
                    body += len(chunk)
                # read gives b"" when the connection drops: only the announced length tells.
                if length is not None and body < length:
                    raise http.client.IncompleteRead(b"", length - body)
            return
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            meter.check()  # the meter cut the connection: its reason, not the socket's
            last = _retryable(error, meter, out, partial)
    raise MlbuildError(f"download failed after {attempts} attempts ({last})")


def _retryable(error: Exception, meter: Meter, out, partial: Path) -> str:
    """What went wrong with an attempt, if another attempt may help; MlbuildError if not."""
    if isinstance(error, urllib.error.HTTPError):
        last = f"HTTP {error.code} {error.reason}"
        error.close()
        if error.code == 416 and meter.received:  # the range was refused: start over
            _write(out, partial, None)
            meter.restart()
        elif error.code < 500 and error.code not in (408, 429):
            raise MlbuildError(f"download failed ({last})") from None
        return last
    if isinstance(error, urllib.error.URLError):
        if not isinstance(error.reason, (TimeoutError, ConnectionResetError, ConnectionAbortedError)):
            raise MlbuildError(f"download failed ({error.reason})") from None
        return str(error.reason)
    if isinstance(error, (http.client.HTTPException, ConnectionError, TimeoutError)):
        return f"connection dropped after {meter.received} bytes ({type(error).__name__})"
    if isinstance(error, ValueError):  # not a URL urllib can open
        raise MlbuildError(f"download failed ({error})") from None
    raise MlbuildError(f"download failed ({error.strerror or error})") from None  # a file:// URL that cannot be read


def _write(out, partial: Path, chunk: bytes | None) -> None:
    """Append chunk to the partial file (None: empty it); a failure here is the cache's, not the server's."""
    try:
        if chunk is None:
            out.seek(0)
            out.truncate()
        else:
            out.write(chunk)
    except OSError as error:
        raise _cache_failure(partial.parent, error, "write a download") from None


def _admit(candidate: Path, filename: str, sha256: str | None, cache: Path) -> Path:
    """Move a downloaded file into the cache if its checksum is right (None: under its own); delete it otherwise."""
    try:
        actual = _sha256_of(candidate)
    except OSError as error:
        raise _cache_failure(candidate.parent, error, "read a download") from None
    sha256 = sha256 or actual
    if actual != sha256:
        candidate.unlink()
        raise MlbuildError(f"sha256 mismatch for {filename}: expected {sha256}, got {actual}")
    folder = cache / sha256
    final = folder / filename
    try:
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            folder.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)  # a damaged entry: os.replace cannot put a file over a folder
        os.replace(candidate, final)
    except OSError as error:
        raise _cache_failure(folder, error, "store a download") from None
    return final


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# --- Debian's source archive -------------------------------------------------
# A private apt state (its own deb-src list, derived from the machine's own
# binary sources) so that nothing in /etc is changed and no root is needed.

def _deb_src_lists() -> str:
    text = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        stanza = path.read_text()
        if re.search(r"^Types:.*\bdeb\b", stanza, re.M):
            text.append(re.sub(r"^Types:.*$", "Types: deb-src", stanza, flags=re.M))
    return "\n".join(text)


def _one_line_lists() -> str:
    lines = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.is_file():
            lines += [re.sub(r"^deb\s", "deb-src ", line) for line in path.read_text().splitlines() if line.startswith("deb ")]
    return "\n".join(lines) + "\n"


def _apt(cache: Path) -> list[str]:
    root = cache / ".apt"
    (root / "sources.list.d").mkdir(parents=True, exist_ok=True)
    (root / "state" / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "sources.list.d" / "derived.sources").write_text(_deb_src_lists())
    (root / "sources.list").write_text(_one_line_lists())
    options = {
        "Dir::Etc::SourceList": root / "sources.list",
        "Dir::Etc::SourceParts": root / "sources.list.d",
        "Dir::State": root / "state",
        "Dir::Cache": root / "cache",
        "Debug::NoLocking": "1",
        "APT::Sandbox::User": "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
    }
    return ["apt-get", "-q"] + [item for key, value in options.items() for item in ("-o", f"{key}={value}")]


def debian_orig(package: str, sha256: str, cache: Path) -> Path:
    if not shutil.which("apt-get"):
        raise MlbuildError("apt-get is not installed (needed for Debian source packages)")
    try:
        return _debian_orig(package, sha256, cache)
    except OSError as error:  # apt's private state lives in the cache
        raise _cache_failure(cache, error, "keep apt's state") from None


def _debian_orig(package: str, sha256: str, cache: Path) -> Path:
    return _with_apt(cache, lambda apt: _apt_source(apt, package, sha256, cache))


def _with_apt(cache: Path, action):
    """action(apt command) on the private state, its lists updated first when older than a day, and
    once more if action fails on lists that were not fresh."""
    apt = _apt(cache)
    # One apt at a time on the private state (fetches may run in parallel).
    updated = cache / ".apt" / "updated"  # written only after a complete `apt-get update`
    with open(cache / ".apt" / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fresh = updated.exists() and time.time() - updated.stat().st_mtime < 86400
        if not fresh:
            _update(apt, updated)
        try:
            return action(apt)
        except MlbuildError:
            if not fresh:
                raise
            _update(apt, updated)  # the lists may be old: the archive moves on
            return action(apt)


def _update(apt: list[str], updated: Path) -> None:
    updated.unlink(missing_ok=True)
    _run(apt + ["update"], "apt-get update")
    updated.touch()


def _apt_source(apt: list[str], package: str, sha256: str | None, cache: Path, packaging: bool = False):
    """The package's orig tarball admitted to the cache (sha256 None: under its own; apt checked it
    against the archive's signed index). packaging: also debian/copyright of its Debian packaging."""
    with tempfile.TemporaryDirectory(dir=cache) as work:
        _run(apt + ["source", "--download-only", "--tar-only", package], f"apt-get source {package}", cwd=work)
        origs = [path for path in Path(work).iterdir() if ".orig.tar." in path.name]
        if not origs:
            raise MlbuildError(f"apt-get source {package} gave no .orig tarball")
        path = _admit(origs[0], origs[0].name, sha256, cache)
        if not packaging:
            return path
        # --diff-only: the packaging (a few kB; 3.0 (quilt)'s .debian.tar.*, or a 1.0 package's .diff.gz, which has no
        # tarball). Metadata only: without it the recipe asks for the license instead.
        try:
            _run(apt + ["source", "--download-only", "--diff-only", package], f"apt-get source --diff-only {package}", cwd=work)
        except MlbuildError:
            return path, None
        return path, _debian_copyright(Path(work))


class DebianSource(NamedTuple):
    """What `mlbuild new` learns from Debian's archive about a source package: the orig tarball (in the
    cache, under its sha256: apt checked it against the archive's signed index), the package's
    record in the Sources index and its debian/copyright (None when it has none)."""

    path: Path
    record: dict
    copyright: str | None


def debian_new(package: str, cache: Path) -> DebianSource:
    """PACKAGE=VERSION's orig tarball and its metadata, through the private apt state."""
    if not shutil.which("apt-get"):
        raise MlbuildError("apt-get is not installed (needed for Debian source packages)")
    name, _, version = package.partition("=")

    def action(apt: list[str]) -> DebianSource:
        records = _source_records(apt, name)
        record = next((r for r in records if r.get("Version") == version), None)
        if record is None:
            versions = ", ".join(dict.fromkeys(r["Version"] for r in records if "Version" in r)) or "none"
            raise MlbuildError(f"Debian's archive has no source package {package} (versions of {name} there: {versions})")
        path, copyright = _apt_source(apt, package, None, cache, packaging=True)
        return DebianSource(path, record, copyright)
    try:
        return _with_apt(cache, action)
    except OSError as error:
        raise _cache_failure(cache, error, "keep apt's state") from None


def _source_records(apt: list[str], name: str) -> list[dict]:
    """The Sources index's records of a source package (`apt-cache showsrc`): {field: value}, continuation lines joined."""
    result = subprocess.run(["apt-cache", *apt[1:], "showsrc", name], capture_output=True, text=True)
    records, record, key = [], {}, None
    for line in result.stdout.splitlines():
        if not line.strip():
            if record:
                records.append(record)
            record, key = {}, None
        elif line[0] in " \t" and key:
            record[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            record[key] = value.strip()
    return records + ([record] if record else [])


def _debian_copyright(folder: Path) -> str | None:
    """debian/copyright of the Debian packaging tarball apt-get downloaded (3.0 (quilt)); read, never unpacked."""
    import tarfile

    for path in folder.glob("*.debian.tar.*"):
        try:
            with tarfile.open(path) as archive:
                member = archive.getmember("debian/copyright")
                handle = archive.extractfile(member) if member.isfile() else None
                return handle.read(1 << 20).decode("utf-8", "replace") if handle else None
        except (KeyError, tarfile.TarError, OSError, EOFError):
            return None
    return None


def _run(command: list[str], what: str, cwd=None) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise MlbuildError(f"{what} failed: {last}")
