"""`mlbuild cache stats|push|verify|sign|prune|keygen`: look after the artifact caches and their keys."""

import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from mlbuild.errors import InputError
from mlbuild.engine.signature import is_up_to_date
from mlbuild.engine.tree_lock import TreeLock
from mlbuild.engine.cache import MANIFEST, MANIFEST_MAX
from mlbuild.engine.cache.archive import scan_archive
from mlbuild.engine.cache.entry import EntryError
from mlbuild.engine.cache.backends import BackendError, Missing, Unusable
from mlbuild.model.models import SIZE_FORMS
from mlbuild.model.models import parse_size as _parse_size

ORPHAN_AGE = 3600  # an archive without a manifest younger than this may be a push under way


def add_parser(commands) -> None:
    cache = commands.add_parser("cache", help="the artifact caches: stats, push, verify, sign, prune, keygen")
    verbs = cache.add_subparsers(dest="verb", required=True)
    verbs.add_parser("stats", help="hits, misses, faults and bytes moved per cache; entries and size of each")
    verbs.add_parser("push", help="upload every up-to-date task's output that a writable cache lacks")
    verify = verbs.add_parser("verify", help="download and check every entry of every listable cache, and who signed it")
    verify.add_argument("--delete", action="store_true", help="delete the entries that fail (writable caches only)")
    verbs.add_parser("sign", help="sign (cache_signing_key) the entries of every writable, listable cache that no trusted "
                                  "key signed yet, or that lack this key's signature; each archive is checked against its "
                                  "manifest first; entries signed by an untrusted or revoked key are never signed")
    keygen = verbs.add_parser("keygen", help="make an Ed25519 key: writes its secret file (mode 0600, never overwritten) "
                                             "and prints the public key as NAME:BASE64 for cache_trusted_keys")
    keygen.add_argument("name", help="the key's name, with a version: ci-2026a")
    keygen.add_argument("--output", help="the secret key's file (default: ~/.config/mlbuild/keys/NAME.secret)")
    prune = verbs.add_parser("prune", help="evict least recently used entries until each writable cache fits")
    prune.add_argument("--max-size", required=True, help="e.g. 500M, 20GiB, 1.5T (K, M, G, T: powers of 1024; bytes without a unit)")


def run(project, args) -> int:
    if args.verb == "keygen":
        return _keygen(args)
    cache = project.artifact_cache
    cache.say = print
    if not cache:
        print("no artifact cache is configured (configuration key 'cache')")
        return 0
    return {"stats": _stats, "push": _push, "verify": _verify, "sign": _sign, "prune": _prune}[args.verb](project, cache, args)


def _entries(backend) -> dict[str, dict]:
    """{signature: {"keys": [...], "size": bytes, "used": time of its manifest or None}} of a listable backend."""
    found: dict[str, dict] = defaultdict(lambda: {"keys": [], "size": 0, "used": None, "newest": 0.0})
    for item in backend.list():
        signature, _, name = item.key.partition("/")
        entry = found[signature]
        entry["keys"].append(item.key)
        entry["size"] += item.size
        entry["newest"] = max(entry["newest"], item.used)
        if name == MANIFEST:
            entry["used"] = item.used
    return dict(found)


def _stats(project, cache, args) -> int:
    recorded = cache.stats.read()
    for backend in cache.backends:
        counts = recorded.get(backend.name, {})
        mode = "read-write" if backend.writable else "read-only"
        print(f"{backend.name} ({mode}): {counts.get('hits', 0)} hits, {counts.get('misses', 0)} misses, "
              f"{counts.get('faults', 0)} faults, {counts.get('refused', 0)} refused, {counts.get('pushes', 0)} pushes; "
              f"{_human(counts.get('bytes_down', 0))} down, {_human(counts.get('bytes_up', 0))} up")
        if backend.listable:
            try:
                entries = _entries(backend)
            except BackendError as error:
                print(f"  cannot list: {error}")
                continue
            complete = sum(1 for e in entries.values() if e["used"] is not None)
            print(f"  {complete} entries, {_human(sum(e['size'] for e in entries.values()))}")
        else:
            print("  (plain HTTP cannot list its entries: run stats against the server's folder as file://)")
    return 0


def _push(project, cache, args) -> int:
    TreeLock(project.build_dir / ".lock").acquire()  # outputs do not change under us
    project.stamps.refresh()
    pushed = skipped = 0
    for step in project.ordered_steps():
        if not step.artifact or not is_up_to_date(step):
            continue
        stamp = project.stamps.read(step.stamp)
        written = cache.push(step, stamp["inputs"], step.output, stamp["output_hash"], 0.0)
        pushed += bool(written)
        skipped += not written
    print(f"pushed {pushed} task outputs; {skipped} were already in every writable cache (or none is writable)")
    return 0


