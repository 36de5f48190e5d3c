"""Hostile artifact caches (issue 26): entries whose manifest is malformed, servers that stall, trickle or never end,
sizes written wrongly. Each is one line; the task builds locally; a writable cache heals with the build's push.

The caches are real: a file:// folder warmed by a build of the synthetic project (test_artifact_cache.py), and
a hostile http.server thread on 127.0.0.1 (servers.HostileHttp) serving a copy of it.
"""

import json
import shutil
import time

import pytest

from conftest import ALL_TASKS, assert_stamps_valid, make_project, x86
from servers import HostileHttp
from test_artifact_cache import CACHED, _entry, cache, faults, fresh, manifests, restored, warm_cache  # noqa: F401 (fixtures)

from mlbuild.engine.cache import MANIFEST_MAX
from mlbuild.engine.cache.entry import EntryError
from mlbuild.engine.cache.manifest import parse_manifest
from mlbuild.engine.cache.backends import BackendError, FileBackend, HttpBackend, S3Backend, Unusable
from mlbuild.engine.cache.commands import parse_size
from mlbuild.errors import InputError
from mlbuild.sources.transfer import Limits, human

HELLO = "build:hello-x86_64"


# --- manifests that are not what they claim -----------------------------------------------------

def _edit(cache, change) -> str:
    """Apply change(manifest dict) to hello's manifest on disk; returns hello's signature."""
    path, _, manifest = _entry(cache, HELLO)
    change(manifest)
    path.write_text(json.dumps(manifest))
    return manifest["signature"]


def _first_file(manifest) -> str:
    return next(name for name, entry in manifest["entries"].items() if entry["kind"] == "file")


MALFORMED = {
    # the reproducers of the issue
    "archive-dot-dot": (lambda m: m.update(archive="../../../../outside.tar.zst"),
                        "archive: expected <archive_sha256>.tar.zst, got '../../../../outside.tar.zst'"),
    "archive-sha-dot-dot": (lambda m: m.update(archive_sha256="../x", archive="../x.tar.zst"),
                            "archive_sha256: String should match pattern"),
    "entries-a-list": (lambda m: m.update(entries=list(m["entries"])), "entries: Input should be a valid dictionary"),
    "mode-not-a-number": (lambda m: m["entries"][_first_file(m)].update(mode="755"),
                          ".mode: Input should be a valid integer, got '755'"),
    # and the rest of the class
    "entry-name-dot-dot": (lambda m: m["entries"].update({"../escaped": {"kind": "dir", "mode": 0o755}}),
                           "entries: '../escaped': expected a path without empty, '.' or '..' parts"),
    "entry-name-absolute": (lambda m: m["entries"].update({"/etc": {"kind": "dir", "mode": 0o755}}),
                            "'/etc': expected a relative path"),
    "sha-not-hex": (lambda m: m["entries"][_first_file(m)].update(sha256="z" * 64), ".sha256: String should match pattern"),
    "size-negative": (lambda m: m["entries"][_first_file(m)].update(size=-1),
                      ".size: Input should be greater than or equal to 0"),
    "kind-unknown": (lambda m: m["entries"][_first_file(m)].update(kind="fifo"), "does not match any of the expected tags"),
    "no-format": (lambda m: m.pop("format"), "its manifest has format None, expected 1"),
    "folder-not-listed": (lambda m: m["entries"].update({"nowhere/x": {"kind": "link", "target": "y"}}),
                          "'nowhere/x': its folder 'nowhere' is not listed as a folder"),
}


@pytest.mark.parametrize("case", ["archive-dot-dot", "entries-a-list", "mode-not-a-number", "entry-name-dot-dot"])
@pytest.mark.slow
def test_a_malformed_manifest_is_one_line_the_task_builds_locally_and_the_push_heals_the_entry(fresh, cache, tmp_path, case):
    change, reason = MALFORMED[case]
    signature = _edit(cache, change)

    result = fresh.doit(f"cache={cache.as_uri()}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = faults(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{HELLO}: artifact cache entry {signature[:12]} in {cache.as_uri()} unusable: "
                               "its manifest is malformed: "), lines
    assert reason in lines[0] and lines[0].endswith("; building locally, and the build replaces it"), lines
    assert restored(result) == CACHED - x86("hello")
    assert "# running" in fresh.log(HELLO)
    assert fresh.run_binary("hello") == "Hello, world!\n"
    assert fresh.leftovers() == [] and not (cache.parent / "outside.tar.zst").exists()
    assert_stamps_valid(fresh)
    # The build's push replaced the entry: the next clone restores everything, without a word.
    second = make_project(tmp_path / "second").doit(f"cache={cache.as_uri()}")
    assert second.returncode == 0 and restored(second) == CACHED and faults(second) == [], second.stdout + second.stderr
    assert second.executed == ALL_TASKS


