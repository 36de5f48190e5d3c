"""The artifact cache: task outputs stored by signature, restored instead of rebuilt.

An entry is <signature>/manifest.json beside <signature>/<archive sha256>.tar.zst.
The manifest is written last, so a reader sees a whole entry or none; the archive
is named by its own hash, so two builds pushing the same signature at once (even
with different bytes, for a build that is not reproducible) never pair a manifest
with another push's archive. The backends (a local folder, WebDAV/HTTP, S3) are
tried in the configured order; a backend that fails is reported once, in one
line, and skipped for the rest of the run: the build goes on locally.
"""

import json
import os
import sys
import threading
import time
from pathlib import Path

from mlbuild.errors import MlbuildError
from mlbuild.trees import remove_tree, write_atomic
from mlbuild.engine.signature import signature_of
from mlbuild.engine.cache.archive import EntryError, check_archive, make_manifest, manifest_bytes, pack, parse_manifest, restore, tree_entries

MANIFEST = "manifest.json"


def entry_keys(signature: str, manifest: dict | None = None) -> tuple[str, str | None]:
    return f"{signature}/{MANIFEST}", (f"{signature}/{manifest['archive']}" if manifest else None)


class Stats:
    """Hits, misses, faults and bytes moved per backend, kept in build/cache/artifact-stats.json."""

    FIELDS = ("hits", "misses", "faults", "pushes", "bytes_down", "bytes_up")

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError):
            return {}

    def add(self, backend: str, **counts: int) -> None:
        with self._lock:
            data = self.read()
            record = data.setdefault(backend, dict.fromkeys(self.FIELDS, 0))
            for key, value in counts.items():
                record[key] = record.get(key, 0) + value
            try:
                write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True).encode())
            except OSError:
                pass  # statistics never fail a build