def _listed(backend) -> dict | None:
    """The backend's entries by signature, or None after one line saying why it cannot list them."""
    try:
        return _entries(backend)
    except BackendError as error:
        print(f"{backend.name}: cannot list: {error}")
        return None


def _verify(project, cache, args) -> int:
    bad = checked = 0
    for backend in cache.backends:
        if not backend.listable:
            print(f"{backend.name}: plain HTTP cannot list its entries; verify the server's folder as file://")
            continue
        entries = _listed(backend)
        if entries is None:
            bad += 1
            continue
        with tempfile.TemporaryDirectory(dir=project.build_dir, prefix=".cache-verify.") as folder:
            for signature, entry in sorted(entries.items()):
                if entry["used"] is None:
                    if time.time() - entry["newest"] > ORPHAN_AGE:
                        print(f"{backend.name}: {signature[:12]}: archive without a manifest (an interrupted push; prune removes it)")
                    continue
                checked += 1
                problem = _check_entry(backend, signature, Path(folder), cache.trust)
                if problem:
                    bad += 1
                    print(f"artifact cache entry {signature[:12]} in {backend.name} {problem}")
                    if args.delete and backend.writable:
                        for key in sorted(entry["keys"], key=lambda k: not k.endswith(MANIFEST)):
                            backend.delete(key)
                        print(f"{backend.name}: {signature[:12]}: deleted")
    print(f"verified {checked} entries: {checked - bad if bad <= checked else 0} good, {bad} bad")
    return 1 if bad else 0


def _check_entry(backend, signature: str, folder: Path, trust) -> str | None:
    """What is wrong with an entry ("unusable: …", "not trusted: …"), or None.

    Its signature first, where the cache requires one; then its archive against its manifest, every member's sha256."""
    from mlbuild.engine.cache.signing import Refused

    try:
        manifest = _manifest(backend, signature)
        if trust.requires(backend):
            envelope = _envelope(backend, manifest)
            if envelope is None:
                raise Refused("unsigned", "it is not signed")
            trust.verify(envelope, manifest, signature)
        _check_archive(backend, manifest, folder)
    except Missing as missing:
        return f"unusable: {missing} is missing"
    except Refused as refused:
        return f"not trusted: {refused}"
    except (EntryError, BackendError, Unusable) as error:
        return f"unusable: {error}"
    return None


def _manifest(backend, signature: str):
    from mlbuild.engine.cache.manifest import parse_manifest

    return parse_manifest(backend.read(f"{signature}/{MANIFEST}", MANIFEST_MAX), signature)


def _envelope(backend, manifest) -> bytes | None:
    """The entry's signature envelope, None if it has none; a damaged object refuses it."""
    from mlbuild.engine.cache.signing import ENVELOPE_MAX, Refused, envelope_key

    try:
        return backend.read(envelope_key(manifest.signature, manifest.archive_sha256), ENVELOPE_MAX)
    except Missing:
        return None
    except Unusable as error:
        raise Refused("malformed", str(error)) from None


def _check_archive(backend, manifest, folder: Path) -> None:
    """Download the entry's archive and check it against its manifest: its sha256 and size, every member's sha256."""
    archive = folder / manifest.archive
    try:
        backend.download(f"{manifest.signature}/{manifest.archive}", archive, manifest.archive_size)
        scan_archive(archive, manifest)
    finally:
        archive.unlink(missing_ok=True)