def test_a_read_only_cache_with_a_malformed_entry_builds_locally_and_stays_as_it_was(fresh, cache):
    signature = _edit(cache, MALFORMED["entries-a-list"][0])
    before = (cache / signature / "manifest.json").read_bytes()
    result = fresh.doit(f"cache=ro:{cache.as_uri()}")
    assert result.returncode == 0, result.stderr
    lines = faults(result)
    assert len(lines) == 1 and lines[0].endswith("unusable: its manifest is malformed: entries: Input should be a valid "
                                                 "dictionary, got list; building locally"), lines
    assert (cache / signature / "manifest.json").read_bytes() == before


def test_a_corrupt_archive_is_replaced_by_the_builds_push_too(fresh, cache, tmp_path):
    _, archive, manifest = _entry(cache, HELLO)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    first = fresh.doit(f"cache={cache.as_uri()}")
    assert first.returncode == 0 and len(faults(first)) == 1 and "corrupt" in faults(first)[0], first.stderr
    assert manifests(cache)[HELLO]["archive_sha256"] != manifest["archive_sha256"] or \
        archive.read_bytes() != bytes(data)  # the bad bytes are gone, whichever name the push gave its archive
    second = make_project(tmp_path / "second").doit(f"cache={cache.as_uri()}")
    assert restored(second) == CACHED and faults(second) == [], second.stderr


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_cache_verify_names_each_malformed_entry(fresh, cache, case):
    change, reason = MALFORMED[case]
    signature = _edit(cache, change)
    verify = fresh.cli("cache", "verify", env={"MLBUILD_CACHE": cache.as_uri()})
    assert verify.returncode == 1 and "Traceback" not in verify.stderr, verify.stdout + verify.stderr
    named = [line for line in verify.stdout.splitlines() if "unusable" in line]
    assert len(named) == 1 and named[0].startswith(f"artifact cache entry {signature[:12]} in {cache.as_uri()} unusable: "), named
    assert reason in named[0], named
    assert "4 good, 1 bad" in verify.stdout


@pytest.mark.parametrize("data", [b"[1, 2]", b"7", b"\xff\xfe", b"[" * 100_000, b'{"format": 1}', b'{"format": true}'])
def test_any_manifest_bytes_are_an_entry_error_never_another_exception(data):
    with pytest.raises(EntryError):
        parse_manifest(data, None)


def test_a_manifest_file_that_never_ends_is_not_read_to_its_end(cache, tmp_path):
    """A manifest.json that is a link to /dev/zero (a cache anyone could write) is refused, not read for ever."""
    path, _, manifest = _entry(cache, HELLO)
    path.unlink()
    path.symlink_to("/dev/zero")
    backend = FileBackend(cache.as_uri(), True)
    with pytest.raises(Unusable, match="its manifest is not a regular file"):
        backend.read(f"{manifest['signature']}/manifest.json", MANIFEST_MAX)


# --- sizes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, size", [("5", 5), ("5B", 5), ("5k", 5 << 10), ("5KiB", 5 << 10), ("5kb", 5 << 10),
                                        ("500M", 500 << 20), ("20GiB", 20 << 30), ("1.5T", int(1.5 * (1 << 40))),
                                        ("2 G", 2 << 30)])
def test_sizes_are_read_with_their_unit(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["5ib", "5i", "lots", "", "-1", "5 KB extra", "1e3", "5KiBB", "0x10", "k"])
def test_a_size_that_is_not_one_is_refused_in_one_line(text):
    with pytest.raises(InputError) as refused:
        parse_size(text)
    assert str(refused.value) == (f"cache prune: --max-size {text!r}: expected a number of bytes with an optional K, M, G "
                                  "or T (powers of 1024), then an optional i and B, such as 1048576, 500M, 20GiB or 1.5T")


def test_prune_max_size_5ib_evicts_nothing_and_says_why(fresh, cache):
    before = sorted(manifests(cache))
    pruned = fresh.cli("cache", "prune", "--max-size", "5ib", env={"MLBUILD_CACHE": cache.as_uri()})
    assert pruned.returncode == 2 and "--max-size '5ib': expected a number of bytes" in pruned.stderr
    assert "Traceback" not in pruned.stderr and sorted(manifests(cache)) == before


