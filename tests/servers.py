"""Real servers on 127.0.0.1 for the artifact cache tests: nginx (WebDAV), SeaweedFS (S3), redis, distccd.

Each starts on a free port in a temporary folder and is stopped, by its own pid,
when its fixture ends. A server whose program is missing skips its tests with
the reason (scripts/setup.sh installs them).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest


def free_port(also_plus: int = 0) -> int:
    """A port nobody listens on (and port+also_plus too, for servers that open a second one there)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + also_plus > 65535:
            continue
        if not also_plus or _is_free(port + also_plus):
            return port
    raise RuntimeError("no free port pair")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_listening(port: int, process: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}): {log.read_text()[-2000:] if log.exists() else ''}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {seconds} s: {log.read_text()[-2000:] if log.exists() else ''}")


def stop(process: subprocess.Popen) -> None:
    """Stop a server we started (its own process group), waiting for it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(3)  # a test's server holds nothing worth a longer goodbye (weed took 10 s and more)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start(command: list[str], folder: Path, env: dict | None = None) -> subprocess.Popen:
    log = folder / "server.log"
    return subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def need(program: str) -> str:
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin")
    if not found:
        pytest.skip(f"{program} is not installed (scripts/setup.sh installs it)")
    return found


# --- nginx with WebDAV -------------------------------------------------------------------

class Nginx(NamedTuple):
    url: str  # http://127.0.0.1:PORT
    root: Path  # what it serves
    process: subprocess.Popen


NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location /cache/ {{
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
        location /forbidden/ {{ return 403; }}
        location /readonly/ {{ limit_except GET HEAD {{ deny all; }} }}
    }}
}}
"""


