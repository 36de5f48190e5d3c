"""Hostile and failing downloads: dropped connections resume, bad URLs cannot poison the cache,
a damaged cache heals, an unusable download folder is one line; no partial file is ever left.

A real HTTP server runs on 127.0.0.1 (a small python http.server in its own process) that can
drop the connection in the middle of a file and can honour or ignore Range requests.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_tarball, sha256_of
from mlbuild.sources.download import cached_file, download, local_name
from mlbuild.errors import MlbuildError

SERVER = r'''
import http.server, re, socket, sys
from pathlib import Path

root, log, drops, drop_after, ranges = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "ranges"

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        global drops
        wanted = self.headers.get("Range")
        with log.open("a") as handle:
            handle.write(f"GET {self.path} range={wanted}\n")
        path = root / Path(self.path).name if not self.path.endswith(("/", "/.", "/..")) else root / "any"
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = re.fullmatch(r"bytes=([0-9]+)-", wanted or "")
        if match and ranges:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if drops > 0:  # the connection dies in the middle of the file
            drops -= 1
            self.wfile.write(body[:drop_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
'''


class Server:
    def __init__(self, folder: Path, drops: int, drop_after: int, ranges: bool):
        self.root, self.log = folder / "served", folder / "requests.log"
        self.root.mkdir()
        script = folder / "server.py"
        script.write_text(SERVER)
        self.process = subprocess.Popen(
            [sys.executable, script, self.root, self.log, str(drops), str(drop_after), "ranges" if ranges else "no-ranges"],
            stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def requests(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.process.stdout.close()


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(drops: int = 0, drop_after: int = 0, ranges: bool = True) -> Server:
        folder = tmp_path / f"server{len(servers)}"
        folder.mkdir()
        servers.append(Server(folder, drops, drop_after, ranges))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _tarball(folder: Path, name: str = "pkg-1.0.tar.gz") -> tuple[Path, str]:
    path = folder / name
    make_tarball(path, {"main.c": os.urandom(150_000).hex()}, "pkg-1.0")  # ~ 300 KB, does not compress away
    return path, sha256_of(path)


def _leftovers(cache: Path) -> list[str]:
    partial = cache / ".partial"
    return sorted(p.name for p in partial.iterdir()) if partial.exists() else []


# --- interrupted downloads --------------------------------------------------------------------

def test_a_connection_dropped_mid_file_is_resumed_with_a_range_request(serve, tmp_path):
    server = serve(drops=1, drop_after=100_000, ranges=True)
    tarball, sha = _tarball(server.root)
    cache = tmp_path / "cache"

    path = download(server.url(tarball.name), tarball.name, sha, cache, backoff=0.05)

    assert path == cache / sha / tarball.name and sha256_of(path) == sha
    assert server.requests() == [f"GET /{tarball.name} range=None", f"GET /{tarball.name} range=bytes=100000-"]
    assert _leftovers(cache) == []


def test_a_server_without_ranges_gets_the_whole_file_again_after_a_drop(serve, tmp_path):
    server = serve(drops=2, drop_after=50_000, ranges=False)
    tarball, sha = _tarball(server.root)
    cache = tmp_path / "cache"

    path = download(server.url(tarball.name), tarball.name, sha, cache, backoff=0.05)

    assert sha256_of(path) == sha
    assert len(server.requests()) == 3
    assert _leftovers(cache) == []


def test_a_connection_that_always_drops_fails_in_one_line_and_leaves_no_partial_file(serve, tmp_path):
    server = serve(drops=99, drop_after=10_000, ranges=True)
    tarball, sha = _tarball(server.root)
    cache = tmp_path / "cache"

    with pytest.raises(MlbuildError) as raised:
        download(server.url(tarball.name), tarball.name, sha, cache, attempts=3, backoff=0.05)

    assert str(raised.value).startswith("download failed after 3 attempts (connection dropped after 30000 bytes")
    assert len(server.requests()) == 3
    assert _leftovers(cache) == [] and not (cache / sha).exists()


def test_stale_partial_files_of_a_dead_run_are_removed_and_fresh_ones_kept(serve, tmp_path):
    server = serve()
    tarball, sha = _tarball(server.root)
    cache = tmp_path / "cache"
    (cache / ".partial").mkdir(parents=True)
    stale, fresh = cache / ".partial" / "dead-run", cache / ".partial" / "running-elsewhere"
    stale.write_bytes(b"")
    fresh.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    download(server.url(tarball.name), tarball.name, sha, cache)

    assert _leftovers(cache) == ["running-elsewhere"]


def test_a_dropped_download_resumes_through_doit_fetch(serve, project):
    server = serve(drops=1, drop_after=64_000, ranges=True)
    tarball = server.root / "hello-2.tar.gz"
    noise = os.urandom(100_000).hex()  # does not compress: the file is bigger than where the drop comes
    sha = make_tarball(tarball, {"hello.c": f"int main(void) {{ return 0; }}\n/* {noise} */\n", "extra.c": "int x;"}, "hello-1.0")
    project.update_recipe("hello", sources=[{"url": server.url(tarball.name), "sha256": sha}])

    result = project.doit("fetch:hello")

    assert result.returncode == 0, result.stdout + result.stderr
    assert project.path("build/src/hello/hello.c").exists()
    assert [line.split(" range=")[1] for line in server.requests()] == ["None", "bytes=64000-"]
    assert _leftovers(project.path(".cache/downloads")) == []


# --- URLs that must not name the cache file ---------------------------------------------------

@pytest.mark.parametrize("url, name", [
    ("https://example.org/pub/pkg-1.0.tar.xz", "pkg-1.0.tar.xz"),
    ("https://example.org/pub/pkg-1.0.tar.xz?download=1", "pkg-1.0.tar.xz"),
    ("https://example.org/pub/..", None),
    ("https://example.org/pub/.", None),
    ("https://example.org/pub/", None),
    ("https://example.org", None),
    ("https://example.org/pub/%2e%2e", None),
    ("https://example.org/pub/a%2Fb", None),
    ("https://example.org/pub/.hidden", None),
    ("https://example.org/pub/" + "x" * 300, None),
])
def test_only_a_plain_safe_url_segment_becomes_the_cache_file_name(url, name):
    assert local_name(url) == name


@pytest.mark.parametrize("tail", ["dist/..", "dist/.", "dist/"])
def test_a_url_ending_in_dot_dot_or_slash_cannot_poison_the_download_cache(serve, project, tail):
    server = serve()
    make_tarball(server.root / "any", {"hello.c": "int main(void) { return 0; }\n", "extra.c": "int x;"}, "hello-1.0")
    sha = sha256_of(server.root / "any")
    project.update_recipe("hello", sources=[{"url": server.url(tail), "sha256": sha}])
    cache = project.path(".cache/downloads")

    first = project.doit("fetch:hello")
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if not p.is_dir()) == [f"{sha}/source"]

    shutil.rmtree(project.path("build"))
    again = project.doit("fetch:hello")  # the cached entry is found and used, nothing is in the way
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(server.requests()) == 1


# --- a damaged or unusable download folder ----------------------------------------------------

def test_a_cache_entry_replaced_by_a_folder_is_removed_with_a_warning_and_fetched_again(project):
    source = project.recipes["hello"]["sources"][0]
    sha = source["sha256"]
    entry = project.path(f".cache/downloads/{sha}/{source['url'].rsplit('/', 1)[-1]}")
    entry.mkdir(parents=True)
    (entry / "junk").write_text("not a tarball")

    result = project.doit("fetch:hello")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert entry.is_file() and sha256_of(entry) == sha
    log = project.path("build/logs").rglob("fetch*hello*")
    assert any(f"download cache entry {entry} is not a regular file: removed, downloading again" in p.read_text() for p in log)


def test_a_cache_checksum_folder_that_is_a_file_is_replaced(tmp_path):
    cache = tmp_path / "cache"
    tarball, sha = _tarball(tmp_path)
    cache.mkdir()
    (cache / sha).write_text("in the way")
    assert cached_file(cache, sha) is None
    path = download(tarball.as_uri(), tarball.name, sha, cache)
    assert path == cache / sha / tarball.name and sha256_of(path) == sha


def _in_mount_namespace(tmp_path: Path, shell: str, code: str) -> dict:
    """Run code (Python printing one JSON line) after shell, in a private mount namespace (tmpfs mounts vanish with it)."""
    if not shutil.which("unshare"):
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    script = tmp_path / "inside.py"
    script.write_text(code)
    result = subprocess.run(["unshare", "-rm", "sh", "-ec", f"{shell}\nexec {sys.executable} {script}"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


INSIDE = """
import json, sys
from pathlib import Path
from mlbuild.sources.download import download
from mlbuild.errors import MlbuildError
cache = Path({cache!r})
try:
    download({url!r}, "pkg-1.0.tar.gz", {sha!r}, cache)
    outcome = "downloaded"
