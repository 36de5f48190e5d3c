"""Downloads into a cache keyed by sha256: nothing unverified is ever used."""

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import MlbuildError
from .models import Recipe, Source

CHUNK = 1 << 20


def cached_file(cache: Path, sha256: str) -> Path | None:
    """The cached file with this checksum, re-verified; a corrupt entry is removed."""
    folder = cache / sha256
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if _sha256_of(path) == sha256:
            return path
        path.unlink()
    return None


def fetch(recipe: Recipe, cache: Path, mirrors: list[str], log) -> Path:
    """A verified copy of the recipe's source in the cache, trying each alternative in order."""
    for source in recipe.sources:
        hit = cached_file(cache, source.sha256)
        if hit:
            log(f"cached: {hit}")
            return hit
    failures = []
    for source in recipe.sources:
        for where, get in _alternatives(source, mirrors, cache):
            log(f"trying {where}")
            try:
                return get(source.sha256)
            except MlbuildError as error:
                log(f"  failed: {error}")
                failures.append(f"{where}: {error}")
    raise MlbuildError(f"fetch:{recipe.name}: every source failed: " + "; ".join(failures))


def _alternatives(source: Source, mirrors: list[str], cache: Path):
    if source.url:
        filename = source.url.rstrip("/").rsplit("/", 1)[-1]
        yield source.url, lambda sha: download(source.url, filename, sha, cache)
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{filename}"
            yield url, lambda sha, url=url: download(url, filename, sha, cache)
    else:
        yield f"Debian source {source.debian}", lambda sha: debian_orig(source.debian, sha, cache)


def download(url: str, filename: str, sha256: str, cache: Path) -> Path:
    partial_dir = cache / ".partial"
    partial_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=partial_dir, delete=False) as partial:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "mlbuild"})
            with urllib.request.urlopen(request, timeout=60) as response:
                shutil.copyfileobj(response, partial, CHUNK)
        except (urllib.error.URLError, OSError, ValueError) as error:
            os.unlink(partial.name)
            reason = getattr(error, "reason", error)
            raise MlbuildError(f"download failed ({reason})") from None
    return _admit(Path(partial.name), filename, sha256, cache)


def _admit(candidate: Path, filename: str, sha256: str, cache: Path) -> Path:
    """Move a downloaded file into the cache if its checksum is right; delete it otherwise."""
    actual = _sha256_of(candidate)
    if actual != sha256:
        candidate.unlink()
        raise MlbuildError(f"sha256 mismatch for {filename}: expected {sha256}, got {actual}")
    final = cache / sha256 / filename
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(candidate, final)
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
    apt = _apt(cache)
    # One apt at a time on the private state (fetches may run in parallel).
    updated = cache / ".apt" / "updated"  # written only after a complete `apt-get update`
    with open(cache / ".apt" / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fresh = updated.exists() and time.time() - updated.stat().st_mtime < 86400
        if not fresh:
            _update(apt, updated)
        try:
            return _apt_source(apt, package, sha256, cache)
        except MlbuildError:
            if not fresh:
                raise
            _update(apt, updated)  # the lists may be old: the archive moves on
            return _apt_source(apt, package, sha256, cache)


def _update(apt: list[str], updated: Path) -> None:
    updated.unlink(missing_ok=True)
    _run(apt + ["update"], "apt-get update")
    updated.touch()


def _apt_source(apt: list[str], package: str, sha256: str, cache: Path) -> Path:
    with tempfile.TemporaryDirectory(dir=cache) as work:
        _run(apt + ["source", "--download-only", "--tar-only", package], f"apt-get source {package}", cwd=work)
        origs = [path for path in Path(work).iterdir() if ".orig.tar." in path.name]
        if not origs:
            raise MlbuildError(f"apt-get source {package} gave no .orig tarball")
        return _admit(origs[0], origs[0].name, sha256, cache)


def _run(command: list[str], what: str, cwd=None) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise MlbuildError(f"{what} failed: {last}")
