"""Working without a network: `doit fetch` gets what the configuration needs and nothing else, `mlbuild mirror`
serves another machine, and `offline = true` either builds from the download cache alone or stops at once."""

import http.server
import shutil
import threading
from functools import partial

import pytest

from conftest import ALL_TASKS, sha256_of, x86


def _set(project, line: str) -> None:
    project.edit("pyproject.toml", "jobs = 2\n", f"jobs = 2\n{line}\n")


def _cached(project, sha: str, folder: str = ".cache/downloads") -> bool:
    entry = project.path(folder) / sha
    return entry.is_dir() and any(entry.iterdir())


def test_doit_fetch_gets_only_the_sources_a_needed_build_uses(project):
    common = {"version": "1.0", "summary": "s", "homepage": "https://example.org/", "license": "MIT", "build": "extra"}
    # A recipe that is off (when) and one for another arch: their sources are not needed on x86_64 without it.
    tool = project.new_source("tool", {"extra.c": "int main(void){return 0;}\n"}, "tool-1.0")
    arm = project.new_source("armonly", {"extra.c": "int main(void){return 0;}\n"}, "armonly-1.0")
    project.write_recipe("tool", {"name": "tool", **common, "sources": [tool], "when": "with_tool",
                                  "options": {"with_tool": {"help": "build the tool", "default": False}}})
    project.write_recipe("armonly", {"name": "armonly", **common, "sources": [arm], "arches": ["arm64"]})
    result = project.doit("fetch", "with_tool=0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == {"fetch:hello", "fetch:app"}
    assert not _cached(project, tool["sha256"]) and not _cached(project, arm["sha256"])
    assert _cached(project, project.recipes["hello"]["sources"][0]["sha256"])
    # One line per downloaded file: its name, size, time and rate.
    lines = [line for line in result.stdout.splitlines() if line.startswith("mlbuild: fetch:")]
    assert len(lines) == 2, result.stdout
    hello = next(line for line in lines if "fetch:hello" in line)
    assert "got hello-1.tar.gz from file://" in hello and " bytes in " in hello and "/s" in hello
    # Turned on, the recipe's source is part of `doit fetch`.
    result = project.doit("fetch", "with_tool=1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == {"fetch:tool"}


@pytest.mark.slow
def test_mirror_serves_a_second_machine_with_checksums_verified(project, tmp_path):
    mirror = tmp_path / "mirror"
    result = project.cli("mirror", str(mirror))
    assert result.returncode == 0, result.stderr
    shas = {name: project.recipes[name]["sources"][0]["sha256"] for name in ("hello", "app")}
    assert sorted(path.name for path in mirror.iterdir()) == ["SHA256SUMS", "app-2.tar.gz", "hello-1.tar.gz"]
    assert (mirror / "SHA256SUMS").read_text() == f"{shas['app']}  app-2.tar.gz\n{shas['hello']}  hello-1.tar.gz\n"
    assert sha256_of(mirror / "hello-1.tar.gz") == shas["hello"]

    # The second machine: its own empty download cache, upstream unreachable, the mirror configured.
    shutil.rmtree(project.tarballs)
    _set(project, 'download_dir = ".cache/downloads-2"')
    project.edit("pyproject.toml", 'download_dir = ".cache/downloads"\n', "")
    _set(project, f'mirrors = ["{mirror.as_uri()}"]')
    # A mirror file with other bytes is refused: its checksum is verified.
    good = (mirror / "app-2.tar.gz").read_bytes()
    (mirror / "app-2.tar.gz").unlink()  # not written through: it may be a link into the first cache
    (mirror / "app-2.tar.gz").write_bytes(good[:-1] + b"x")
    result = project.doit()
    assert result.returncode != 0
    assert "sha256 mismatch for app-2.tar.gz" in project.log("fetch:app")
    assert not _cached(project, shas["app"], ".cache/downloads-2")

    (mirror / "app-2.tar.gz").write_bytes(good)
    result = project.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fetch:app" in result.executed and x86("target") <= result.executed
    assert f"got app-2.tar.gz from {mirror.as_uri()}/app-2.tar.gz" in result.stdout
    assert _cached(project, shas["hello"], ".cache/downloads-2") and _cached(project, shas["app"], ".cache/downloads-2")
    assert project.run_binary("app") == "app says hi\n"


@pytest.mark.parametrize("switch", [("offline=1",), ()])
@pytest.mark.slow
def test_offline_with_a_tarball_missing_stops_before_any_task_naming_each_one(project, switch):
    env = None if switch else {"MLBUILD_OFFLINE": "1"}
    hello, app = (project.recipes[name]["sources"][0]["sha256"] for name in ("hello", "app"))
    result = project.doit(*switch, env=env)
    assert result.returncode != 0
    assert result.executed == set()
    # A short list: how many, one short line per missing source (recipe, file, the start of its sha256), the hint.
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 4, result.stderr
    cache = project.path(".cache/downloads")
    assert lines[0] == f"mlbuild: offline: 2 source tarballs the build needs are not in the download cache {cache}:"
    assert [line.split() for line in lines[1:3]] == [["app", "app-2.tar.gz", "sha256", f"{app[:12]}…"],
                                                      ["hello", "hello-1.tar.gz", "sha256", f"{hello[:12]}…"]]
    assert lines[1].index("app-2") == lines[2].index("hello-1")  # in columns
    assert lines[3].startswith("Get them with `doit fetch` on a connected machine") and "mlbuild mirror" in lines[3]
    assert not project.path("build/state").exists() and not project.path("build/src").exists()
    # An option's value is no task name: `-n 2` still runs (and checks) the default tasks.
    result = project.doit("-n", "2", *switch, env=env)
    assert result.returncode != 0 and result.executed == set() and "2 source tarballs" in result.stderr
    # Commands that run no task still work; a fetch of one cached source names only what it lacks.
    assert project.doit("list", *switch, env=env).returncode == 0
    assert project.doit("fetch:hello").returncode == 0
    result = project.doit(*switch, env=env)
    assert result.stderr.startswith("mlbuild: offline: 1 source tarball the build needs is not in the download cache ")
    assert "app-2.tar.gz" in result.stderr and "hello-1" not in result.stderr
    assert project.doit("fetch:hello", *switch, env=env).up_to_date == {"fetch:hello"}


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def counting_server(project):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_CountingHandler, directory=str(project.tarballs)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_offline_builds_from_the_download_cache_and_never_connects(project, counting_server):
    base = f"http://127.0.0.1:{counting_server.server_address[1]}"
    for name in ("hello", "app"):
        source = project.recipes[name]["sources"][0]
        project.update_recipe(name, sources=[{**source, "url": f"{base}/{source['url'].rsplit('/', 1)[1]}"}])
    _set(project, f'mirrors = ["{base}/mirror"]')
    result = project.doit("fetch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(counting_server.requests) == ["/app-2.tar.gz", "/hello-1.tar.gz"]

    shutil.rmtree(project.path("build"))  # every task runs again, fetches included
    counting_server.requests.clear()
    result = project.doit("offline=1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == ALL_TASKS
    assert counting_server.requests == [], "an offline build opened a connection"
    assert project.run_binary("hello") == "Hello, world!\n"


def test_a_long_download_says_how_far_it_is(tmp_path):
    from mlbuild.sources import download
    from mlbuild.sources.transfer import Limits

    big = tmp_path / "big-1.0.tar.gz"
    big.write_bytes(bytes(range(256)) * (3 * 4096))  # 3 MiB: three chunks
    lines = []
    # progress_every=0: a line per chunk read (and per tick of the meter's thread, should one come) instead of every 10 s
    download.download(big.as_uri(), big.name, sha256_of(big), tmp_path / "cache", say=lines.append,
                      limits=Limits(progress_every=0))
    read = list(dict.fromkeys(line.split(",")[0] for line in lines))
    assert read == ["big-1.0.tar.gz: 1.0 MiB of 3.0 MiB", "big-1.0.tar.gz: 2.0 MiB of 3.0 MiB", "big-1.0.tar.gz: 3.0 MiB of 3.0 MiB"]
    assert all(line.endswith("/s") for line in lines)