def start_nginx(folder: Path) -> Nginx:
    nginx = need("nginx")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "www" / "cache").mkdir(parents=True)
    (folder / "www" / "readonly").mkdir(parents=True)
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""  # as root, workers would otherwise become nobody and not write
    (folder / "nginx.conf").write_text(NGINX_CONF.format(d=folder, port=port, user=user))
    process = start([nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")], folder)
    wait_listening(port, process, folder / "error.log")
    return Nginx(f"http://127.0.0.1:{port}", folder / "www", process)


# --- SeaweedFS (S3) ----------------------------------------------------------------------

class S3(NamedTuple):
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def env(self, access_key: str | None = None, secret_key: str | None = None) -> dict:
        """What a build needs to reach it: credentials in the environment, as boto3 reads them."""
        return {"AWS_ACCESS_KEY_ID": access_key or self.access_key, "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def client(self):
        import boto3

        return boto3.session.Session(aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                                     region_name="us-east-1").client("s3", endpoint_url=self.endpoint)


def _weed_side_servers_off(weed: Path) -> list[str]:
    """Newer weed also opens an Iceberg and a Lance server on fixed ports (8181, 9101): a second weed on the
    machine (tests run side by side) then dies at start. Off, where this weed has them (older ones do not)."""
    usage = subprocess.run([str(weed), "server", "-h"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    return [f"-s3.port.{name}=0" for name in ("iceberg", "lance") if f"-s3.port.{name}" in usage]


def start_seaweedfs(folder: Path) -> S3:
    weed = Path(sys.executable).with_name("weed")
    if not weed.exists():
        weed = Path(need("weed"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir()
    access_key, secret_key = "mlbuild-test-key", "mlbuild-test-secret-do-not-print"
    identities = {"identities": [{"name": "mlbuild", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    (folder / "s3.json").write_text(json.dumps(identities))
    for attempt in range(3):
        # weed opens gRPC on each port + 10000. Eight ports chosen free can be taken by another test's
        # server before weed binds them (`bind: address already in use`): then again with others.
        s3, master, volume, filer = (free_port(10000) for _ in range(4))
        process = start([str(weed), "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                         f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
                         "-s3", f"-s3.port={s3}", f"-s3.config={folder / 's3.json'}", "-master.volumeSizeLimitMB=64",
                         "-volume.max=8", *_weed_side_servers_off(weed)], folder)
        try:
            wait_listening(s3, process, folder / "server.log", 60)
            break
        except RuntimeError as error:
            stop(process)
            if "address already in use" not in str(error) or attempt == 2:
                raise
            shutil.rmtree(folder / "data")
            (folder / "data").mkdir()
    endpoint = f"http://127.0.0.1:{s3}"
    server = S3(endpoint, access_key, secret_key, process)
    deadline = time.monotonic() + 60
    while True:  # listening is not serving: wait until a bucket can be made
        try:
            server.client().create_bucket(Bucket="probe")
            return server
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                stop(process)
                raise
            time.sleep(0.5)


# --- redis and distccd --------------------------------------------------------------------

def start_redis(folder: Path) -> tuple[str, subprocess.Popen]:
    redis = need("redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = start([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)], folder)
    wait_listening(port, process, folder / "server.log")
    return f"redis://127.0.0.1:{port}", process


def start_distccd(folder: Path, compiler_dir: Path) -> tuple[str, subprocess.Popen, Path]:
    """distccd allowed to run only our clang (DISTCC_CMDLIST); returns its host spec, process and log."""
    distccd = need("distccd")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (folder / "cmdlist").write_text(f"{compiler_dir / 'clang'}\n")
    env = {"DISTCC_CMDLIST": str(folder / "cmdlist"), "DISTCC_CMDLIST_NUMWORDS": "1", "PATH": f"{compiler_dir}:/usr/bin:/bin"}
    process = start([distccd, "--daemon", "--no-detach", "--listen", "127.0.0.1", "--port", str(port), "--allow", "127.0.0.1",
                     "--log-stderr", "--log-level", "info", "--jobs", "2"], folder, env)
    wait_listening(port, process, folder / "server.log")
    return f"127.0.0.1:{port}/2", process, folder / "server.log"


def http_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


# --- a hostile HTTP server (a thread of the test's own process) ----------------------------

class HostileHttp:
    """http.server on 127.0.0.1 (a free port) that serves root's files in the manner the path's first part names:

    /files/<path>           as they are
    /stall/<path>           the headers (with Content-Length), then nothing
    /trickle/<path>         the headers, then one byte every 0.1 s
    /endless/<path>         no Content-Length, zeros until the client hangs up (the body ends when the connection does)
    /announce/<path>        a Content-Length of 10 GiB, then zeros
    /steady/<path>          a Content-Length of 1 GiB, then 8 KiB every 0.05 s, for ever (160 KiB/s)
    /slow-headers/<path>    a status line, then a header one byte every 0.1 s, never ending
    /archives-<how>/<path>  <how> for *.tar.zst, the rest as they are (an artifact cache whose archives misbehave)

    HEAD answers 200 or 404 at once; other methods 403. `requests` lists "GET /path range=…" lines.
    """

    def __init__(self, root: Path):
        import http.server
        import threading

        self.root, self.requests, self.release = root, [], threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _target(self):
                how, _, rest = self.path.lstrip("/").partition("/")
                path = server.root / rest
                if how.startswith("archives-"):
                    how = how.removeprefix("archives-") if rest.endswith(".tar.zst") else "files"
                return how, path

            def do_HEAD(self):
                how, path = self._target()
                self.send_response(200 if path.is_file() else 404)
                self.send_header("Content-Length", str(path.stat().st_size) if path.is_file() else "0")
                self.end_headers()

            def do_PUT(self):
                self.send_error(403)

            def do_GET(self):
                server.requests.append(f"GET {self.path} range={self.headers.get('Range')}")
                how, path = self._target()
                if how == "slow-headers":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    return self._drip(b"a")
                if not path.is_file():
                    return self.send_error(404)
                data = path.read_bytes()
                self.send_response(200)
                if how == "endless":
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return self._pour(b"\0" * 65536)
                length = {"announce": 10 << 30, "steady": 1 << 30}.get(how, len(data))
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if how == "files":
                    self.wfile.write(data)
                elif how == "stall":
                    server.release.wait()
                elif how == "trickle":
                    self._drip(data[:1])
                elif how == "announce":
                    self._pour(b"\0" * 65536)
                elif how == "steady":
                    self._pour(b"\0" * 8192, pause=0.05)

            def _drip(self, byte: bytes):
                """A byte every 0.1 s until the client hangs up or the test ends."""
                self.close_connection = True
                try:
                    while not server.release.wait(0.1):
                        self.wfile.write(byte)
                        self.wfile.flush()
                except OSError:
                    pass

            def _pour(self, block: bytes, pause: float = 0.0):
                self.close_connection = True
                try:
                    while not server.release.is_set():
                        self.wfile.write(block)
                        if pause:
                            server.release.wait(pause)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()  # every handler waiting or pouring ends
        self.server.shutdown()
        self.server.server_close()
