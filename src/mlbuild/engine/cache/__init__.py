"""The artifact cache: task outputs stored by signature, restored instead of rebuilt.

An entry is <signature>/manifest.json beside <signature>/<archive sha256>.tar.zst.
The manifest is written last, so a reader sees a whole entry or none; the archive
is named by its own hash, so two builds pushing the same signature at once (even
with different bytes, for a build that is not reproducible) never pair a manifest
with another push's archive. The backends (a local folder, WebDAV/HTTP, S3) are
tried in the configured order; a backend that fails is reported once, in one
line, and skipped for the rest of the run: the build goes on locally. An entry that
is unusable (a malformed manifest, a corrupt archive) is one line too; the task is
built, and its push replaces the entry in a writable cache, so the cache heals.
Reads keep to the download limits (sources/transfer.py): a deadline, a minimum rate,
and no more bytes than the manifest says.

Every cache but the per-user folder restores only entries a trusted key signed (signing.py:
<signature>/<archive sha256>.dsse.json, checked before the archive is downloaded); a refusal is
one line per cache and reason, the task builds locally, and nothing of it outlives the run.
A push signs with cache_signing_key; without a usable key it skips the caches that require
signatures (one line each per run) and the build goes on.
"""

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from mlbuild import console
from mlbuild.errors import MlbuildError
from mlbuild.trees import remove_tree, write_atomic
from mlbuild.engine.signature import signature_of
from mlbuild.engine.cache.entry import EntryError
from mlbuild.engine.cache.archive import check_archive, make_manifest, manifest_bytes, pack, restore, tree_entries

MANIFEST = "manifest.json"


MANIFEST_MAX = 64 << 20  # bytes: a manifest lists every file with its sha256; a few MB for the largest output


class Restored(NamedTuple):
    """A verified hit: the cache's name, the output hash the pusher recorded, and (for a signed entry) who vouched."""

    source: str
    output_hash: str
    provenance: dict | None = None


def entry_keys(signature: str, archive: str | None = None) -> tuple[str, str | None]:
    """The keys of an entry's manifest and (given its file name) archive."""
    return f"{signature}/{MANIFEST}", (f"{signature}/{archive}" if archive else None)


