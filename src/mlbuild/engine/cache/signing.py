"""Signed cache entries: who built an archive, vouched for with an Ed25519 key, checked before a restore.

Each pushed archive gets an in-toto Statement v1 with a SLSA provenance v1 predicate: the archive
(its name, sha256 and size) as the subject; the task's signature and output hash, task, recipe and
version as the build's parameters; the host, user, mlbuild version and commit as the builder; the
time. The statement travels in a DSSE envelope (the in-toto standard: payloadType, payload in
base64, signatures with keyid = the key's NAME) stored beside the archive as
<signature>/<archive sha256>.dsse.json: named by the archive, as the archive is, so two pushes of
one signature never pair a manifest with another push's envelope.

A restore from a cache that requires signatures (every one but the per-user folder, unless
cache_require_signatures = false or the cache is one of cache_trust_unsigned) reads the envelope
before it downloads the archive and refuses the entry (Refused, with a reason) unless a key of
cache_trusted_keys that is not revoked signed it and the statement names this entry's archive
(sha256 and size), this task's signature and the manifest's output hash: a valid envelope copied
to another entry (a replay) names another one. `mlbuild graph` and the ETA count an entry as a
restore to come by the same checks (ArtifactCache.accepted), without the archive.
The output is then fully vouched for: the archive's bytes are the signed ones, every file is checked
against the manifest, and the unpacked tree (names, modes, contents) must hash to the signed output hash.

Nothing here remembers a refusal: the next run (a fixed key list) decides anew.
"""

import base64
import binascii
import json
import os
import stat
import time
from pathlib import Path
from typing import NamedTuple

from mlbuild.errors import InputError
from mlbuild.model.models import PUBLIC_KEY_BYTES, SECRET_KEY_BYTES, KEY_NAME, cache_identity, parse_key_text, per_user_artifact_cache

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:mlbuild:artifact-cache-entry:v1"
ENVELOPE_SUFFIX = ".dsse.json"
ENVELOPE_MAX = 64 << 10  # bytes: a statement and a few signatures are about 2 KiB
SIGNATURES_MAX = 16
SIGNED_LATER = "mlbuild cache sign"  # internalParameters.signed_with of a statement made for an entry pushed unsigned


def envelope_key(signature: str, archive_sha256: str) -> str:
    """The key of an entry's envelope: beside its archive, named by the archive's sha256."""
    return f"{signature}/{archive_sha256}{ENVELOPE_SUFFIX}"


class Refused(Exception):
    """An entry that is not trusted. kind groups refusals for the one line per cache and reason; str() says why."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Provenance(NamedTuple):
    """Who vouched for a restored entry: for the stamp and `mlbuild explain`."""

    host: str
    user: str
    time: str
    key: str
    signed_later: bool

    def record(self) -> dict:
        return self._asdict()


# --- keys -------------------------------------------------------------------------------------

def _ed25519():
    # cryptography loads where an entry is signed or checked, never on a no-op.
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519


def generate_key(name: str) -> tuple[str, str]:
    """(secret key text, public key text) of a new key: NAME:BASE64 each, the secret one 64 bytes (seed + public)."""
    if not KEY_NAME.fullmatch(name):
        raise InputError(f"cache keygen: {name!r}: expected a key name of letters, digits, '.', '_', '-' (at most 64), "
                         "with a version such as ci-2026a")
    from cryptography.hazmat.primitives import serialization

    secret = _ed25519().Ed25519PrivateKey.generate()
    seed = secret.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = secret.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{name}:{base64.b64encode(seed + public).decode()}", f"{name}:{base64.b64encode(public).decode()}"


class Signer:
    """A secret key, loaded once; sign() gives a DSSE signature. Its text is never kept, shown or logged."""

    def __init__(self, name: str, secret: bytes):
        from cryptography.hazmat.primitives import serialization

        self.name = name
        self._key = _ed25519().Ed25519PrivateKey.from_private_bytes(secret[:32])
        public = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if public != secret[32:]:
            raise ValueError(f"{name}: its two halves do not belong together (damaged)")
        self.public = f"{name}:{base64.b64encode(public).decode()}"

    def __repr__(self):
        return f"Signer({self.name})"

    def sign(self, payload: bytes) -> dict:
        return {"keyid": self.name, "sig": base64.b64encode(self._key.sign(_pae(payload))).decode()}


def load_signer(place: str, root: Path, environ=None) -> Signer:
    """The secret key from cache_signing_key (a file, or env:VARIABLE); InputError in one line that never shows it."""
    environ = os.environ if environ is None else environ
    where = f"cache_signing_key ({place})"
    if place.startswith("env:"):
        text = environ.get(place[4:], "")
        if not text.strip():
            raise InputError(f"{where}: the variable is not set or empty")
    else:
        path = Path(place).expanduser()
        path = path if path.is_absolute() else root / path
        where = f"cache_signing_key ({path})"
        try:  # O_NONBLOCK: a fifo planted there must not hang the run
            with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise InputError(f"{where}: not a regular file")
                if info.st_mode & 0o077:
                    raise InputError(f"{where}: others can read or write it (mode {stat.S_IMODE(info.st_mode):04o}); "
                                     "`chmod 600` it: a secret key is its owner's alone")
                data = handle.read(4096)
        except OSError as error:
            raise InputError(f"{where}: cannot read it: {error.strerror}") from None
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise InputError(f"{where}: not a key written by `mlbuild cache keygen` (not text)") from None
    try:
        name, secret = parse_key_text(text, SECRET_KEY_BYTES)
        return Signer(name, secret)
    except ValueError as error:
        raise InputError(f"{where}: not a secret key written by `mlbuild cache keygen`: {error}") from None


def _pae(payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is really signed (type and payload, with their lengths)."""
    kind = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