class ArtifactCache:
    def __init__(self, specs: list[str], stats_path: Path, say=None):
        # The backends (urllib, http.client and ssl) load only when a task really runs: not on a no-op.
        from mlbuild.engine.cache.backends import BackendError, open_backend

        self.backends = []
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._disabled: set[str] = set()
        self._lock = threading.Lock()
        for spec in specs:
            try:
                self.backends.append(open_backend(spec, self.say))
            except BackendError as error:
                raise MlbuildError(f"configuration: cache: {error}") from None
        self.stats = Stats(stats_path)

    def __bool__(self):
        return bool(self.backends)

    def _usable(self, backend) -> bool:
        with self._lock:
            return backend.name not in self._disabled

    def _fault(self, backend, error, task: str) -> None:
        """One line per fault; a backend that is down or refuses us is skipped from now on."""
        self.stats.add(backend.name, faults=1)
        with self._lock:
            if backend.name in self._disabled:
                return
            if error.unreachable:
                self._disabled.add(backend.name)
        suffix = "; not used again in this run" if error.unreachable else ""
        self.say(f"{task}: artifact cache {error}{suffix}; building locally" if task else f"artifact cache {error}{suffix}")

    def restore(self, step, inputs: dict, staging: Path, log) -> tuple[str, str] | None:
        """Look the task up in each backend in order; on a verified hit, its output is in staging.

        Returns (backend name, output hash) or None (then staging does not exist)."""
        from mlbuild.engine.cache.backends import BackendError, Missing
        signature = signature_of(inputs)
        manifest_key, _ = entry_keys(signature)
        for backend in self.backends:
            if not self._usable(backend):
                continue
            try:
                manifest = parse_manifest(backend.read(manifest_key), signature)
            except Missing:
                self.stats.add(backend.name, misses=1)
                continue
            except BackendError as error:
                self._fault(backend, error, step.name)
                continue
            except EntryError as error:
                self._bad_entry(backend, step, signature, error, log)
                continue
            archive_key = entry_keys(signature, manifest)[1]
            download = staging.with_name(f".{staging.name}.{manifest['archive_sha256'][:12]}.tar.zst.tmp")
            started = time.monotonic()
            try:
                size = backend.download(archive_key, download)
                check_archive(download, manifest)
                restore(download, staging, manifest, step.output_hash, f"{step.name}: cache entry {signature[:12]}",
                        step.restore_modes)
            except Missing:
                self._bad_entry(backend, step, signature, EntryError("its manifest names an archive that is not there"), log)
                continue
            except BackendError as error:
                self._fault(backend, error, step.name)
                continue
            except EntryError as error:
                self._bad_entry(backend, step, signature, error, log)
                continue
            except OSError as error:  # our disk: full, read-only, …
                self.stats.add(backend.name, faults=1)
                self.say(f"{step.name}: cannot restore from {backend.name}: {error.strerror or error} ({error.filename or staging.parent}); building locally")
                remove_tree(staging)
                continue
            finally:
                download.unlink(missing_ok=True)
            backend.touch(manifest_key)
            self.stats.add(backend.name, hits=1, bytes_down=size)
            log(f"# restored from {backend.name} (entry {signature[:12]}, {size} bytes, {time.monotonic() - started:.1f} s)")
            return backend.name, manifest["output_hash"]
        return None

    def holder(self, inputs: dict) -> str | None:
        """The first backend that has an entry for these inputs (its manifest only: nothing is downloaded), or None.

        For `mlbuild graph` and the progress ETA: a fault counts as not there, quietly."""
        from mlbuild.engine.cache.backends import BackendError
        manifest_key, _ = entry_keys(signature_of(inputs))
        for backend in self.backends:
            try:
                if self._usable(backend) and backend.exists(manifest_key):
                    return backend.name
            except BackendError:
                continue
        return None

    # --- what the manifests tell the progress ETA (local caches only: a remote one costs a request each) ---

    def _local_roots(self) -> list[Path]:
        from mlbuild.engine.cache.backends import FileBackend
        return [backend.root for backend in self.backends if isinstance(backend, FileBackend) and self._usable(backend)]

    def build_times(self, tasks: set[str], budget: float = 0.5) -> dict[str, float]:
        """{task (its stamp name): how long its newest build took}, from the manifests of the local caches.

        A tree without history of its own (a fresh clone) takes its ETA from them. The newest manifests
        (last used or written) are read first, until every task is found or `budget` seconds are spent."""
        manifests = []
        for root in self._local_roots():
            try:
                manifests += [(path.stat().st_mtime, path) for path in root.glob(f"*/{MANIFEST}")]
            except OSError:
                continue
        found: dict[str, float] = {}
        deadline = time.monotonic() + budget
        for _, path in sorted(manifests, reverse=True):
            if found.keys() >= tasks or time.monotonic() > deadline:
                break
            try:
                manifest = json.loads(path.read_bytes())
                task, seconds = manifest.get("task"), manifest.get("build_seconds")
            except (OSError, ValueError, AttributeError):
                continue  # a damaged entry: the restore says so, not the ETA
            if task in tasks and task not in found and isinstance(seconds, (int, float)) and 0 <= seconds < 1e7:
                found[task] = float(seconds)
        return found

    def local_entry(self, inputs: dict) -> tuple[int, str] | None:
        """(archive size, output hash) of the entry a local cache holds for these inputs (a restore to
        come), or None. Read, not verified: the restore verifies; the ETA only guesses with it."""
        manifest_key, _ = entry_keys(signature_of(inputs))
        for root in self._local_roots():
            try:
                manifest = json.loads((root / manifest_key).read_bytes())
                size, output_hash = manifest.get("archive_size"), manifest.get("output_hash")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(size, int) and size >= 0 and isinstance(output_hash, str):
                return size, output_hash
        return None

    def _bad_entry(self, backend, step, signature: str, error: EntryError, log) -> None:
        self.stats.add(backend.name, faults=1)
        line = f"{step.name}: artifact cache {backend.name}: entry {signature[:12]} is unusable: {error}; building locally"
        log(f"# {line}")
        self.say(line)

    def push(self, step, inputs: dict, output: Path, output_hash: str, seconds: float, task: str = "") -> list[str]:
        """Store a built output in every writable backend that lacks it; returns the backends written."""
        from mlbuild.engine.cache.backends import BackendError
        writable = [b for b in self.backends if b.writable and self._usable(b)]
        if not writable:
            return []
        signature = signature_of(inputs)
        manifest_key, _ = entry_keys(signature)
        targets = []
        for backend in writable:
            try:
                if not backend.exists(manifest_key):
                    targets.append(backend)
            except BackendError as error:
                self._fault(backend, error, task or step.name)
        if not targets:
            return []
        archive = output.with_name(f".{output.name}.push.{os.getpid()}.{threading.get_ident()}.tar.zst.tmp")
        try:
            entries = tree_entries(output, hash_files=False)  # pack() hashes each file as it reads it
            archive_sha256 = pack(output, archive, entries)
            manifest = make_manifest(step, signature, output_hash, entries, archive_sha256, archive.stat().st_size, seconds)
            archive_key = entry_keys(signature, manifest)[1]
            written = []
            for backend in targets:
                try:
                    backend.upload(archive_key, archive)
                    backend.upload(manifest_key, manifest_bytes(manifest))  # last: the entry exists from now on
                except BackendError as error:
                    self._fault(backend, error, task or step.name)
                    continue
                self.stats.add(backend.name, pushes=1, bytes_up=manifest["archive_size"])
                written.append(backend.name)
            return written
        except (OSError, MlbuildError) as error:
            self.say(f"{task or step.name}: not pushed to the artifact cache: {getattr(error, 'strerror', None) or error}")
            return []
        finally:
            archive.unlink(missing_ok=True)


def restore_or_run(step, inputs: dict, staging: Path, log) -> tuple[str, str] | None:
    """Fill staging from the artifact cache, or else by running the step.

    Returns (the cache's name, the verified output hash) when restored, None when built."""
    cache = step.project.artifact_cache if step.artifact else None
    if cache:
        remove_tree(staging)  # a restore unpacks into a folder that does not exist yet
        restored = cache.restore(step, inputs, staging, log)
        if restored:
            return restored  # the reporter says it, from the stamp's restored_from
        staging.mkdir(parents=True, exist_ok=True)
    step.run(staging, log)
    return None


def push_built(step, inputs: dict, output_hash: str, seconds: float) -> None:
    """After a task was built (and stamped), store its output in the writable caches; a failure is one line."""
    cache = step.project.artifact_cache if step.artifact else None
    if cache:
        cache.push(step, inputs, step.output, output_hash, seconds)