# --- servers that never end ---------------------------------------------------------------------------

FAST = Limits(deadline=20, min_rate=1024, window=1, max_size=1 << 30, progress_every=0.3)


@pytest.fixture
def served(cache, tmp_path):
    """The warm cache served by a hostile server: {server.url}/<how>/cache/… ."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copytree(cache, root / "cache")
    server = HostileHttp(root)
    yield server
    server.stop()


def _hello(served) -> tuple[str, str, int]:
    """hello's manifest key, archive key and archive size in the served cache."""
    _, archive, manifest = _entry(served.root / "cache", HELLO)
    return f"{manifest['signature']}/manifest.json", f"{manifest['signature']}/{archive.name}", manifest["archive_size"]


@pytest.mark.parametrize("how, reason", [
    ("stall", "gave up: expected at least 1.0 KiB/s averaged over 1 s (download_min_rate, download_rate_window), got 0 bytes"),
    ("trickle", "gave up: expected at least 1.0 KiB/s averaged over 1 s"),
    ("slow-headers", "gave up: expected at least 1.0 KiB/s averaged over 1 s"),
])
def test_an_http_cache_that_stalls_or_trickles_is_given_up_on_within_its_window(served, tmp_path, how, reason):
    manifest_key, archive_key, size = _hello(served)
    backend = HttpBackend(f"{served.url}/{how}/cache", False, FAST)
    lines = []
    started = time.monotonic()
    with pytest.raises(BackendError) as raised:
        backend.download(archive_key, tmp_path / "archive", size, lines.append)
    assert time.monotonic() - started < 4
    assert str(raised.value).startswith(f"{served.url}/{how}/cache: GET {archive_key}: {reason}"), raised.value
    assert raised.value.unreachable  # not asked again in this run
    if how == "trickle":
        assert lines and all(line.startswith(f"entry {archive_key[:12]}: ") and line.endswith("/s") for line in lines), lines


@pytest.mark.parametrize("how", ["endless", "announce"])
def test_an_http_cache_object_larger_than_the_manifest_says_is_an_unusable_entry(served, tmp_path, how):
    manifest_key, archive_key, size = _hello(served)
    backend = HttpBackend(f"{served.url}/{how}/cache", False, FAST)
    started = time.monotonic()
    with pytest.raises(Unusable) as raised:
        backend.download(archive_key, tmp_path / "archive", size)
    assert time.monotonic() - started < 2
    told = "the server sent more" if how == "endless" else "the server announced 10.0 GiB"
    assert str(raised.value) == f"its archive: expected at most {human(size)} (the manifest's archive_size), {told}"
    with pytest.raises(Unusable, match=r"^its manifest: expected at most 1.0 MiB \(the most a manifest may be\)"):
        backend.read(manifest_key, 1 << 20)


def test_an_s3_cache_that_stalls_is_given_up_on_within_its_window(served, monkeypatch):
    """An 'S3 server' that sends its headers and then nothing: the meter cuts boto3's connection (its read timeout,
    download_rate_window, would end it a window later)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(name, value)
    manifest_key, _, _ = _hello(served)
    backend = S3Backend(f"s3://stall/cache?endpoint_url={served.url}", False, FAST)
    started = time.monotonic()
    with pytest.raises(BackendError) as raised:
        backend.read(manifest_key, MANIFEST_MAX)
    assert time.monotonic() - started < 4, raised.value
    assert str(raised.value).startswith(f"s3://stall/cache: GET {manifest_key}: gave up: expected at least 1.0 KiB/s"), raised.value
    assert raised.value.unreachable


def test_a_stalling_http_cache_is_one_line_for_the_run_and_every_task_builds(served, fresh):
    """Through doit, with the limits set the way a user sets them (environment variables here)."""
    result = fresh.doit(f"cache=ro:{served.url}/archives-stall/cache", env={"MLBUILD_DOWNLOAD_RATE_WINDOW": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = faults(result)
    assert len(lines) == 1, lines
    assert "gave up: expected at least 1.0 KiB/s averaged over 1 s" in lines[0] and "not used again in this run" in lines[0]
    assert result.executed == ALL_TASKS and restored(result) == set()
    assert fresh.leftovers() == []