# --- statements -------------------------------------------------------------------------------

_BUILDER: dict | None = None


def builder() -> dict:
    """This machine as a builder: host, user, mlbuild's version and commit (found once per run)."""
    global _BUILDER
    if _BUILDER is None:
        import getpass
        import socket

        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (a container): the uid
            user = str(os.getuid())
        _BUILDER = {"host": socket.gethostname(), "user": user, "mlbuild": _version(), "commit": _commit()}
    return _BUILDER


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("mlbuild")
    except metadata.PackageNotFoundError:
        return "unknown"


def _commit() -> str:
    """mlbuild's git commit when it runs from its own checkout (src/mlbuild), else "" (an installed copy inside
    another repository must not claim that repository's commit)."""
    import subprocess

    package = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=package, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() / "src" / "mlbuild" != package:
        return ""
    return lines[1] if len(lines[1]) in (40, 64) else ""


def statement(manifest: dict, made: dict, finished: float, signed_later: bool = False) -> dict:
    """The in-toto Statement (SLSA provenance v1) of an entry: its archive, its task, who built it (made) and when."""
    internal = {"signature": manifest["signature"], "output_hash": manifest["output_hash"],
                "builder": {"host": made["host"], "user": made["user"]}}
    if signed_later:
        internal["signed_with"] = SIGNED_LATER
    version = {"mlbuild": made["mlbuild"]} | ({"commit": made["commit"]} if made.get("commit") else {})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": manifest["archive"], "digest": {"sha256": manifest["archive_sha256"]},
                     "annotations": {"size": manifest["archive_size"]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"task": manifest["task"], "recipe": manifest["recipe"], "version": manifest["version"]},
                "internalParameters": internal,
                "resolvedDependencies": [],
            },
            "runDetails": {
                "builder": {"id": f"urn:mlbuild:builder:{made['user']}@{made['host']}", "version": version},
                "metadata": {"finishedOn": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished))},
            },
        },
    }


def envelope(statement_: dict, signer: Signer) -> bytes:
    payload = json.dumps(statement_, sort_keys=True, separators=(",", ":")).encode()
    return _envelope_bytes(payload, [signer.sign(payload)])


def _envelope_bytes(payload: bytes, signatures: list[dict]) -> bytes:
    document = {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(), "signatures": signatures}
    return json.dumps(document, indent=1).encode()


