"""Credentials in mirror, cache and source URLs: never shown, never kept, never sent to another origin.

Real HTTP servers run in threads on 127.0.0.1: one (the origin) asks for Basic authorization
and serves a mirror and a WebDAV-like artifact cache; it redirects some downloads and every
cache GET to a second server on another port, which records the headers it gets. A real
build of the synthetic project goes through them; then every output, log, stats file, stamp,
cache object (manifests and the archives' content), SBOM, legal-info folder and exported
script is searched for the secrets.
"""

import base64
import http.server
import threading
import urllib.request
from pathlib import Path

import pytest
import zstandard

from conftest import ALL_TASKS, make_project
from mlbuild import credentials
from mlbuild.credentials import redact

USER = "builder"
MIRROR_SECRET = "mirror-pw-7f3a9c1e"
CACHE_SECRET = "cache-pw-2b8d4e6f"
SOURCE_SECRET = "source-pw-5c0e1a7d"
SECRETS = (MIRROR_SECRET, CACHE_SECRET, SOURCE_SECRET)


def basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"{USER}:{secret}".encode()).decode()


class Servers:
    """The origin (mirror under /mirror/, cache under /cache/, both behind Basic auth) and `elsewhere`."""

    def __init__(self, tarballs: Path, store: Path):
        self.tarballs, self.store = tarballs, store
        self.origin_requests: list[tuple[str, str, dict]] = []
        self.elsewhere_requests: list[tuple[str, str, dict]] = []
        self.elsewhere = self._start(self._elsewhere_handler())
        self.origin = self._start(self._origin_handler())

    def _start(self, handler) -> http.server.ThreadingHTTPServer:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def url(self, server, path: str) -> str:
        return f"http://127.0.0.1:{server.server_address[1]}{path}"

    def stop(self) -> None:
        for server in (self.origin, self.elsewhere):
            server.shutdown()
            server.server_close()

    def _origin_handler(self):
        servers = self

        class Origin(_Quiet):
            def _allowed(self, secret: str) -> bool:
                servers.origin_requests.append((self.command, self.path, dict(self.headers)))
                if self.headers.get("Authorization") != basic(secret):
                    self._answer(401)
                    return False
                return True

            def do_GET(self):
                if self.path.startswith("/moved/"):  # to the mirror, on this same server
                    return self._redirect(servers.url(servers.origin, self.path.replace("/moved/", "/mirror/")))
                if self.path.startswith("/mirror/"):
                    if not self._allowed(MIRROR_SECRET):
                        return
                    name = self.path.rsplit("/", 1)[-1]
                    if name.startswith("app"):  # this one is kept on another server
                        return self._redirect(servers.url(servers.elsewhere, f"/files/{name}"))
                    return self._file(servers.tarballs / name)
                if self.path.startswith("/cache/"):
                    if not self._allowed(CACHE_SECRET):
                        return
                    key = self.path.removeprefix("/cache/")
                    if not (servers.store / key).is_file():
                        return self._answer(404)
                    return self._redirect(servers.url(servers.elsewhere, f"/cache/{key}"))
                self._answer(404)

            def do_HEAD(self):
                if self._allowed(CACHE_SECRET):
                    self._answer(200 if (servers.store / self.path.removeprefix("/cache/")).is_file() else 404)

            def do_PUT(self):
                if not self._allowed(CACHE_SECRET):
                    return
                data = self.rfile.read(int(self.headers["Content-Length"]))
                path = servers.store / self.path.removeprefix("/cache/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                self._answer(201)

            def _redirect(self, location: str):
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Origin

    def _elsewhere_handler(self):
        servers = self

        class Elsewhere(_Quiet):
            def do_GET(self):
                servers.elsewhere_requests.append((self.command, self.path, dict(self.headers)))
                if self.path.startswith("/files/"):
                    return self._file(servers.tarballs / self.path.rsplit("/", 1)[-1])
                return self._file(servers.store / self.path.removeprefix("/cache/"))

        return Elsewhere


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, code: int):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _file(self, path: Path):
        if not path.is_file():
            return self._answer(404)
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def servers(tmp_path):
    store = tmp_path / "cache-store"
    store.mkdir()
    running = Servers(tmp_path / "tarballs", store)
    yield running
    running.stop()


def leaks_in_files(*roots: Path) -> list[str]:
    """Every file under roots (archives of the artifact cache decompressed) that holds a secret."""
    found = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if path.name.endswith(".tar.zst"):
                data = zstandard.ZstdDecompressor().stream_reader(data).read()
            for secret in SECRETS:
                if secret.encode() in data or base64.b64encode(f"{USER}:{secret}".encode()) in data:
                    found.append(f"{path}: {secret}")
    return found


