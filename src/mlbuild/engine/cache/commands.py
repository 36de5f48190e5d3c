"""`mlbuild cache stats|push|verify|prune`: look after the artifact caches."""

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
    cache = commands.add_parser("cache", help="the artifact caches: stats, push, verify, prune")
    verbs = cache.add_subparsers(dest="verb", required=True)
    verbs.add_parser("stats", help="hits, misses, faults and bytes moved per cache; entries and size of each")
    verbs.add_parser("push", help="upload every up-to-date task's output that a writable cache lacks")
    verify = verbs.add_parser("verify", help="download and check every entry of every listable cache")
    verify.add_argument("--delete", action="store_true", help="delete the entries that fail (writable caches only)")
    prune = verbs.add_parser("prune", help="evict least recently used entries until each writable cache fits")
    prune.add_argument("--max-size", required=True, help="e.g. 500M, 20GiB, 1.5T (K, M, G, T: powers of 1024; bytes without a unit)")


def run(project, args) -> int:
    cache = project.artifact_cache
    cache.say = print
    if not cache:
        print("no artifact cache is configured (configuration key 'cache')")
        return 0
    return {"stats": _stats, "push": _push, "verify": _verify, "prune": _prune}[args.verb](project, cache, args)


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
              f"{counts.get('faults', 0)} faults, {counts.get('pushes', 0)} pushes; "
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


def _verify(project, cache, args) -> int:
    bad = checked = 0
    for backend in cache.backends:
        if not backend.listable:
            print(f"{backend.name}: plain HTTP cannot list its entries; verify the server's folder as file://")
            continue
        try:
            entries = _entries(backend)
        except BackendError as error:
            print(f"{backend.name}: cannot list: {error}")
            bad += 1
            continue
        with tempfile.TemporaryDirectory(dir=project.build_dir, prefix=".cache-verify.") as folder:
            for signature, entry in sorted(entries.items()):
                if entry["used"] is None:
                    if time.time() - entry["newest"] > ORPHAN_AGE:
                        print(f"{backend.name}: {signature[:12]}: archive without a manifest (an interrupted push; prune removes it)")
                    continue
                checked += 1
                problem = _check_entry(backend, signature, Path(folder))
                if problem:
                    bad += 1
                    print(f"artifact cache entry {signature[:12]} in {backend.name} unusable: {problem}")
                    if args.delete and backend.writable:
                        for key in sorted(entry["keys"], key=lambda k: not k.endswith(MANIFEST)):
                            backend.delete(key)
                        print(f"{backend.name}: {signature[:12]}: deleted")
    print(f"verified {checked} entries: {checked - bad if bad <= checked else 0} good, {bad} bad")
    return 1 if bad else 0


def _check_entry(backend, signature: str, folder: Path) -> str | None:
    from mlbuild.engine.cache.manifest import parse_manifest

    try:
        manifest = parse_manifest(backend.read(f"{signature}/{MANIFEST}", MANIFEST_MAX), signature)
        archive = folder / manifest.archive
        try:
            backend.download(f"{signature}/{manifest.archive}", archive, manifest.archive_size)
            scan_archive(archive, manifest)
        finally:
            archive.unlink(missing_ok=True)
    except Missing as missing:
        return f"{missing} is missing"
    except (EntryError, BackendError, Unusable) as error:
        return str(error)
    return None


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