def countersign(data: bytes, signer: Signer) -> bytes:
    """The envelope with this signer's signature added (a rotation: the new key vouches for what the old one did)."""
    payload, signatures = read_envelope(data)
    kept = [entry for entry in signatures if entry["keyid"] != signer.name]
    return _envelope_bytes(payload, kept + [signer.sign(payload)])


# --- checking ---------------------------------------------------------------------------------

class Trust:
    """Which caches need signatures, which keys are trusted and revoked, and this run's signing key."""

    def __init__(self, trusted: list[str] = (), revoked: list[str] = (), require: bool = True,
                 signing_key: str = "", root: Path | None = None, unsigned: list[str] = ()):
        self.require = require
        self.unsigned = {cache_identity(spec) for spec in unsigned}  # cache_trust_unsigned: exceptions, cache by cache
        self.signing_key, self.root = signing_key, root or Path.cwd()
        self.trusted: dict[str, bytes] = dict(parse_key_text(text, PUBLIC_KEY_BYTES) for text in trusted)
        self.revoked_names = {text for text in revoked if ":" not in text}
        self.revoked_keys = {parse_key_text(text, PUBLIC_KEY_BYTES)[1] for text in revoked if ":" in text}
        self._public: dict[str, object] = {}
        self._per_user = per_user_artifact_cache()
        self._requires: dict[str, bool] = {}

    @classmethod
    def of(cls, config, root: Path) -> "Trust":
        return cls(config.cache_trusted_keys, config.cache_revoked_keys, config.cache_require_signatures,
                   config.cache_signing_key, root, config.cache_trust_unsigned)

    def is_per_user_folder(self, backend) -> bool:
        """The per-user local folder: trusted as ~/.cache/mlbuild itself is, without signatures (fast, unchanged)."""
        root = getattr(backend, "root", None)
        if root is None:
            return False
        try:
            return Path(root).resolve() == self._per_user.resolve()
        except OSError:
            return False

    def requires(self, backend) -> bool:
        if backend.name not in self._requires:
            self._requires[backend.name] = not self.is_per_user_folder(backend) and self.unchecked_by(backend) is None
        return self._requires[backend.name]

    def unchecked_by(self, backend) -> str | None:
        """The setting that lets this cache restore without a signature check (for its warning line), or None."""
        if not self.require:
            return "cache_require_signatures = false"
        return "cache_trust_unsigned" if cache_identity(backend.url) in self.unsigned else None

    def signer(self) -> Signer:
        """This run's signing key; InputError (one line, never the key) when it is not set or not usable."""
        if not self.signing_key:
            raise InputError("no cache_signing_key is set")
        return load_signer(self.signing_key, self.root)

    def revoked(self, name: str, key: bytes | None) -> bool:
        return name in self.revoked_names or (key is not None and key in self.revoked_keys)

    def verify(self, data: bytes, manifest, signature: str) -> Provenance:
        """The provenance of an entry whose envelope (data) a trusted key signed for this very entry; else Refused."""
        payload, signatures = read_envelope(data)
        good = None
        problems = []
        for entry in signatures:
            name = entry["keyid"]
            key = self.trusted.get(name)
            if self.revoked(name, key):
                problems.append(("revoked:" + name, f"it is signed by {name}, a revoked key (cache_revoked_keys)"))
            elif key is None:
                problems.append(("untrusted:" + name, f"it is signed by {name}, which is not in cache_trusted_keys"))
            elif not self._valid(name, key, entry["sig"], payload):
                problems.append(("bad:" + name, f"its signature by {name} does not verify (the statement or signature was changed)"))
            elif good is None:
                good = name
        if good is None:
            order = ("revoked:", "bad:", "untrusted:")
            problems.sort(key=lambda problem: next(i for i, prefix in enumerate(order) if problem[0].startswith(prefix)))
            raise Refused(*problems[0]) if problems else Refused("unsigned", "its envelope holds no signature")
        return _provenance(_check_statement(payload, manifest, signature), good)

    def _valid(self, name: str, key: bytes, sig: str, payload: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        if name not in self._public:
            self._public[name] = _ed25519().Ed25519PublicKey.from_public_bytes(key)
        try:
            self._public[name].verify(base64.b64decode(sig, validate=True), _pae(payload))
            return True
        except (InvalidSignature, binascii.Error, ValueError):
            return False


def read_envelope(data: bytes) -> tuple[bytes, list[dict]]:
    """(payload, signatures) of a DSSE envelope, its shape checked; Refused("malformed") otherwise."""
    def malformed(why: str) -> Refused:
        return Refused("malformed", f"its signature envelope is malformed: {why}")

    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise malformed("not JSON") from None
    if not isinstance(document, dict) or set(document) - {"payloadType", "payload", "signatures"}:
        raise malformed("expected an object of payloadType, payload and signatures")
    if document.get("payloadType") != PAYLOAD_TYPE:
        raise malformed(f"payloadType: expected {PAYLOAD_TYPE}")
    signatures = document.get("signatures")
    if not isinstance(signatures, list) or len(signatures) > SIGNATURES_MAX or not all(
            isinstance(entry, dict) and isinstance(entry.get("keyid"), str) and KEY_NAME.fullmatch(entry["keyid"])
            and isinstance(entry.get("sig"), str) for entry in signatures):
        raise malformed(f"signatures: expected at most {SIGNATURES_MAX} of {{keyid: a key's name, sig: base64}}")
    try:
        payload = base64.b64decode(document.get("payload") if isinstance(document.get("payload"), str) else "!", validate=True)
    except (binascii.Error, ValueError):
        raise malformed("payload: expected base64") from None
    return payload, signatures


def _check_statement(payload: bytes, manifest, signature: str) -> dict:
    """The signed statement, if it names this entry: this archive (sha256, size), this task's signature, this output."""
    def replayed(why: str) -> Refused:
        return Refused("replayed", f"its signed statement {why} (an envelope of another entry)")

    try:
        document = json.loads(payload)
        subjects = document["subject"]
        predicate = document["predicate"]
        internal = predicate["buildDefinition"]["internalParameters"]
        if document["_type"] != STATEMENT_TYPE or document["predicateType"] != PREDICATE_TYPE:
            raise Refused("malformed", "its signed statement is not an in-toto statement with SLSA provenance v1")
        archives = [(s["digest"]["sha256"], s["annotations"]["size"]) for s in subjects]
        named_signature, named_output = internal["signature"], internal["output_hash"]
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError):
        raise Refused("malformed", "its signed statement does not have the fields mlbuild writes") from None
    if (manifest.archive_sha256, manifest.archive_size) not in archives:
        shown = ", ".join(f"{str(sha)[:12]} ({str(size)[:20]} bytes)" for sha, size in archives[:2]) or "none"
        raise replayed(f"names the archive {shown}, not {manifest.archive_sha256[:12]} ({manifest.archive_size} bytes)")
    if named_signature != signature:
        raise replayed(f"names the task signature {str(named_signature)[:12]}, not this task's {signature[:12]}")
    if named_output != manifest.output_hash:
        raise replayed(f"names the output hash {str(named_output)[:12]}, not the manifest's {manifest.output_hash[:12]}")
    return document


def _provenance(document: dict, key: str) -> Provenance:
    def text(value) -> str:
        return value[:200] if isinstance(value, str) else "?"

    predicate = document.get("predicate", {})
    internal = predicate.get("buildDefinition", {}).get("internalParameters", {})
    made = internal.get("builder") if isinstance(internal.get("builder"), dict) else {}
    metadata = predicate.get("runDetails", {}).get("metadata", {}) if isinstance(predicate.get("runDetails"), dict) else {}
    return Provenance(text(made.get("host")), text(made.get("user")), text(metadata.get("finishedOn")), key,
                      internal.get("signed_with") == SIGNED_LATER)


def describe_provenance(record) -> str:
    """", built by ci-2 on 2026-12-07T10:00:00Z, key ci-2026a" of a stamp's provenance (a damaged one: "")."""
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("host", "time", "key")):
        return ""
    if record.get("signed_later") is True:
        return f", pushed unsigned on {record['time']} and signed later by {record['host']} ({SIGNED_LATER}), key {record['key']}"
    return f", built by {record['host']} on {record['time']}, key {record['key']}"