def _sign(project, cache, args) -> int:
    """Sign what no key signed yet (an entry pushed before signing existed), or add this key's signature to what a
    trusted key signed (a rotation); each archive is checked against its manifest first. Never what an untrusted or
    revoked key signed, nor an entry whose signed statement names another."""
    from mlbuild.engine.cache.signing import Refused, builder, countersign, envelope, envelope_key, statement

    signer, why_not = cache.signer()
    if signer is None:
        raise InputError(f"cache sign: {why_not}")
    signed = countersigned = already = bad = 0
    for backend in cache.backends:
        if not backend.writable or not backend.listable or cache.trust.is_per_user_folder(backend):
            why = ("read-only" if not backend.writable else "plain HTTP cannot list: sign the server's folder as file://"
                   if not backend.listable else "the per-user folder needs no signatures")
            print(f"{backend.name}: skipped ({why})")
            continue
        entries = _listed(backend)
        if entries is None:
            bad += 1
            continue
        with tempfile.TemporaryDirectory(dir=project.build_dir, prefix=".cache-sign.") as folder:
            for signature, entry in sorted(entries.items()):
                if entry["used"] is None:
                    continue  # no manifest: an interrupted push (prune removes it) or one under way
                try:
                    manifest = _manifest(backend, signature)
                    data = _envelope(backend, manifest)
                    if data is not None:
                        vouched = cache.trust.verify(data, manifest, signature)  # Refused: never signed over
                        if signer.name in _keyids(data):
                            already += 1
                            continue
                    _check_archive(backend, manifest, Path(folder))  # before any signature: only what is whole
                    key = envelope_key(signature, manifest.archive_sha256)
                    if data is not None:
                        backend.upload(key, countersign(data, signer))
                        countersigned += 1
                        print(f"{backend.name}: {signature[:12]} ({manifest.task}): {signer.name}'s signature added beside {vouched.key}'s")
                    else:
                        made = statement(manifest.model_dump(), builder(), manifest.created, signed_later=True)
                        backend.upload(key, envelope(made, signer))
                        signed += 1
                        print(f"{backend.name}: {signature[:12]} ({manifest.task}): signed by {signer.name}")
                except Missing as missing:
                    problem = f"unusable: {missing} is missing"
                except Refused as refused:
                    problem = f"not trusted: {refused}"
                except (EntryError, BackendError, Unusable) as error:
                    problem = f"unusable: {error}"
                else:
                    continue
                bad += 1
                print(f"artifact cache entry {signature[:12]} in {backend.name} {problem}; not signed")
    print(f"signed {signed} entries, added {signer.name}'s signature to {countersigned}; "
          f"{already} already signed by it; {bad} refused or unusable")
    return 1 if bad else 0


def _keyids(data: bytes) -> set[str]:
    from mlbuild.engine.cache.signing import read_envelope

    return {entry["keyid"] for entry in read_envelope(data)[1]}


def _keygen(args) -> int:
    """A new key: the secret in a file of its own (0600, made anew, never overwritten), the public key on stdout."""
    from mlbuild.engine.cache.signing import generate_key

    secret, public = generate_key(args.name)
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = Path(args.output).expanduser() if args.output else config / "mlbuild" / "keys" / f"{args.name}.secret"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"cache keygen: {path} exists: a key is never overwritten (choose a new name, e.g. the next "
                         "version, or remove the file yourself)") from None
    except OSError as error:
        raise InputError(f"cache keygen: {error.filename or path}: {error.strerror}") from None
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secret + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        path.unlink(missing_ok=True)
        raise InputError(f"cache keygen: {path}: {error.strerror}") from None
    print(public)
    print(f"mlbuild: wrote the secret key {args.name} to {path} (mode 0600): keep it secret (CI: a secret variable, with "
          f'cache_signing_key = "env:MLBUILD_CACHE_KEY"); trust it with cache_trusted_keys = ["{public}"]', file=sys.stderr)
    return 0


def _prune(project, cache, args) -> int:
    limit = parse_size(args.max_size)
    for backend in cache.backends:
        if not backend.writable or not backend.listable:
            print(f"{backend.name}: skipped ({'read-only' if not backend.writable else 'plain HTTP cannot list'})")
            continue
        try:
            entries = _entries(backend)
        except BackendError as error:
            print(f"{backend.name}: cannot list: {error}")
            continue
        now = time.time()
        removed = freed = 0
        # Interrupted pushes first, then least recently used (restores touch the manifest; S3: pushed) first.
        order = sorted(entries.items(), key=lambda item: (item[1]["used"] is not None, item[1]["used"] or item[1]["newest"]))
        total = sum(e["size"] for e in entries.values())
        for signature, entry in order:
            orphan = entry["used"] is None and now - entry["newest"] > ORPHAN_AGE
            if total <= limit and not orphan:
                continue
            if entry["used"] is None and not orphan:
                continue  # a push under way
            for key in sorted(entry["keys"], key=lambda k: not k.endswith(MANIFEST)):  # manifest first: never a manifest without its archive
                backend.delete(key)
            total -= entry["size"]
            removed += 1
            freed += entry["size"]
        print(f"{backend.name}: removed {removed} entries ({_human(freed)}); {_human(total)} left (limit {_human(limit)})")
    return 0


def parse_size(text: str) -> int:
    """--max-size's bytes; anything but SIZE_FORMS is one line (5ib is not 5 bytes)."""
    try:
        return _parse_size(text)
    except ValueError:
        raise InputError(f"cache prune: --max-size {text!r}: expected {SIZE_FORMS}") from None


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