@pytest.mark.slow
def test_no_secret_of_a_mirror_or_cache_url_is_shown_kept_or_sent_to_another_origin(tmp_path, servers):
    project = make_project(tmp_path)
    for name in ("hello", "app"):  # the recipe's own URL fails: the mirror is asked
        source = project.recipes[name]["sources"][0]
        project.update_recipe(name, sources=[{**source, "url": f"file:///nonexistent/{source['url'].rsplit('/', 1)[-1]}"}])
    mirror = servers.url(servers.origin, "/mirror").replace("http://", f"http://{USER}:{MIRROR_SECRET}@")
    cache = servers.url(servers.origin, "/cache").replace("http://", f"http://{USER}:{CACHE_SECRET}@")
    # A second, file:// cache: its user:password@ means nothing, but it is a name shown and counted too.
    file_cache = f"file://{USER}:{CACHE_SECRET}@{tmp_path / 'file-cache'}"
    env = {"MLBUILD_MIRRORS": mirror, "MLBUILD_CACHE": f"{cache} {file_cache}"}
    outputs = []

    built = project.doit(env=env)
    outputs.append(built.stdout + built.stderr)
    assert built.returncode == 0, built.stdout + built.stderr
    assert built.executed == ALL_TASKS
    # The credentials reached their own origin: it refuses requests without them.
    assert {(method, path.split("/")[1]) for method, path, _ in servers.origin_requests} >= {("GET", "mirror"), ("PUT", "cache")}
    # The redirected download says that it went on without them, naming both places redacted.
    moved = [line for line in built.stdout.splitlines() if "followed without the credentials" in line]
    assert moved == [f"mlbuild: fetch:app: {servers.url(servers.origin, '/mirror/app-2.tar.gz')} redirects to "
                     f"{servers.url(servers.elsewhere, '/files/app-2.tar.gz')}, another origin (scheme, host or port): "
                     "followed without the credentials"], built.stdout

    # A fresh clone restores every build from the cache, whose GETs all go to the other server.
    for folder in ("build", "target"):
        project.path(folder).rename(tmp_path / f"{folder}.first")
    restored = project.doit(env=env)
    outputs.append(restored.stdout + restored.stderr)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"build:hello-x86_64: restored from http://{USER}:***@127.0.0.1:" in restored.stdout
    assert "artifact cache http://" in restored.stderr and "followed without the credentials" in restored.stderr
    assert any(path.startswith("/cache/") for _, path, _ in servers.elsewhere_requests)
    assert any(path.startswith("/files/") for _, path, _ in servers.elsewhere_requests)
    # What the other server got: no authorization, no secret anywhere in a request.
    for method, path, headers in servers.elsewhere_requests:
        assert "Authorization" not in headers and "authorization" not in {key.lower() for key in headers}, (method, path)
        assert not any(secret in path or secret in str(headers) for secret in SECRETS)

    for command in (["explain", "hello-x86_64"], ["stats"], ["cache", "stats"], ["script", "build:target-x86_64"],
                    ["sbom", "x86_64"], ["legal-info", "x86_64"]):
        result = project.cli(*command, env=env)
        assert result.returncode == 0, (command, result.stderr)
        outputs.append(result.stdout + result.stderr)
    script = outputs[-3]
    assert "MLBUILD_MIRROR_1" in script and f"{USER}:***@127.0.0.1" in script  # a variable the user sets

    # A mirror that refuses the password: the failure names it, redacted.
    project.path(".cache/downloads").rename(tmp_path / "downloads.first")
    project.path("build/state/fetch_hello.json").unlink()
    wrong = mirror.replace(MIRROR_SECRET, "wrong-" + MIRROR_SECRET)
    failed = project.doit("fetch:hello", env={**env, "MLBUILD_MIRRORS": wrong})
    outputs.append(failed.stdout + failed.stderr)
    assert failed.returncode != 0
    assert f"http://{USER}:***@127.0.0.1:{servers.origin.server_address[1]}/mirror/hello-1.tar.gz: download failed (HTTP 401" \
        in failed.stdout + failed.stderr

    for output in outputs:
        assert not any(secret in output for secret in SECRETS), output
    # Nothing under either tree (logs, stats, stamps, caches, SBOM, legal-info, the first build's folders),
    # and nothing in the cache's objects, manifests and archives alike.
    assert list(servers.store.rglob("*.tar.zst")) and list(servers.store.rglob("manifest.json"))
    assert list((tmp_path / "file-cache").rglob("manifest.json"))
    assert leaks_in_files(tmp_path) == []