except MlbuildError as error:
    outcome = str(error)
partial = cache / ".partial"
print(json.dumps({{"outcome": outcome, "partial": sorted(p.name for p in partial.iterdir()) if partial.exists() else []}}))
"""


def test_a_read_only_download_folder_is_one_line_naming_it(tmp_path):
    tarball, sha = _tarball(tmp_path)
    mount = tmp_path / "mnt"
    mount.mkdir()
    cache = mount / "downloads"
    shell = f"mount -t tmpfs -o size=4m tmpfs {mount}\nmkdir {cache}\nmount -o remount,ro {mount}"
    seen = _in_mount_namespace(tmp_path, shell, INSIDE.format(cache=str(cache), url=tarball.as_uri(), sha=sha))
    assert seen["outcome"] == (f"download cache {cache}/.partial: cannot create a file (Read-only file system); "
                               "expected a writable folder with free space (download_dir)")


def test_a_full_download_folder_is_one_line_and_leaves_no_partial_file(tmp_path):
    tarball, sha = _tarball(tmp_path)  # ~ 300 KB into 64 KB
    mount = tmp_path / "mnt"
    mount.mkdir()
    cache = mount / "downloads"
    shell = f"mount -t tmpfs -o size=64k tmpfs {mount}"
    seen = _in_mount_namespace(tmp_path, shell, INSIDE.format(cache=str(cache), url=tarball.as_uri(), sha=sha))
    assert seen["outcome"] == (f"download cache {cache}/.partial: cannot write a download (No space left on device); "
                               "expected a writable folder with free space (download_dir)")
    assert seen["partial"] == []


# --- downloads that would never end -------------------------------------------------------------
# A hostile server in a thread (servers.HostileHttp); small limits keep each test to a few seconds.

from servers import HostileHttp  # noqa: E402
from mlbuild.sources.transfer import GaveUp, Limits  # noqa: E402

FAST = Limits(deadline=20, min_rate=1024, window=1, max_size=1 << 30, progress_every=0.3)


@pytest.fixture
def hostile(tmp_path):
    (tmp_path / "served").mkdir()
    server = HostileHttp(tmp_path / "served")
    yield server
    server.stop()


def _give_up(server, how: str, tmp_path, limits=FAST, size=None, lines=None) -> tuple[str, float]:
    """Why the download of a ~170 KiB tarball served that way was given up on, and after how many seconds."""
    tarball, sha = _tarball(server.root)
    cache = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(GaveUp) as raised:
        download(f"{server.url}/{how}/{tarball.name}", tarball.name, sha, cache, backoff=0.05, limits=limits, size=size,
                 say=None if lines is None else lines.append)
    assert _leftovers(cache) == [] and not (cache / sha).exists()  # the partial file is removed
    return str(raised.value), time.monotonic() - started


def test_a_server_that_stalls_after_the_headers_is_given_up_on_after_one_rate_window(hostile, tmp_path):
    reason, seconds = _give_up(hostile, "stall", tmp_path)
    assert reason.startswith("expected at least 1.0 KiB/s averaged over 1 s (download_min_rate, download_rate_window), "
                             "got 0 bytes in the last 1 s (0 bytes of "), reason
    assert seconds < 4, f"{seconds:.1f} s: the stall was waited out, not cut"
    assert len(hostile.requests) == 1  # given up on, not retried


def test_a_trickling_server_says_how_far_it_is_and_is_given_up_on_below_the_minimum_rate(hostile, tmp_path):
    lines = []
    reason, seconds = _give_up(hostile, "trickle", tmp_path, lines=lines)
    assert reason.startswith("expected at least 1.0 KiB/s averaged over 1 s") and " bytes in the last 1 s" in reason, reason
    assert seconds < 4
    assert lines and all(line.startswith("pkg-1.0.tar.gz: ") and " KiB, " in line and line.endswith("/s") for line in lines), lines
    assert any(not line.startswith("pkg-1.0.tar.gz: 0 bytes") for line in lines), lines  # bytes counted as they trickle


def test_a_server_that_trickles_its_headers_is_cut_too(hostile, tmp_path):
    reason, seconds = _give_up(hostile, "slow-headers", tmp_path)
    assert reason.startswith("expected at least 1.0 KiB/s"), reason
    assert seconds < 4


def test_an_endless_body_without_content_length_stops_just_past_the_sources_size(hostile, tmp_path):
    reason, seconds = _give_up(hostile, "endless", tmp_path, size=136)
    assert reason == "expected at most 136 bytes (the recipe's size), the server sent more"
    assert seconds < 2


def test_an_endless_body_stops_at_download_max_size_without_a_size(hostile, tmp_path):
    reason, _ = _give_up(hostile, "endless", tmp_path, limits=FAST._replace(max_size=1 << 20))
    assert reason == "expected at most 1.0 MiB (download_max_size), the server sent more"


def test_a_body_announced_larger_than_the_size_is_refused_before_reading_it(hostile, tmp_path):
    reason, seconds = _give_up(hostile, "announce", tmp_path, size=200 << 10)
    assert reason == "expected at most 200.0 KiB (the recipe's size), the server announced 10.0 GiB"
    reason, _ = _give_up(hostile, "announce", tmp_path)
    assert reason == "expected at most 1.0 GiB (download_max_size), the server announced 10.0 GiB"


def test_a_download_fast_enough_but_without_end_is_given_up_on_at_its_deadline(hostile, tmp_path):
    reason, seconds = _give_up(hostile, "steady", tmp_path, limits=FAST._replace(deadline=1.5))
    assert reason.startswith("expected it within 1.5 s (download_timeout), got ") and reason.endswith(" of 1.0 GiB by then"), reason
    assert 1.4 < seconds < 5  # the deadline, not the 1 GiB at 160 KiB/s


def test_a_cached_file_of_the_wrong_size_is_removed_before_hashing(tmp_path):
    tarball, sha = _tarball(tmp_path)
    cache = tmp_path / "cache"
    download(tarball.as_uri(), tarball.name, sha, cache)
    lines = []
    assert cached_file(cache, sha, lines.append, size=tarball.stat().st_size) == cache / sha / tarball.name
    assert cached_file(cache, sha, lines.append, size=136) is None
    assert lines == [f"warning: download cache entry {cache / sha / tarball.name} is {tarball.stat().st_size} bytes, "
                     "not the recipe's size 136: removed, downloading again"]


def test_a_body_shorter_than_the_sources_size_is_refused(tmp_path):
    tarball, sha = _tarball(tmp_path)
    with pytest.raises(MlbuildError, match=r"^pkg-1.0.tar.gz: expected 300000 bytes \(the recipe's size\), got "):
        download(tarball.as_uri(), tarball.name, sha, tmp_path / "cache", size=300_000)
    assert _leftovers(tmp_path / "cache") == []




def test_a_stalling_source_is_one_line_and_the_next_alternative_is_used_through_doit(hostile, project):
    """Configured with the keys a user sets (here on doit's command line); the next source's URL is a good server's."""
    tarball = hostile.root / "hello-2.tar.gz"
    shutil.copy(Path(project.recipes["hello"]["sources"][0]["url"].removeprefix("file://")), tarball)
    sha = sha256_of(tarball)
    project.update_recipe("hello", sources=[
        {"url": f"{hostile.url}/stall/{tarball.name}", "sha256": sha, "size": tarball.stat().st_size},
        {"url": f"{hostile.url}/endless/{tarball.name}", "sha256": sha, "size": tarball.stat().st_size},
        {"url": f"{hostile.url}/files/{tarball.name}", "sha256": sha}])

    started = time.monotonic()
    result = project.doit("fetch:hello", "download_rate_window=1", "download_min_rate=1K")

    assert result.returncode == 0, result.stdout + result.stderr
    gave_up = [line for line in result.stdout.splitlines() if "gave up on" in line]
    assert gave_up == [
        f"mlbuild: fetch:hello: gave up on {hostile.url}/stall/{tarball.name}: expected at least 1.0 KiB/s averaged over 1 s "
        f"(download_min_rate, download_rate_window), got 0 bytes in the last 1 s (0 bytes of {tarball.stat().st_size} bytes so far)",
        f"mlbuild: fetch:hello: gave up on {hostile.url}/endless/{tarball.name}: expected at most {tarball.stat().st_size} bytes "
        "(the recipe's size), the server sent more"], result.stdout
    assert f"got {tarball.name} from {hostile.url}/files/{tarball.name}" in result.stdout
    assert time.monotonic() - started < 30
    assert _leftovers(project.path(".cache/downloads")) == []


def test_a_bad_download_limit_is_one_line(project):
    result = project.doit("fetch:hello", "download_max_size=5ib")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "command line: download_max_size: expected a number of bytes with an optional K, M, G or T" in result.stderr
    assert "got '5ib'" in result.stderr


def test_a_partial_download_another_run_still_writes_is_not_removed_as_stale_whatever_its_clock(tmp_path):
    """A run whose clock is days ahead (faketime in the reproducibility test, a mis-set machine sharing the
    download cache) sees every partial file as stale: one a live download holds locked stays, a dead one goes."""
    import fcntl
    import os
    import time

    from mlbuild.sources import download

    folder = tmp_path / ".partial"
    folder.mkdir()
    live, dead = folder / "live", folder / "dead"
    live.write_bytes(b"half")
    dead.write_bytes(b"half")
    long_ago = time.time() - 3 * download.STALE_PARTIAL
    for path in (live, dead):
        os.utime(path, (long_ago, long_ago))
    with open(live, "rb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as download_to_cache holds it while writing
        download._remove_stale_partials(folder)
        assert live.exists() and not dead.exists()
    download._remove_stale_partials(folder)  # its writer gone: now it is stale
    assert not live.exists()
