"""Where cache entries live: a local folder, an HTTP(S)/WebDAV server, an S3 bucket.

Keys are relative paths ("<signature>/manifest.json"). Every backend reads whole
objects into files or bytes and writes them atomically as seen by readers (a
renamed temporary file; nginx's WebDAV and S3 commit a PUT only when complete).
Errors become BackendError with a one-line reason; credentials never appear in it
(credentials.redact), and an HTTP cache's user:password@ is sent to its own origin alone.
Reads keep to the download limits (sources/transfer.py): a deadline, a minimum rate,
and at most the bytes the caller expects (Unusable beyond: the entry is bad, not the
backend); a file:// object must be a regular file of at most that size.
"""

import http.client
import os
import shutil
import stat
import threading
import urllib.error
import urllib.parse
from pathlib import Path
from typing import NamedTuple

from mlbuild import credentials
from mlbuild.sources.transfer import GaveUp, Limits, Meter, TooLarge

READ_ONLY_PREFIX = "ro:"
TIMEOUT = 30  # seconds without a byte from a server before a write (PUT) counts as failed


class Missing(Exception):
    """The key is not in the backend (a miss, not a fault)."""


class BackendError(Exception):
    """The backend failed; unreachable=True when further requests are pointless for this run."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


class Unusable(Exception):
    """The object is not what the entry needs (larger than expected, not a regular file): the entry is bad."""


class Listed(NamedTuple):
    key: str
    size: int
    used: float  # last use (file) or last write (S3), seconds since the epoch


def display_url(url: str) -> str:
    """The name a cache is shown and counted by: its URL redacted, an S3 URL without its query (the endpoint)."""
    parts = urllib.parse.urlsplit(url)
    return credentials.redact(urllib.parse.urlunsplit(parts._replace(query="")) if parts.scheme == "s3" else url)


def open_backend(spec: str, limits: Limits | None = None, say=None):
    """A backend from a configured item: URL, or ro:URL for a read-only one; reads keep to limits;
    say(line) tells of a redirect that dropped credentials."""
    writable = not spec.startswith(READ_ONLY_PREFIX)
    url = spec.removeprefix(READ_ONLY_PREFIX)
    scheme = urllib.parse.urlsplit(url).scheme
    kinds = {"file": FileBackend, "http": HttpBackend, "https": HttpBackend, "s3": S3Backend}
    if scheme not in kinds:
        raise BackendError(f"{display_url(url)}: unsupported cache URL (expected file://, http(s):// or s3://)")
    return kinds[scheme](url, writable, limits, say)


def _what(key: str) -> str:
    """What a key is of its entry, for a line about it."""
    if key.endswith("/manifest.json"):
        return "its manifest"
    return "its signature envelope" if key.endswith(".dsse.json") else "its archive"


class Backend:
    listable = True

    def __init__(self, url: str, writable: bool, limits: Limits | None = None, say=None):
        self.url = url
        self.name = display_url(url)
        self.writable = writable
        self.limits = limits or Limits()

    def _gave_up(self, key: str, error: GaveUp):
        """A read given up on: too large is the entry's fault; too slow or too long the server's (not asked again)."""
        if isinstance(error, TooLarge):
            return Unusable(f"{_what(key)}: {error}")
        return BackendError(f"{self.name}: GET {key}: gave up: {error}", unreachable=True)

    def _meter(self, key: str, expected: int | None, say=None) -> Meter:
        """The meter of one read: at most expected bytes (the manifest's archive_size, a manifest's most)."""
        named = {"its archive": "the manifest's archive_size", "its manifest": "the most a manifest may be"}.get(
            _what(key), "the most an envelope may be")
        return Meter(self.limits, expected, named, say, f"entry {key[:12]}")

    def __repr__(self):
        return f"{type(self).__name__}({self.name})"


class FileBackend(Backend):
    def __init__(self, url: str, writable: bool, limits: Limits | None = None, say=None):
        super().__init__(url, writable, limits)
        self.root = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))

    def _open(self, key: str, expected: int | None):
        """The object opened for reading: a regular file (not a device, a fifo, a folder) of at most the limit."""
        try:
            handle = open(self.root / key, "rb")
        except FileNotFoundError:
            raise Missing(key) from None
        except OSError as error:
            raise BackendError(f"{self.name}: cannot read {key}: {error.strerror}") from None
        info = os.fstat(handle.fileno())
        limit = min(self.limits.max_size if expected is None else expected, self.limits.max_size)
        why = ("is not a regular file" if not stat.S_ISREG(info.st_mode) else
               f"is {info.st_size} bytes, more than the {limit} expected" if info.st_size > limit else None)
        if why:
            handle.close()
            raise Unusable(f"{_what(key)} {why}")
        return handle

    def read(self, key: str, limit: int | None = None) -> bytes:
        with self._open(key, limit) as handle:
            try:
                return handle.read()
            except OSError as error:
                raise BackendError(f"{self.name}: cannot read {key}: {error.strerror}") from None

    def download(self, key: str, destination: Path, size: int | None = None, say=None) -> int:
        with self._open(key, size) as source, open(destination, "wb") as target:
            offset = 0
            while True:
                try:  # the kernel copies (sendfile), as shutil.copyfile does
                    sent = os.sendfile(target.fileno(), source.fileno(), offset, 1 << 23)
                except OSError as error:
                    raise OSError(error.errno, error.strerror, str(destination)) from None  # ours or theirs: the path says
                if not sent:
                    return offset
                offset += sent

    def upload(self, key: str, source: Path | bytes) -> None:
        path = self.root / key
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                temporary.write_bytes(source)
            else:
                shutil.copyfile(source, temporary)
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise BackendError(f"{self.name}: cannot write {key}: {error.strerror}") from None

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def touch(self, key: str) -> None:
        """Mark an entry used now: prune evicts the least recently used first."""
        try:
            os.utime(self.root / key)
        except OSError:
            pass  # a read-only folder still serves hits

    def list(self):
        if not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    if not path.name.startswith("."):
                        info = path.stat()
                        yield Listed(f"{folder.name}/{path.name}", info.st_size, info.st_mtime)

    def delete(self, key: str) -> None:
        path = self.root / key
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass  # not empty yet


class StreamingBackend(Backend):
    """A backend whose reads stream through _get(key, write, expected, say): read and download are the same for each."""

    def read(self, key: str, limit: int | None = None) -> bytes:
        parts = []
        self._get(key, parts.append, limit)
        return b"".join(parts)

    def download(self, key: str, destination: Path, size: int | None = None, say=None) -> int:
        return _download(self._get, key, destination, size, say)



class HttpBackend(StreamingBackend):
    """GET to read; PUT (WebDAV, e.g. nginx's dav_methods) to write. Plain HTTP has no listing."""

    listable = False

    def __init__(self, url: str, writable: bool, limits: Limits | None = None, say=None):
        super().__init__(url, writable, limits)
        self.base = url.rstrip("/") + "/"  # with its user:password@, which credentials.request takes out
        self.headers = {"User-Agent": "mlbuild"}
        self.redirect_say = (lambda line: say(f"artifact cache {line}")) if say else None
        self.opener = credentials.opener(self.redirect_say)

    def _open(self, key: str, method: str = "GET", data=None, length: int | None = None, meter: Meter | None = None):
        """The server's answer; with a meter (reads), on a connection the meter cuts when it gives up."""
        headers = dict(self.headers)
        if length is not None:
            headers["Content-Length"] = str(length)
        request = credentials.request(self.base + key, headers, data, method)
        try:
            return meter.open(request, self.redirect_say) if meter else self.opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 404 and method in ("GET", "HEAD"):
                raise Missing(key) from None
            raise BackendError(f"{self.name}: {method} {key}: HTTP {error.code} {error.reason}", unreachable=error.code in (401, 403)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            if meter:
                meter.check()  # the meter cut the connection: its reason
            reason = getattr(error, "reason", error)
            reason = getattr(reason, "strerror", None) or str(reason)
            raise BackendError(f"{self.name}: not reachable ({reason})", unreachable=True) from None

    def _get(self, key: str, write, expected: int | None, say=None) -> None:
        """GET key, its body to write(bytes), within the limits and at most expected bytes."""
        with self._meter(key, expected, say) as meter:
            try:
                meter.new_attempt()
                with self._open(key, meter=meter) as response:
                    length = response.headers.get("Content-Length")
                    meter.expect(int(length) if length is not None and length.isdigit() else None)
                    try:
                        while chunk := meter.read(response):
                            write(chunk)
                    except (OSError, http.client.HTTPException) as error:
                        meter.check()
                        if isinstance(error, OSError) and error.filename:
                            raise  # our disk, not the server
                        raise BackendError(f"{self.name}: GET {key}: {error}") from None
            except GaveUp as error:
                raise self._gave_up(key, error) from None

    def upload(self, key: str, source: Path | bytes) -> None:
        if isinstance(source, bytes):
            self._open(key, "PUT", source, len(source)).close()
        else:
            with open(source, "rb") as handle:
                self._open(key, "PUT", handle, source.stat().st_size).close()

    def exists(self, key: str) -> bool:
        try:
            with Meter(self.limits, 0) as meter:
                meter.new_attempt()
                self._open(key, "HEAD", meter=meter).close()
            return True
        except Missing:
            return False
        except GaveUp as error:
            raise self._gave_up(key, error) from None

    def touch(self, key: str) -> None:
        pass  # the server's access log is the only record of use


class S3Backend(StreamingBackend):
    """s3://bucket/prefix[?endpoint_url=http://host:port]; credentials from boto3's usual places (env, ~/.aws)."""

    def __init__(self, url: str, writable: bool, limits: Limits | None = None, say=None):
        super().__init__(url, writable, limits)
        parts = urllib.parse.urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        query = urllib.parse.parse_qs(parts.query)
        self.endpoint = (query.get("endpoint_url") or query.get("endpoint") or [None])[0]
        self.region = (query.get("region") or [None])[0]
        self._client = None
        self._lock = threading.Lock()

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                import boto3  # only S3 users pay for importing it
                from botocore.config import Config

                # boto3 cannot be cut from another thread: its socket timeout is what bounds a stalled read.
                window = self.limits.window
                config = Config(connect_timeout=min(5, window), read_timeout=window, retries={"max_attempts": 2, "mode": "standard"})
                self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, region_name=self.region or None, config=config)
            return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, function, **arguments):
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return function(**arguments)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") and what in ("GET", "HEAD"):
                raise Missing(key) from None
            denied = code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "403") or status == 403
            raise BackendError(f"{self.name}: {what} {key}: {code or status} (check the bucket and the credentials in the environment or ~/.aws)", unreachable=denied) from None
        except NoCredentialsError:
            raise BackendError(f"{self.name}: no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials)", unreachable=True) from None
        except (BotoCoreError, OSError) as error:
            reason = type(error).__name__ if not isinstance(error, OSError) else error.strerror or str(error)
            raise BackendError(f"{self.name}: not reachable ({reason})", unreachable=True) from None

    def _get(self, key: str, write, expected: int | None, say=None) -> None:
        """GET key, its body to write(bytes), within the limits and at most expected bytes."""
        with self._meter(key, expected, say) as meter:
            try:
                try:
                    meter.new_attempt()
                    response = self._call("GET", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
                    body = response["Body"]
                    # botocore has no public handle on the socket: the meter cuts it where it can find it; where
                    # not, the read timeout (download_rate_window) bounds each read and the limits are checked between.
                    sock = getattr(getattr(getattr(body, "_raw_stream", None), "connection", None), "sock", None)
                    if sock is not None:
                        meter.watch(sock)
                    meter.expect(response.get("ContentLength"))
                    while chunk := self._call("GET", key, meter.read, stream=body):
                        write(chunk)
                    body.close()
                except BackendError:
                    meter.check()  # the meter cut the connection: its reason
                    raise
            except GaveUp as error:
                raise self._gave_up(key, error) from None

    def upload(self, key: str, source: Path | bytes) -> None:
        if isinstance(source, bytes):
            self._call("PUT", key, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=source)
        else:
            self._call("PUT", key, self.client.upload_file, Filename=str(source), Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self._call("HEAD", key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
            return True
        except Missing:
            return False

    def touch(self, key: str) -> None:
        pass  # S3 keeps no access time; prune goes by the time an entry was pushed

    def list(self):
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/" if self.prefix else ""
        pages = self._call("LIST", prefix or "/", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix)))
        for page in pages:
            for item in page.get("Contents", []):
                yield Listed(item["Key"][len(prefix):], item["Size"], item["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        self._call("DELETE", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))


def _download(get, key: str, destination: Path, size: int | None, say) -> int:
    """get(key, write, size, say) into destination; a failed write names destination (our disk, not the server)."""
    with open(destination, "wb") as handle:
        def write(chunk: bytes) -> None:
            try:
                handle.write(chunk)
            except OSError as error:
                raise OSError(error.errno, error.strerror, str(destination)) from None
        get(key, write, size, say)
    return destination.stat().st_size