@pytest.mark.slow
def test_a_password_in_a_recipes_url_is_not_in_the_sbom_legal_info_or_exported_script(tmp_path, built):
    # The source is in the download cache already: nothing is downloaded, only shown.
    source = built.recipes["app"]["sources"][0]
    private = f"https://{USER}:{SOURCE_SECRET}@example.org/dist/app-2.tar.gz"
    built.update_recipe("app", sources=[{**source, "url": private}])
    sbom = built.cli("sbom", "x86_64", "-o", str(tmp_path / "out" / "sbom.json"))
    legal = built.cli("legal-info", "x86_64", "-o", str(tmp_path / "out" / "legal"))
    # ccache's remote storage with a password: a variable of the build environment, set by whoever runs the script.
    script = built.cli("script", "build:target-x86_64",
                       env={"MLBUILD_CCACHE_REMOTE_STORAGE": f"redis://:{SOURCE_SECRET}@127.0.0.1:6379"})
    for result in (sbom, legal, script):
        assert result.returncode == 0, result.stderr
        assert SOURCE_SECRET not in result.stdout + result.stderr
    assert f"https://{USER}:***@example.org/dist/app-2.tar.gz" in (tmp_path / "out" / "sbom.json").read_text()
    # one alternative of the source: unset, the script says so and tries the next (tests/test_script_export.py)
    assert '"${MLBUILD_SOURCE_APP:-}"' in script.stdout
    assert f"# set MLBUILD_SOURCE_APP to https://{USER}:***@example.org/dist/app-2.tar.gz with its credentials" in script.stdout
    assert 'CCACHE_REMOTE_STORAGE="${CCACHE_REMOTE_STORAGE:?' in script.stdout
    assert "# set CCACHE_REMOTE_STORAGE to redis://:***@127.0.0.1:6379 with its credentials" in script.stdout
    assert leaks_in_files(tmp_path / "out") == []


@pytest.mark.slow
def test_a_cache_or_ccache_url_that_fails_validation_is_shown_without_its_password(project):
    for key, value in (("MLBUILD_CACHE", f"ftp://{USER}:{CACHE_SECRET}@cache.example.org/x"),
                       ("MLBUILD_CCACHE_REMOTE_STORAGE", f"gopher://:{CACHE_SECRET}@cache.example.org")):
        for result in (project.doit("list", env={key: value}), project.cli("check", env={key: value})):
            assert result.returncode == 2, result.stderr
            assert CACHE_SECRET not in result.stdout + result.stderr
            assert result.stderr.count("\n") == 1 and ":***@cache.example.org" in result.stderr, result.stderr


# --- the pieces --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, shown", [
    ("http://user:pw@host/x", "http://user:***@host/x"),
    ("https://ghp_token123@github.com/o/r.tar.gz", "https://***@github.com/o/r.tar.gz"),
    ("redis://:pw@127.0.0.1:6379", "redis://:***@127.0.0.1:6379"),
    ("s3://b/p?endpoint_url=http://h:9000&X-Amz-Signature=abc123&X-Amz-Date=1", "s3://b/p?endpoint_url=http://h:9000&X-Amz-Signature=***&X-Amz-Date=1"),
    ("https://h/f.tar.gz?token=abc&v=1", "https://h/f.tar.gz?token=***&v=1"),
    ("http://h/cache|bearer-token=abc|read-only", "http://h/cache|bearer-token=***|read-only"),
    ("trying 'http://a:b@h1/x', then 'http://c:d@h2/y'", "trying 'http://a:***@h1/x', then 'http://c:***@h2/y'"),
    ("http://host:8080/a@b and file:///x@y", "http://host:8080/a@b and file:///x@y"),  # no userinfo: unchanged
    ("http://us%40er:p%3Aw@host/", "http://us%40er:***@host/"),
])
def test_redact_hides_passwords_tokens_and_secret_parameters(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize("to_port", ["same", "other"])
def test_a_redirect_keeps_the_credentials_at_their_origin_only(servers, to_port):
    """urllib itself forwards every header to a redirect's target; ours only to the same scheme, host and port."""
    servers.tarballs.mkdir(exist_ok=True)
    name = "hello-9.tar.gz" if to_port == "same" else "app-9.tar.gz"  # app-*: on the other server
    (servers.tarballs / name).write_bytes(b"data")
    start = servers.url(servers.origin, f"/moved/{name}")  # first a redirect on the same server, to /mirror/
    said = []
    url = start.replace("http://", f"http://{USER}:{MIRROR_SECRET}@")
    with credentials.opener(said.append).open(credentials.request(url), timeout=10) as response:
        assert response.read() == b"data"  # /mirror/ answers 401 without them: they followed the first redirect
    assert [headers.get("Authorization") for _, path, headers in servers.origin_requests] == [basic(MIRROR_SECRET)]
    if to_port == "same":
        assert said == [] and servers.elsewhere_requests == []
    else:
        assert [headers.get("Authorization") for _, _, headers in servers.elsewhere_requests] == [None]
        assert said == [f"http://127.0.0.1:{servers.origin.server_address[1]}/mirror/app-9.tar.gz redirects to "
                        f"http://127.0.0.1:{servers.elsewhere.server_address[1]}/files/app-9.tar.gz, another origin "
                        "(scheme, host or port): followed without the credentials"]
    # Plain urllib would have sent it on: the reason for the handler.
    servers.elsewhere_requests.clear()
    if to_port == "other":
        plain = urllib.request.Request(start, headers={"Authorization": basic(MIRROR_SECRET)})
        urllib.request.urlopen(plain, timeout=10).close()
        assert [headers.get("Authorization") for _, _, headers in servers.elsewhere_requests] == [basic(MIRROR_SECRET)]