class Stats:
    """Hits, misses, faults and bytes moved per backend, kept in build/cache/artifact-stats.json."""

    FIELDS = ("hits", "misses", "faults", "refused", "pushes", "bytes_down", "bytes_up")

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
    def __init__(self, specs: list[str], stats_path: Path, say=None, limits=None, trust=None):
        # The backends (urllib, http.client and ssl) load only when a task really runs: not on a no-op.
        from mlbuild.engine.cache.backends import BackendError, open_backend
        from mlbuild.engine.cache.signing import Trust

        self.backends = []
        self.say = say or (lambda line: console.say(line, sys.stderr))
        self.trust = trust or Trust()  # without one: no key trusted, no key to sign, only the per-user folder restores
        self._disabled: set[str] = set()
        self._unusable: dict[tuple[str, str], str | None] = {}  # (backend, signature): the bad entry's archive key
        self._said: set[tuple[str, str]] = set()  # (backend, reason) said once per run; never kept beyond it
        self._signer: tuple | None = None  # (Signer or None, why not): loaded at the first push that signs
        # (backend, signature): the entry's manifest if a restore would accept it, else None; for the plan and the ETA.
        # In memory only: a verdict must never outlive the run (a fixed key list restores at once).
        self._verdicts: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()
        for spec in specs:
            try:
                self.backends.append(open_backend(spec, limits, self.say))
            except BackendError as error:
                raise MlbuildError(f"configuration: cache: {error}") from None
        self.stats = Stats(stats_path)
        for backend in self.backends:  # one line per cache and run: what is not checked must not go unnoticed
            why = None if self.trust.is_per_user_folder(backend) else self.trust.unchecked_by(backend)
            if why:
                self.say(f"artifact cache: warning: {why}: {backend.name} restores entries without checking who signed "
                         "them; whoever can write there can put outputs into your builds")

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

    def restore(self, step, inputs: dict, staging: Path, log) -> Restored | None:
        """Look the task up in each backend in order; on a verified hit, its output is in staging.

        Returns Restored (backend name, output hash, provenance) or None (then staging does not exist)."""
        from mlbuild.engine.cache.backends import BackendError, Missing, Unusable
        from mlbuild.engine.cache.manifest import parse_manifest
        from mlbuild.engine.cache.signing import Refused
        signature = signature_of(inputs)
        manifest_key, _ = entry_keys(signature)
        for backend in self.backends:
            if not self._usable(backend):
                continue
            try:
                manifest = parse_manifest(backend.read(manifest_key, MANIFEST_MAX), signature)
            except Missing:
                self.stats.add(backend.name, misses=1)
                continue
            except BackendError as error:
                self._fault(backend, error, step.name)
                continue
            except (EntryError, Unusable) as error:
                self._bad_entry(backend, step, signature, error, log)
                continue
            archive_key = entry_keys(signature, manifest.archive)[1]
            provenance = None
            if self.trust.requires(backend):  # before the download: an entry nobody trusted costs one small read
                try:
                    provenance = self._vouched_for(backend, signature, manifest)
                except BackendError as error:
                    self._fault(backend, error, step.name)
                    continue
                except Refused as refused:
                    self._refused(backend, step, signature, refused, log, archive_key)
                    continue
            download = staging.with_name(f".{staging.name}.{manifest.archive_sha256[:12]}.tar.zst.tmp")
            started = time.monotonic()
            try:
                size = backend.download(archive_key, download, manifest.archive_size,
                                        lambda line: self.say(f"{step.name}: artifact cache {backend.name}: {line}"))
                check_archive(download, manifest)
                restore(download, staging, manifest, step.output_hash, f"{step.name}: cache entry {signature[:12]}",
                        step.restore_modes)
            except Missing:
                self._bad_entry(backend, step, signature, EntryError("its manifest names an archive that is not there"), log)
                continue
            except BackendError as error:
                self._fault(backend, error, step.name)
                continue
            except (EntryError, Unusable) as error:
                self._bad_entry(backend, step, signature, error, log, archive_key)
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
            vouched = f", signed by {provenance.key}" if provenance else ""
            log(f"# restored from {backend.name} (entry {signature[:12]}, {size} bytes, {time.monotonic() - started:.1f} s{vouched})")
            return Restored(backend.name, manifest.output_hash, provenance.record() if provenance else None)
        return None

    def _vouched_for(self, backend, signature: str, manifest):
        """Who signed this entry, if a trusted key did for this very entry; Refused otherwise (signing.py)."""
        from mlbuild.engine.cache.backends import Missing, Unusable
        from mlbuild.engine.cache.signing import ENVELOPE_MAX, Refused, envelope_key

        try:
            data = backend.read(envelope_key(signature, manifest.archive_sha256), ENVELOPE_MAX)
        except Missing:
            raise Refused("unsigned", "it is not signed") from None
        except Unusable as error:
            raise Refused("malformed", str(error)) from None
        return self.trust.verify(data, manifest, signature)

    def _refused(self, backend, step, signature: str, refused, log, archive_key: str) -> None:
        """One line per cache and reason in a run (each task's log names its own); a push that can sign replaces it."""
        self.stats.add(backend.name, refused=1)
        heal = backend.writable and self._usable(backend) and self.signer()[0] is not None
        with self._lock:
            if heal:
                self._unusable[backend.name, signature] = archive_key
            first = (backend.name, refused.kind) not in self._said
            self._said.add((backend.name, refused.kind))
        hint = " (this cache restores only entries signed by a key in cache_trusted_keys; docs/ci.md)" if refused.kind == "unsigned" else ""
        line = (f"{step.name}: artifact cache entry {signature[:12]} in {backend.name} not trusted: {refused}{hint}; "
                f"building locally{', and the build replaces it' if heal else ''}")
        log(f"# {line}")
        if first:
            self.say(f"{line} (said once for this cache and reason: the other task logs name theirs)")

    def signer(self) -> tuple:
        """(this run's Signer or None, why not): cache_signing_key loaded once per run, its text never shown."""
        with self._lock:
            if self._signer is None:
                try:
                    self._signer = (self.trust.signer(), "")
                except MlbuildError as error:
                    self._signer = (None, str(error))
            return self._signer

    def _say_once(self, backend: str, reason: str, line: str) -> None:
        with self._lock:
            if (backend, reason) in self._said:
                return
            self._said.add((backend, reason))
        self.say(line)

    def holder(self, inputs: dict) -> str | None:
        """The first backend a restore would take this task's entry from, or None; for `mlbuild graph`.

        Nothing is downloaded but what decides it: a cache that requires signatures is asked for the manifest and
        the signature envelope, checked as the restore checks them (a refused entry is not a restore to come);
        another (the per-user folder) whether the manifest exists. A fault counts as not there, quietly."""
        from mlbuild.engine.cache.backends import BackendError
        signature = signature_of(inputs)
        manifest_key, _ = entry_keys(signature)
        for backend in self.backends:
            try:
                if not self._usable(backend):
                    continue
                if self.trust.requires(backend):
                    if self.accepted(backend, signature) is not None:
                        return backend.name
                elif backend.exists(manifest_key):
                    return backend.name
            except BackendError:
                continue
        return None

    def accepted(self, backend, signature: str):
        """The entry's manifest if a restore from this cache would accept it (its manifest well formed and, where
        signatures are required, signed for this very entry by a trusted key that is not revoked), else None.

        The restore's own checks (_vouched_for), without the archive; decided once per run, remembered in memory only."""
        from mlbuild.engine.cache.backends import BackendError, Missing, Unusable
        from mlbuild.engine.cache.manifest import parse_manifest
        from mlbuild.engine.cache.signing import Refused

        key = (backend.name, signature)
        with self._lock:
            if key in self._verdicts:
                return self._verdicts[key]
        try:
            manifest = parse_manifest(backend.read(entry_keys(signature)[0], MANIFEST_MAX), signature)
            if self.trust.requires(backend):
                self._vouched_for(backend, signature, manifest)
        except (Missing, BackendError, EntryError, Unusable, Refused):
            manifest = None  # the restore says why, once, when it meets the entry
        with self._lock:
            self._verdicts[key] = manifest
        return manifest

    # --- what the manifests tell the progress ETA (local caches only: a remote one costs a request each) ---

    def _local_backends(self) -> list:
        from mlbuild.engine.cache.backends import FileBackend
        return [backend for backend in self.backends if isinstance(backend, FileBackend) and self._usable(backend)]

    def build_times(self, tasks: set[str], budget: float = 0.5) -> dict[str, float]:
        """{task (its stamp name): how long its newest build took}, from the manifests of the local caches.

        A tree without history of its own (a fresh clone) takes its ETA from them. The newest manifests
        (last used or written) are read first, until every task is found or `budget` seconds are spent."""
        manifests = []
        for backend in self._local_backends():
            try:
                manifests += [(path.stat().st_mtime, path) for path in backend.root.glob(f"*/{MANIFEST}")]
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
        """(archive size, output hash) of the entry a local cache holds for these inputs and a restore would take
        (a restore to come), or None. Where signatures are required, the entry is checked as the restore checks
        it (accepted): one the restore would refuse is a build, and its time counts. Elsewhere (the per-user
        folder) the manifest is read, not verified: the ETA only guesses with it."""
        signature = signature_of(inputs)
        manifest_key, _ = entry_keys(signature)
        for backend in self._local_backends():
            if self.trust.requires(backend):
                manifest = self.accepted(backend, signature)
                if manifest is not None:
                    return manifest.archive_size, manifest.output_hash
                continue
            try:
                manifest = json.loads((backend.root / manifest_key).read_bytes())
                size, output_hash = manifest.get("archive_size"), manifest.get("output_hash")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(size, int) and size >= 0 and isinstance(output_hash, str):
                return size, output_hash
        return None

    def _bad_entry(self, backend, step, signature: str, error: Exception, log, archive_key: str | None = None) -> None:
        """One line; a writable cache gets this task's build in place of the entry (push), so it heals."""
        self.stats.add(backend.name, faults=1)
        with self._lock:
            self._unusable[backend.name, signature] = archive_key
        heal = "; building locally, and the build replaces it" if backend.writable else "; building locally"
        line = f"{step.name}: artifact cache entry {signature[:12]} in {backend.name} unusable: {error}{heal}"
        log(f"# {line}")
        self.say(line)

    def push(self, step, inputs: dict, output: Path, output_hash: str, seconds: float, task: str = "") -> list[str]:
        """Store a built output in every writable backend that lacks it; returns the backends written.

        Signed with this run's key for every cache but the per-user folder; a cache that requires signatures
        is skipped when there is no usable key (one line per cache and run)."""
        from mlbuild.engine.cache.backends import BackendError
        from mlbuild.engine.cache.signing import builder, envelope, envelope_key, statement
        writable = [b for b in self.backends if b.writable and self._usable(b)]
        signs = [b for b in writable if not self.trust.is_per_user_folder(b)]
        signer, why_not = self.signer() if signs and (self.trust.signing_key or any(map(self.trust.requires, signs))) else (None, "")
        for backend in signs:
            if signer is None and self.trust.requires(backend):
                writable.remove(backend)
                self._say_once(backend.name, "push-unsigned", f"{task or step.name}: not pushed to artifact cache {backend.name}, "
                               f"which requires signatures: {why_not}; the build goes on (said once for this cache in this run)")
            elif signer is None and why_not and self.trust.signing_key:
                self._say_once(backend.name, "push-unsigned", f"{task or step.name}: pushing unsigned to artifact cache "
                               f"{backend.name}: {why_not} (said once for this cache in this run)")
        if not writable:
            return []
        signature = signature_of(inputs)
        manifest_key, _ = entry_keys(signature)
        targets = []
        for backend in writable:
            try:
                with self._lock:
                    unusable = (backend.name, signature) in self._unusable
                if unusable or not backend.exists(manifest_key):
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
            archive_key = entry_keys(signature, manifest["archive"])[1]
            signed = envelope(statement(manifest, builder(), time.time()), signer) if signer and any(
                not self.trust.is_per_user_folder(b) for b in targets) else None
            written = []
            for backend in targets:
                try:
                    backend.upload(archive_key, archive)
                    if signed and not self.trust.is_per_user_folder(backend):
                        backend.upload(envelope_key(signature, archive_sha256), signed)  # before the manifest, as the archive
                    backend.upload(manifest_key, manifest_bytes(manifest))  # last: the entry exists from now on
                except BackendError as error:
                    self._fault(backend, error, task or step.name)
                    continue
                self._healed(backend, signature, archive_key)
                self.stats.add(backend.name, pushes=1, bytes_up=manifest["archive_size"])
                written.append(backend.name)
            return written
        except (OSError, MlbuildError) as error:
            self.say(f"{task or step.name}: not pushed to the artifact cache: {getattr(error, 'strerror', None) or error}")
            return []
        finally:
            archive.unlink(missing_ok=True)


    def _healed(self, backend, signature: str, archive_key: str) -> None:
        """A good entry replaced an unusable one: its old archive goes (where the backend can delete)."""
        from mlbuild.engine.cache.backends import BackendError
        with self._lock:
            old = self._unusable.pop((backend.name, signature), None)
        if old and old != archive_key and hasattr(backend, "delete"):
            from mlbuild.engine.cache.signing import ENVELOPE_SUFFIX
            try:
                backend.delete(old)
                backend.delete(old.removesuffix(".tar.zst") + ENVELOPE_SUFFIX)  # its envelope, where it had one
            except (BackendError, OSError):
                pass  # prune removes what is left


def restore_or_run(step, inputs: dict, staging: Path, log) -> Restored | None:
    """Fill staging from the artifact cache, or else by running the step.

    Returns Restored (the cache's name, the verified output hash, who signed it) when restored, None when built.
    A task named by rebuild= (`mlbuild rebuild`) is built whatever the cache holds."""
    cache = step.project.artifact_cache if step.artifact else None
    if cache and step.name in step.project.config.rebuild:
        log("# rebuild: built again, not restored from the artifact cache")
        cache = None
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
