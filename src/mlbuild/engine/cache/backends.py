"""Where cache entries live: a local folder, an HTTP(S)/WebDAV server, an S3 bucket.

Keys are relative paths ("<signature>/manifest.json"). Every backend reads whole
objects into files or bytes and writes them atomically as seen by readers (a
renamed temporary file; nginx's WebDAV and S3 commit a PUT only when complete).
Errors become BackendError with a one-line reason; credentials never appear in it
(credentials.redact), and an HTTP cache's user:password@ is sent to its own origin alone.
"""

import http.client
import os
import shutil
import threading
import urllib.error
import urllib.parse
from pathlib import Path
from typing import NamedTuple

from mlbuild import credentials

READ_ONLY_PREFIX = "ro:"
TIMEOUT = 30  # seconds without a byte from a server before it counts as down


class Missing(Exception):
    """The key is not in the backend (a miss, not a fault)."""


class BackendError(Exception):
    """The backend failed; unreachable=True when further requests are pointless for this run."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


class Listed(NamedTuple):
    key: str
    size: int
    used: float  # last use (file) or last write (S3), seconds since the epoch


def display_url(url: str) -> str:
    """The name a cache is shown and counted by: its URL redacted, an S3 URL without its query (the endpoint)."""
    parts = urllib.parse.urlsplit(url)
    return credentials.redact(urllib.parse.urlunsplit(parts._replace(query="")) if parts.scheme == "s3" else url)


def open_backend(spec: str, say=None):
    """A backend from a configured item: URL, or ro:URL for a read-only one; say(line) tells of a redirect that dropped credentials."""
    writable = not spec.startswith(READ_ONLY_PREFIX)
    url = spec.removeprefix(READ_ONLY_PREFIX)
    scheme = urllib.parse.urlsplit(url).scheme
    kinds = {"file": FileBackend, "http": HttpBackend, "https": HttpBackend, "s3": S3Backend}
    if scheme not in kinds:
        raise BackendError(f"{display_url(url)}: unsupported cache URL (expected file://, http(s):// or s3://)")
    return kinds[scheme](url, writable, say)


class Backend:
    listable = True

    def __init__(self, url: str, writable: bool, say=None):
        self.url = url
        self.name = display_url(url)
        self.writable = writable

    def __repr__(self):
        return f"{type(self).__name__}({self.name})"


class FileBackend(Backend):
    def __init__(self, url: str, writable: bool, say=None):
        super().__init__(url, writable)
        self.root = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))

    def read(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            raise Missing(key) from None
        except OSError as error:
            raise BackendError(f"{self.name}: cannot read {key}: {error.strerror}") from None

    def download(self, key: str, destination: Path) -> int:
        try:
            shutil.copyfile(self.root / key, destination)
        except FileNotFoundError:
            raise Missing(key) from None
        except OSError as error:
            raise BackendError(f"{self.name}: cannot read {key}: {error.strerror}") from None
        return destination.stat().st_size

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


class HttpBackend(Backend):
    """GET to read; PUT (WebDAV, e.g. nginx's dav_methods) to write. Plain HTTP has no listing."""

    listable = False

    def __init__(self, url: str, writable: bool, say=None):
        super().__init__(url, writable)
        self.base = url.rstrip("/") + "/"  # with its user:password@, which credentials.request takes out
        self.headers = {"User-Agent": "mlbuild"}
        self.opener = credentials.opener((lambda line: say(f"artifact cache {line}")) if say else None)

    def _open(self, key: str, method: str = "GET", data=None, length: int | None = None):
        headers = dict(self.headers)
        if length is not None:
            headers["Content-Length"] = str(length)
        request = credentials.request(self.base + key, headers, data, method)
        try:
            return self.opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 404 and method in ("GET", "HEAD"):
                raise Missing(key) from None
            raise BackendError(f"{self.name}: {method} {key}: HTTP {error.code} {error.reason}", unreachable=error.code in (401, 403)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            reason = getattr(reason, "strerror", None) or str(reason)
            raise BackendError(f"{self.name}: not reachable ({reason})", unreachable=True) from None

    def read(self, key: str) -> bytes:
        with self._open(key) as response:
            try:
                return response.read()
            except (OSError, http.client.HTTPException) as error:
                raise BackendError(f"{self.name}: GET {key}: {error}") from None

    def download(self, key: str, destination: Path) -> int:
        with self._open(key) as response, open(destination, "wb") as handle:
            try:
                shutil.copyfileobj(response, handle, 1 << 20)
            except (OSError, http.client.HTTPException) as error:
                if isinstance(error, OSError) and error.filename:
                    raise  # our disk, not the server
                raise BackendError(f"{self.name}: GET {key}: {error}") from None
        return destination.stat().st_size

    def upload(self, key: str, source: Path | bytes) -> None:
        if isinstance(source, bytes):
            self._open(key, "PUT", source, len(source)).close()
        else:
            with open(source, "rb") as handle:
                self._open(key, "PUT", handle, source.stat().st_size).close()

    def exists(self, key: str) -> bool:
        try:
            self._open(key, "HEAD").close()
            return True
        except Missing:
            return False

    def touch(self, key: str) -> None:
        pass  # the server's access log is the only record of use


class S3Backend(Backend):
    """s3://bucket/prefix[?endpoint_url=http://host:port]; credentials from boto3's usual places (env, ~/.aws)."""

    def __init__(self, url: str, writable: bool, say=None):
        super().__init__(url, writable)
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

                config = Config(connect_timeout=5, read_timeout=TIMEOUT, retries={"max_attempts": 2, "mode": "standard"})
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

    def read(self, key: str) -> bytes:
        response = self._call("GET", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return self._call("GET", key, response["Body"].read)

    def download(self, key: str, destination: Path) -> int:
        self._call("GET", key, self.client.download_file, Bucket=self.bucket, Key=self._key(key), Filename=str(destination))
        return destination.stat().st_size

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


