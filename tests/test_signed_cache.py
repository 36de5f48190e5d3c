"""Signed artifact cache entries (issue 29): who may put outputs into a build, checked before anything is downloaded.

Every cache but the per-user folder restores only entries signed by a trusted, unrevoked key whose signed statement
names that very entry. The caches are real: file:// folders warmed by builds of the synthetic project (signed by the
test key conftest gives every project), and nginx's WebDAV and SeaweedFS's S3 on 127.0.0.1 (tests/servers.py).
"""

import base64
import hashlib
import json
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ALL_TASKS, TEST_KEY_FILE, TEST_KEY_NAME, TEST_PUBLIC, assert_stamps_valid, key_pair, make_project, x86
from test_artifact_cache import CACHED, _entry, cache, faults, fresh, manifests, restored, sign_entry, warm_cache  # noqa: F401
from test_artifact_cache_servers import nginx, s3  # noqa: F401 (fixtures: real servers)

from mlbuild.engine.cache.signing import PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, _pae, envelope_key

HELLO = "build:hello-x86_64"
OLD_SECRET, OLD_PUBLIC = key_pair("ci-2026a", hashlib.sha256(b"ci-2026a").digest())
NEW_SECRET, NEW_PUBLIC = key_pair("ci-2026b", hashlib.sha256(b"ci-2026b").digest())
ROGUE_SECRET, ROGUE_PUBLIC = key_pair("rogue-2026a", hashlib.sha256(b"rogue").digest())


def key_file(folder: Path, secret: str, name: str = "key.secret") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def trusting(*public: str, signing: Path | str = "", revoked: tuple[str, ...] = ()) -> list[str]:
    """doit/mlbuild key=value settings: these keys trusted (and revoked), this key signing ("" none)."""
    return [f"cache_trusted_keys={','.join(public)}", f"cache_signing_key={signing}", f"cache_revoked_keys={','.join(revoked)}"]


def envelope_of(cache: Path, task: str, project=None) -> Path:
    """The envelope of a task's entry: the only one of the task, or (project given) that of its stamp's signature."""
    if project is None:
        manifest = manifests(cache)[task]
    else:
        signature = json.loads(project.stamp(task).read_text())["signature"]
        manifest = json.loads((cache / signature / "manifest.json").read_text())
    return cache / envelope_key(manifest["signature"], manifest["archive_sha256"])


def statement_of(path: Path) -> dict:
    return json.loads(base64.b64decode(json.loads(path.read_bytes())["payload"]))


def trust_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "not trusted" in line]


# --- what a push signs ----------------------------------------------------------------------

def test_a_push_signs_each_entry_with_an_in_toto_statement_that_the_public_key_verifies(warm_cache):
    """Checked with cryptography directly, not with mlbuild's own reader: DSSE's PAE, Ed25519, the statement's fields."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(TEST_PUBLIC.split(":")[1]))
    stamps = Path(warm_cache.parent / "project" / "build" / "state")
    for task, manifest in manifests(warm_cache).items():
        path = envelope_of(warm_cache, task)
        document = json.loads(path.read_bytes())
        assert document["payloadType"] == PAYLOAD_TYPE == "application/vnd.in-toto+json"
        [signature] = document["signatures"]
        assert signature["keyid"] == TEST_KEY_NAME
        payload = base64.b64decode(document["payload"])
        pae = b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)
        assert _pae(payload) == pae
        public.verify(base64.b64decode(signature["sig"]), pae)  # raises if it does not verify
        statement = json.loads(payload)
        assert (statement["_type"], statement["predicateType"]) == (STATEMENT_TYPE, PREDICATE_TYPE)
        [subject] = statement["subject"]
        archive = warm_cache / manifest["signature"] / manifest["archive"]
        assert subject["digest"]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
        assert subject["annotations"]["size"] == archive.stat().st_size
        build = statement["predicate"]["buildDefinition"]
        assert build["externalParameters"] == {"task": task, "recipe": manifest["recipe"], "version": manifest["version"]}
        stamp = json.loads((stamps / (task.replace(":", "_") + ".json")).read_text())
        assert build["internalParameters"]["signature"] == stamp["signature"]
        assert build["internalParameters"]["output_hash"] == stamp["output_hash"]
        assert build["internalParameters"]["builder"]["host"] == os.uname().nodename
        run = statement["predicate"]["runDetails"]
        assert run["builder"]["version"]["mlbuild"] and run["metadata"]["finishedOn"].startswith("20")
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True).stdout.strip()
        assert run["builder"]["version"].get("commit") == commit


def test_a_fresh_clone_restores_signed_entries_and_explain_says_who_built_them_and_with_which_key(fresh, cache):
    result = fresh.doit(f"cache={cache.as_uri()}")
    assert result.returncode == 0 and restored(result) == CACHED and faults(result) == [], result.stdout + result.stderr
    assert f"signed by {TEST_KEY_NAME})" in fresh.log(HELLO)
    explain = fresh.cli("explain", "hello-x86_64", env={"MLBUILD_CACHE": cache.as_uri()})
    when = statement_of(envelope_of(cache, HELLO))["predicate"]["runDetails"]["metadata"]["finishedOn"]
    assert (f"restored from {cache.as_uri()}, built by {os.uname().nodename} on {when}, key {TEST_KEY_NAME})"
            in explain.stdout), explain.stdout


def test_one_signature_by_a_trusted_key_is_enough_beside_others_and_the_reason_names_the_worst():
    """Unit: Trust.verify over envelopes with several signatures (a rotation's countersigned entries)."""
    from types import SimpleNamespace

    from mlbuild.engine.cache.signing import Refused, Signer, Trust, countersign, envelope, statement
    from mlbuild.model.models import SECRET_KEY_BYTES, parse_key_text

    def signer(secret: str) -> Signer:
        return Signer(*parse_key_text(secret, SECRET_KEY_BYTES))

    made = {"host": "ci-2", "user": "ci", "mlbuild": "0.1.0", "commit": ""}
    manifest = {"signature": "a" * 64, "output_hash": "b" * 64, "archive": "c" * 64 + ".tar.zst", "archive_sha256": "c" * 64,
                "archive_size": 123, "task": HELLO, "recipe": "hello", "version": "1.0"}
    entry = SimpleNamespace(**manifest)
    by_old = envelope(statement(manifest, made, 0), signer(OLD_SECRET))
    both = countersign(by_old, signer(NEW_SECRET))
    assert Trust([NEW_PUBLIC], revoked=["ci-2026a"]).verify(both, entry, "a" * 64).key == "ci-2026b"
    assert Trust([OLD_PUBLIC, NEW_PUBLIC]).verify(both, entry, "a" * 64).host == "ci-2"
    with pytest.raises(Refused, match="signed by ci-2026a, a revoked key"):
        Trust([OLD_PUBLIC], revoked=[OLD_PUBLIC]).verify(both, entry, "a" * 64)  # revoked by its key, and ci-2026b unknown
    with pytest.raises(Refused, match="names the task signature aaaaaaaaaaaa, not this task's dddddddddddd"):
        Trust([OLD_PUBLIC]).verify(by_old, entry, "d" * 64)
    forged = json.loads(both)
    forged["payload"] = base64.b64encode(json.dumps({**statement(manifest, made, 0), "extra": 1}).encode()).decode()
    with pytest.raises(Refused, match="its signature by ci-2026a does not verify"):
        Trust([OLD_PUBLIC]).verify(json.dumps(forged).encode(), entry, "a" * 64)
    assert repr(signer(OLD_SECRET)) == "Signer(ci-2026a)" and OLD_SECRET.split(":")[1] not in repr(vars(signer(OLD_SECRET)))


# --- refused: one line per cache and reason, built locally -------------------------------------

@pytest.mark.slow
def test_unsigned_entries_are_refused_in_one_line_built_locally_and_replaced_by_signed_pushes(fresh, cache, tmp_path):
    for path in cache.glob("*/*.dsse.json"):
        path.unlink()
    result = fresh.doit(f"cache={cache.as_uri()}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert restored(result) == set() and result.executed == ALL_TASKS
    lines = faults(result)
    assert len(lines) == 1, lines  # five entries refused, one line: per cache and reason
    assert lines[0].startswith("build:") and f"in {cache.as_uri()} not trusted: it is not signed" in lines[0], lines
    assert "building locally, and the build replaces it" in lines[0]
    for task in CACHED:
        assert "not trusted: it is not signed" in fresh.log(task)
    assert all("# running" in fresh.log(task) for task in x86("hello", "extra", "app"))
    assert fresh.run_binary("app") == "app says hi\n"
    assert_stamps_valid(fresh)
    stats = fresh.cli("cache", "stats", env={"MLBUILD_CACHE": cache.as_uri()})
    assert f"{cache.as_uri()} (read-write): 0 hits, 0 misses, 0 faults, 5 refused, 5 pushes" in stats.stdout, stats.stdout
    # The build signed its pushes over the refused entries: the next clone restores every one, without a word.
    second = make_project(tmp_path / "second").doit(f"cache={cache.as_uri()}")
    assert restored(second) == CACHED and faults(second) == [], second.stdout + second.stderr


def test_a_read_only_cache_of_unsigned_entries_is_left_as_it_is(fresh, cache):
    for path in cache.glob("*/*.dsse.json"):
        path.unlink()
    before = sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))
    result = fresh.doit(f"cache=ro:{cache.as_uri()}")
    assert result.returncode == 0 and restored(result) == set()
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.endswith("building locally (said once for this cache and reason: the other task logs name theirs)"), line
    assert sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) == before


def test_a_tampered_archive_with_a_matching_manifest_and_the_old_envelope_is_refused(fresh, cache):
    """The writer changes the archive, rewrites the manifest to match it and renames the (valid) envelope beside it:
    the signed statement names the archive the builder made, not this one."""
    manifests_before = manifests(cache)
    manifest_path, archive, manifest = _entry(cache, HELLO)
    old_envelope = envelope_of(cache, HELLO)
    tampered = archive.read_bytes() + b"\0" * 512  # zstd ignores nothing: still, the sha256 and size are what differ
    sha = hashlib.sha256(tampered).hexdigest()
    archive.unlink()
    (archive.parent / f"{sha}.tar.zst").write_bytes(tampered)
    manifest.update(archive=f"{sha}.tar.zst", archive_sha256=sha, archive_size=len(tampered))
    manifest_path.write_text(json.dumps(manifest))
    old_envelope.rename(cache / envelope_key(manifest["signature"], sha))
    result = fresh.doit(f"cache=ro:{cache.as_uri()}")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith(f"{HELLO}: artifact cache entry {manifest['signature'][:12]} in {cache.as_uri()} not trusted: "), line
    assert (f"not trusted: its signed statement names the archive {manifests_before[HELLO]['archive_sha256'][:12]} "
            f"({manifests_before[HELLO]['archive_size']} bytes), not {sha[:12]} ({len(tampered)} bytes) (an envelope of another "
            "entry)") in line, line
    assert restored(result) == CACHED - x86("hello") and fresh.run_binary("hello") == "Hello, world!\n"


def test_another_entrys_manifest_archive_and_valid_envelope_under_this_signature_are_refused_as_a_replay(fresh, cache):
    """extra's whole entry, its manifest edited to claim hello's signature (manifests are not signed): the envelope is
    valid, by a trusted key, but its statement names extra's task signature."""
    hello_manifest_path, hello_archive, hello = _entry(cache, HELLO)
    _, extra_archive, extra = _entry(cache, "build:extra-x86_64")
    hello_archive.unlink()
    envelope_of(cache, HELLO).unlink()
    shutil.copy(extra_archive, hello_manifest_path.parent / extra["archive"])
    shutil.copy(envelope_of(cache, "build:extra-x86_64"), cache / envelope_key(hello["signature"], extra["archive_sha256"]))
    hello_manifest_path.write_text(json.dumps({**extra, "signature": hello["signature"], "task": HELLO}))
    result = fresh.doit(f"cache={cache.as_uri()}")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert (f"not trusted: its signed statement names the task signature {extra['signature'][:12]}, not this task's "
            f"{hello['signature'][:12]} (an envelope of another entry)") in line, line
    assert "build:hello-x86_64" not in restored(result)
    assert fresh.run_binary("hello") == "Hello, world!\n" and not fresh.path("build/out/hello-x86_64/bin/extra").exists()


def test_entries_signed_by_an_unknown_key_are_refused_naming_the_key(fresh, cache, tmp_path):
    for manifest in manifests(cache).values():
        sign_entry(cache, manifest, ROGUE_SECRET)
    result = fresh.doit(f"cache=ro:{cache.as_uri()}")
    assert result.returncode == 0 and restored(result) == set()
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert "not trusted: it is signed by rogue-2026a, which is not in cache_trusted_keys" in line, line


@pytest.mark.parametrize("revoked", ["name", "key"])
def test_a_revoked_key_is_refused_even_when_it_is_also_trusted(fresh, cache, revoked):
    entry = TEST_KEY_NAME if revoked == "name" else TEST_PUBLIC
    result = fresh.doit(f"cache=ro:{cache.as_uri()}", f"cache_revoked_keys={entry}")
    assert result.returncode == 0 and restored(result) == set() and result.executed == ALL_TASKS
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert f"not trusted: it is signed by {TEST_KEY_NAME}, a revoked key (cache_revoked_keys)" in line, line
    # Nothing is remembered: without the revocation, the same entries restore at once.
    fresh.path("build").rename(fresh.root / "build.old")
    again = fresh.doit(f"cache=ro:{cache.as_uri()}")
    assert restored(again) == CACHED and faults(again) == [], again.stderr


def test_a_damaged_envelope_is_refused_in_one_line(fresh, cache):
    envelope_of(cache, HELLO).write_text("{not json")
    data = json.loads(envelope_of(cache, "build:extra-x86_64").read_text())
    data["signatures"][0]["sig"] = base64.b64encode(b"\1" * 64).decode()  # a trusted key's name, a signature it never made
    envelope_of(cache, "build:extra-x86_64").write_text(json.dumps(data))
    result = fresh.doit(f"cache=ro:{cache.as_uri()}")
    assert restored(result) == CACHED - x86("hello", "extra"), result.stdout + result.stderr
    lines = sorted(faults(result))
    assert len(lines) == 2 and "its signature envelope is malformed: not JSON" in lines[1], lines
    assert f"its signature by {TEST_KEY_NAME} does not verify" in lines[0], lines


@pytest.mark.slow
def test_rotation_old_and_new_trusted_then_old_removed_then_re_trusted_heals_at_once(tmp_path):
    """Keys ci-2026a (old) and ci-2026b (new). A reader without a signing key (a developer) never replaces entries."""
    keys = tmp_path / "keys"
    old, new = key_file(keys, OLD_SECRET, "old.secret"), key_file(keys, NEW_SECRET, "new.secret")
    url = (tmp_path / "cache").as_uri()
    writer = make_project(tmp_path / "writer")
    assert writer.doit(f"cache={url}", *trusting(OLD_PUBLIC, signing=old)).returncode == 0  # CI, with the old key
    # The rotation: CI signs with the new key; both are trusted meanwhile. Its next change pushes new entries.
    writer.update_recipe("app", vars={"message": "rotated"})
    pushed = writer.doit(f"cache={url}", *trusting(OLD_PUBLIC, NEW_PUBLIC, signing=new))
    assert pushed.returncode == 0 and pushed.executed == x86("app", "target", "images"), pushed.stderr
    signed_by = {task: json.loads(envelope_of(tmp_path / "cache", task, writer).read_text())["signatures"][0]["keyid"]
                 for task in CACHED}
    assert signed_by == {**dict.fromkeys(x86("hello", "extra"), "ci-2026a"), **dict.fromkeys(x86("app", "target", "images"), "ci-2026b")}

    reader = make_project(tmp_path / "reader")  # a developer: reads CI's cache (ro:), has no signing key
    reader.update_recipe("app", vars={"message": "rotated"})
    both = reader.doit(f"cache=ro:{url}", *trusting(OLD_PUBLIC, NEW_PUBLIC))
    assert restored(both) == CACHED and faults(both) == [], both.stderr
    # The old key removed: its entries are refused (one line), the new key's are restored.
    shutil.rmtree(reader.path("build"))
    only_new = reader.doit(f"cache=ro:{url}", *trusting(NEW_PUBLIC))
    assert only_new.returncode == 0, only_new.stderr
    lines = faults(only_new)
    assert len(lines) == 1, only_new.stderr
    [line] = lines
    assert "it is signed by ci-2026a, which is not in cache_trusted_keys" in line and line.endswith(
        "building locally (said once for this cache and reason: the other task logs name theirs)"), line
    assert restored(only_new) == x86("app", "target", "images")  # hello and extra rebuilt the same bytes
    assert reader.run_binary("app") == "rotated\n"
    # Re-trusted: restored at once; nothing of the refusal was remembered.
    shutil.rmtree(reader.path("build"))
    again = reader.doit(f"cache=ro:{url}", *trusting(OLD_PUBLIC, NEW_PUBLIC))
    assert restored(again) == CACHED and faults(again) == [], again.stderr


@pytest.mark.slow
def test_cache_sign_adds_the_new_keys_signature_so_that_the_old_key_can_go(tmp_path):
    keys = tmp_path / "keys"
    old, new = key_file(keys, OLD_SECRET, "old.secret"), key_file(keys, NEW_SECRET, "new.secret")
    cache = tmp_path / "cache"
    writer = make_project(tmp_path / "writer")
    assert writer.doit(f"cache={cache.as_uri()}", *trusting(OLD_PUBLIC, signing=old)).returncode == 0
    signing = writer.cli("cache", "sign", *trusting(OLD_PUBLIC, NEW_PUBLIC, signing=new), env={"MLBUILD_CACHE": cache.as_uri()})
    assert signing.returncode == 0, signing.stdout + signing.stderr
    assert "signed 0 entries, added ci-2026b's signature to 5; 0 already signed by it; 0 refused or unusable" in signing.stdout
    assert {entry["keyid"] for entry in json.loads(envelope_of(cache, HELLO).read_text())["signatures"]} == {"ci-2026a", "ci-2026b"}
    again = writer.cli("cache", "sign", *trusting(OLD_PUBLIC, NEW_PUBLIC, signing=new), env={"MLBUILD_CACHE": cache.as_uri()})
    assert "5 already signed by it" in again.stdout
    reader = make_project(tmp_path / "reader")
    result = reader.doit(f"cache={cache.as_uri()}", *trusting(NEW_PUBLIC, revoked=("ci-2026a",)))
    assert restored(result) == CACHED and faults(result) == [], result.stderr
    assert "key ci-2026b" in reader.cli("explain", "hello-x86_64").stdout


# --- signing what was pushed before signing existed ------------------------------------------------

@pytest.fixture
def unsigned_cache(tmp_path) -> Path:
    """A cache a trusted builder filled before signing existed: no envelope anywhere."""
    cache = tmp_path / "unsigned"
    builder = make_project(tmp_path / "builder")
    result = builder.doit(f"cache={cache.as_uri()}", "cache_signing_key=", "cache_require_signatures=0")
    assert result.returncode == 0 and not list(cache.glob("*/*.dsse.json")), result.stderr
    assert "cache_require_signatures = false" in result.stderr
    return cache


@pytest.mark.slow
def test_cache_sign_signs_old_entries_after_checking_each_archive_and_refuses_a_damaged_one(unsigned_cache, fresh):
    env = {"MLBUILD_CACHE": unsigned_cache.as_uri()}
    _, archive, manifest = _entry(unsigned_cache, "build:extra-x86_64")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    verify = fresh.cli("cache", "verify", env=env)
    assert verify.returncode == 1 and verify.stdout.count("not trusted: it is not signed") == 5, verify.stdout
    signing = fresh.cli("cache", "sign", env=env)
    assert signing.returncode == 1, signing.stdout + signing.stderr
    assert (f"artifact cache entry {manifest['signature'][:12]} in {unsigned_cache.as_uri()} unusable: its archive's sha256 "
            "differs from the manifest's (corrupt); not signed") in signing.stdout, signing.stdout
    assert "signed 4 entries, added test-2026a's signature to 0; 0 already signed by it; 1 refused or unusable" in signing.stdout
    assert not envelope_of(unsigned_cache, "build:extra-x86_64").exists()
    statement = statement_of(envelope_of(unsigned_cache, HELLO))
    assert statement["predicate"]["buildDefinition"]["internalParameters"]["signed_with"] == "mlbuild cache sign"
    result = fresh.doit(f"cache=ro:{unsigned_cache.as_uri()}")
    assert restored(result) == CACHED - x86("extra"), result.stdout + result.stderr
    assert "pushed unsigned on" in fresh.cli("explain", "hello-x86_64").stdout


def test_cache_sign_never_signs_over_an_untrusted_or_revoked_key(cache, fresh):
    sign_entry(cache, manifests(cache)[HELLO], ROGUE_SECRET)
    signing = fresh.cli("cache", "sign", "cache_revoked_keys=" + TEST_KEY_NAME, env={"MLBUILD_CACHE": cache.as_uri()})
    assert signing.returncode == 1
    assert signing.stdout.count("a revoked key (cache_revoked_keys); not signed") == 4, signing.stdout
    assert "it is signed by rogue-2026a, which is not in cache_trusted_keys; not signed" in signing.stdout
    assert "signed 0 entries" in signing.stdout


def test_cache_verify_names_each_entry_that_is_not_trusted(cache, fresh):
    env = {"MLBUILD_CACHE": cache.as_uri()}
    good = fresh.cli("cache", "verify", env=env)
    assert good.returncode == 0 and "verified 5 entries: 5 good, 0 bad" in good.stdout, good.stdout + good.stderr
    envelope_of(cache, HELLO).unlink()
    sign_entry(cache, manifests(cache)["build:app-x86_64"], ROGUE_SECRET)
    bad = fresh.cli("cache", "verify", env=env)
    assert bad.returncode == 1 and "3 good, 2 bad" in bad.stdout, bad.stdout
    signature = manifests(cache)[HELLO]["signature"]
    assert f"artifact cache entry {signature[:12]} in {cache.as_uri()} not trusted: it is not signed" in bad.stdout
    assert "not trusted: it is signed by rogue-2026a, which is not in cache_trusted_keys" in bad.stdout


# --- the signing key: missing, unreadable, never shown ------------------------------------------------

@pytest.mark.parametrize("place, why", [
    ("missing.secret", "cannot read it: No such file or directory"),
    ("folder", "cannot read it: Is a directory"),
    ("fifo", "not a regular file"),
    ("open.secret", "others can read or write it (mode 0644)"),
    ("env:MLBUILD_CACHE_KEY", "the variable is not set or empty"),
])
def test_a_signing_key_that_cannot_be_used_is_one_line_nothing_is_pushed_and_the_build_goes_on(tmp_path, place, why):
    project = make_project(tmp_path)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    key_file(tmp_path, OLD_SECRET, "open.secret").chmod(0o644)
    cache = tmp_path / "cache"
    spot = place if place.startswith("env:") else str(tmp_path / place)
    result = project.doit(f"cache={cache.as_uri()}", f"cache_signing_key={spot}")
    assert result.returncode == 0 and result.executed == ALL_TASKS, result.stdout + result.stderr
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("build:") and f"not pushed to artifact cache {cache.as_uri()}, which requires signatures: " in line, line
    assert f"cache_signing_key ({spot}): {why}" in line and line.endswith("the build goes on (said once for this cache in this run)"), line
    assert not cache.exists() or not list(cache.rglob("*.json"))
    assert project.run_binary("app") == "app says hi\n"


def test_without_a_signing_key_nothing_is_pushed_to_a_cache_that_requires_signatures(tmp_path):
    project = make_project(tmp_path)
    cache = tmp_path / "cache"
    result = project.doit(f"cache={cache.as_uri()}", "cache_signing_key=")
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert "which requires signatures: no cache_signing_key is set; the build goes on" in line, line
    assert result.returncode == 0 and not cache.exists()


def test_the_per_user_folder_needs_no_signature_and_gets_no_envelope(tmp_path):
    """~/.cache/mlbuild/artifacts, unchanged: trusted as the rest of ~/.cache/mlbuild is; nothing signed, nothing checked."""
    home = tmp_path / "xdg"
    env = {"XDG_CACHE_HOME": str(home)}
    cold = make_project(tmp_path / "cold")
    cold.write("pyproject.toml", cold.read("pyproject.toml").replace("cache = []\n", ""))
    assert cold.doit(env=env).returncode == 0
    folder = home / "mlbuild" / "artifacts"
    assert len(list(folder.glob("*/manifest.json"))) == len(CACHED) and not list(folder.glob("*/*.dsse.json"))
    fresh = make_project(tmp_path / "fresh")
    fresh.write("pyproject.toml", fresh.read("pyproject.toml").replace("cache = []\n", "").replace(f'cache_trusted_keys = ["{TEST_PUBLIC}"]\n', ""))
    result = fresh.doit(env=env)
    assert restored(result) == CACHED and faults(result) == [], result.stderr


def unchecked_warning(why: str, cache: str) -> str:
    return (f"artifact cache: warning: {why}: {cache} restores entries without checking who signed them; "
            "whoever can write there can put outputs into your builds")


def test_cache_require_signatures_false_restores_unsigned_entries_with_one_warning_line(unsigned_cache, fresh):
    result = fresh.doit(f"cache={unsigned_cache.as_uri()}", "cache_require_signatures=false")
    assert restored(result) == CACHED, result.stdout + result.stderr
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line == unchecked_warning("cache_require_signatures = false", unsigned_cache.as_uri())


def test_cache_trust_unsigned_exempts_only_the_caches_it_names_with_one_warning_line_each(unsigned_cache, fresh, tmp_path):
    """Two caches of the same unsigned entries, tried in order: the first (not named) refuses them, the second
    (named, with a trailing slash and ro: as a user may write it) restores them without a check, and says so."""
    other = tmp_path / "other-unsigned"
    shutil.copytree(unsigned_cache, other)
    exempt = unsigned_cache.as_uri()
    result = fresh.doit(f"cache=ro:{other.as_uri()},ro:{exempt}", f"cache_trust_unsigned=ro:{exempt}/")
    assert result.returncode == 0 and restored(result) == CACHED, result.stdout + result.stderr
    warning, refused = faults(result)
    assert warning == unchecked_warning("cache_trust_unsigned", exempt)
    assert refused.startswith("build:") and f" in {other.as_uri()} not trusted: it is not signed" in refused, refused
    assert set(ended_from(result)) == {exempt}
    # the list is of exceptions: a cache it does not name still requires signatures, so nothing restores
    shutil.rmtree(fresh.path("build"))
    alone = fresh.doit(f"cache=ro:{other.as_uri()}", "cache_trust_unsigned=")
    assert alone.returncode == 0 and restored(alone) == set() and len(trust_lines(alone)) == 1, alone.stderr


def ended_from(result) -> list[str]:
    """The caches the restores came from (one line each: `TASK: restored from CACHE`)."""
    return [line.split(": restored from ")[1].split(" ")[0] for line in result.stdout.splitlines() if ": restored from " in line]


@pytest.mark.parametrize("given, hint", [
    ("file:///nowhere/at-all", ""),
    ("{cache}x", " (did you mean '{cache}'?)"),
])
def test_a_cache_trust_unsigned_that_names_no_configured_cache_is_one_line_with_did_you_mean(unsigned_cache, fresh, given, hint):
    url = unsigned_cache.as_uri()
    given, hint = given.format(cache=url), hint.format(cache=url)
    result = fresh.doit(f"cache={url}", f"cache_trust_unsigned={given}")
    assert result.returncode != 0 and result.executed == set(), result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"mlbuild: command line: cache_trust_unsigned: {given!r} is not one of the caches{hint}; "
        f"expected a URL of cache (command line): {url}"], result.stderr
    # `cache=` turns every cache off: the exceptions exempt nothing then, and are no error
    assert fresh.doit("cache=", f"cache_trust_unsigned={given}").returncode == 0


# --- what `mlbuild graph` and the ETA count as a restore: what the restore would take ---------------------

EXTRA = "build:extra-x86_64"
GRAPH_COLOUR = re.compile(r'"([^"]+)" \[shape=\w+, style=filled, fillcolor="(#[0-9a-f]+)"\]')
RESTORE_COLOUR, RUN_COLOUR = "#9ecae1", "#fdae6b"


def slow_extra(project):
    """extra takes 3 s to build: its manifest says so, and an ETA that counts its build shows it."""
    project.write("templates/build/extra.sh.j2", "sleep 3\n" + project.read("templates/build/extra.sh.j2"))
    return project


@pytest.fixture
def slow_cache(tmp_path) -> Path:
    """A cache signed by the test key, of a project whose extra takes 3 s to build; extra's envelope removed (unsigned)."""
    cache = tmp_path / "slow-cache"
    writer = slow_extra(make_project(tmp_path / "writer"))
    result = writer.doit(f"cache={cache.as_uri()}")
    assert result.returncode == 0 and len(manifests(cache)) == len(CACHED), result.stderr
    assert manifests(cache)[EXTRA]["build_seconds"] >= 3
    return cache


def graph(project, *settings) -> tuple[str, dict[str, str], str]:
    """(the counts line, {task: colour}, stderr) of `mlbuild graph`."""
    result = project.cli("graph", *settings)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = [line for line in result.stdout.splitlines() if line.startswith("next build: ")]
    return counts[0], dict(GRAPH_COLOUR.findall(project.read("build/graph.dot"))), result.stderr


def test_graph_paints_restore_only_an_entry_whose_signature_the_restore_would_accept(slow_cache, tmp_path):
    reader = slow_extra(make_project(tmp_path / "reader"))
    setting = f"cache=ro:{slow_cache.as_uri()}"
    assert restored(reader.doit(setting)) == CACHED
    for task in (HELLO, EXTRA):  # to run again, their dependency (fetch:hello) up to date: the graph asks the cache
        assert reader.doit("clean", task).returncode == 0
    line, colour, _ = graph(reader, setting)
    assert line == "next build: 2 up to date, 3 run if a dependency's output changes, 2 restore from cache", line
    envelope_of(slow_cache, EXTRA).unlink()  # extra's entry unsigned: the restore would refuse it and build
    line, colour, said = graph(reader, setting)
    assert line == "next build: 2 up to date, 1 run, 3 run if a dependency's output changes, 1 restore from cache", line
    assert (colour[HELLO], colour[EXTRA]) == (RESTORE_COLOUR, RUN_COLOUR) and said == "", said
    build = reader.doit(setting)  # and so it is: hello restored, extra built
    assert restored(build) == {HELLO} and EXTRA in build.executed and len(trust_lines(build)) == 1, build.stdout + build.stderr
    for task in (HELLO, EXTRA):
        assert reader.doit("clean", task).returncode == 0
    # hello's key no longer trusted: a run, at once (nothing of the last verdict was kept)
    assert graph(reader, setting, "cache_trusted_keys=")[1][HELLO] == RUN_COLOUR
    assert graph(reader, setting)[1][HELLO] == RESTORE_COLOUR
    # extra's cache exempted from signatures (cache_trust_unsigned): a restore again, with the warning line
    line, colour, said = graph(reader, setting, f"cache_trust_unsigned={slow_cache.as_uri()}")
    assert colour[EXTRA] == RESTORE_COLOUR and said.strip() == unchecked_warning("cache_trust_unsigned", slow_cache.as_uri())


def test_the_eta_counts_the_build_of_an_entry_the_restore_would_refuse(slow_cache, tmp_path):
    """A fresh clone's ETA before its first task (as tests/test_progress_and_stats.py takes it): extra's signed entry is
    a restore (about 0.2 s), its unsigned one a build (its manifest's 3 s), unless its cache is exempted."""
    from types import SimpleNamespace

    from mlbuild.frontend.project import Project
    from mlbuild.reporting.progress import reporter_for

    fresh = slow_extra(make_project(tmp_path / "fresh"))

    def eta_before_the_first_task(**environ) -> float:
        loaded = Project(fresh.root, environ={"MLBUILD_CACHE": f"ro:{slow_cache.as_uri()}", **environ})
        reporter = reporter_for(loaded)(io.StringIO(), {})
        tasks = {name: SimpleNamespace(task_dep=step.deps, actions=[None]) for name, step in loaded.steps.items()}
        reporter.initialize(tasks, ["build:images-x86_64", EXTRA])
        reporter._load_history()
        seconds, unknown, overdue = reporter.eta()
        assert unknown == 2 and not overdue  # the two fetches: not in the artifact cache, no history
        return seconds

    assert eta_before_the_first_task() < 2  # every task a restore of a few kB
    envelope_of(slow_cache, EXTRA).unlink()
    assert eta_before_the_first_task() >= 3  # extra is built: its 3 s count
    assert eta_before_the_first_task(MLBUILD_CACHE_TRUST_UNSIGNED=slow_cache.as_uri()) < 2
    assert eta_before_the_first_task(MLBUILD_CACHE_TRUSTED_KEYS="") >= 3  # no key trusted: every task a build


def test_keygen_writes_a_secret_file_of_its_own_prints_the_public_key_and_never_overwrites(fresh, tmp_path):
    path = tmp_path / "keys" / "ci-2026a.secret"
    made = fresh.cli("cache", "keygen", "ci-2026a", "--output", str(path))
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert public.startswith("ci-2026a:") and len(base64.b64decode(public.split(":")[1])) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    secret = path.read_text().strip()
    assert secret.split(":")[1] not in made.stdout + made.stderr
    again = fresh.cli("cache", "keygen", "ci-2026a", "--output", str(path))
    assert again.returncode == 2 and f"{path} exists: a key is never overwritten" in again.stderr
    assert path.read_text().strip() == secret
    assert fresh.cli("cache", "keygen", "bad name!", "--output", str(tmp_path / "x")).returncode == 2
    # The pair works: signed with the file, restored by a project trusting the printed key.
    cache = tmp_path / "cache"
    assert fresh.doit(f"cache={cache.as_uri()}", *trusting(public, signing=path)).returncode == 0
    other = make_project(tmp_path / "other")
    result = other.doit(f"cache={cache.as_uri()}", *trusting(public))
    assert restored(result) == CACHED and faults(result) == [], result.stderr


@pytest.mark.parametrize("setting, expected", [
    ("cache_trusted_keys={secret}", "cache_trusted_keys[0]: ci-2026a: expected a public key (32 bytes), got a secret key (the value is not shown)"),
    ("cache_signing_key={secret}", "cache_signing_key: holds a key itself: expected the path of the secret key's file or env:VARIABLE"),
    ("cache_trusted_keys={public},ci-2026a:{other}", "cache_trusted_keys: two keys are named ci-2026a"),
    ("cache_trusted_keys=ci 2026:abc", "expected NAME:BASE64"),
    ("cache_revoked_keys=ci-2026a:abc", "cache_revoked_keys[0]: ci-2026a: what follows the name is not base64"),
])
def test_keys_in_the_configuration_are_checked_in_one_line_that_never_shows_a_secret(fresh, setting, expected):
    other = NEW_PUBLIC.split(":")[1]
    result = fresh.cli("explain", "hello-x86_64", setting.format(secret=OLD_SECRET, public=OLD_PUBLIC, other=other))
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert OLD_SECRET.split(":")[1] not in result.stdout + result.stderr
    assert OLD_SECRET.split(":")[1][:16] not in result.stdout + result.stderr


@pytest.mark.slow
def test_the_secret_key_never_appears_in_any_output_log_stats_stamp_or_cache_object(tmp_path):
    """The key only in the environment (as CI has it): every command's output, and every file of the project and the
    cache, searched for the key's text, its bytes, and their base64 and hex forms."""
    secret_text = OLD_SECRET
    raw = base64.b64decode(secret_text.split(":")[1])
    forms = {secret_text, secret_text.split(":")[1], raw[:32].hex(), base64.b64encode(raw[:32]).decode()[:40]}
    byte_forms = {form.encode() for form in forms} | {raw[:32], raw}
    env = {"MLBUILD_CACHE_KEY": secret_text}
    settings = trusting(OLD_PUBLIC, signing="env:MLBUILD_CACHE_KEY")
    cache = tmp_path / "cache"
    dump = 'env > "$OUT/bin/environment.txt"\n'  # what a build script sees ends up in its output, the cache, the target
    cold = make_project(tmp_path / "cold")
    cold.write("templates/build/extra.sh.j2", cold.read("templates/build/extra.sh.j2") + dump)
    outputs = [cold.doit(f"cache={cache.as_uri()}", *settings, env=env)]
    assert outputs[0].returncode == 0 and len(list(cache.glob("*/*.dsse.json"))) == len(CACHED), outputs[0].stderr
    assert "PATH=" in cold.read("build/out/extra-x86_64/bin/environment.txt")
    fresh = make_project(tmp_path / "fresh")
    fresh.write("templates/build/extra.sh.j2", cold.read("templates/build/extra.sh.j2"))
    outputs.append(fresh.doit(f"cache={cache.as_uri()}", *settings, env=env))
    assert restored(outputs[-1]) == CACHED
    cache_env = {**env, "MLBUILD_CACHE": cache.as_uri()}
    for command in (["explain", "hello-x86_64"], ["stats"], ["cache", "stats"], ["cache", "verify"], ["cache", "sign"],
                    ["cache", "push"], ["script", "build:app-x86_64"]):
        outputs.append(fresh.cli(*command, *settings, env=cache_env))
    for result in outputs:
        text = result.stdout + result.stderr
        assert not any(form in text for form in forms), text[:2000]
    for root in (cold.root, fresh.root, cache):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.name != Path(TEST_KEY_FILE).name:
                data = path.read_bytes()
                assert not any(form in data for form in byte_forms), path


# --- the same against the real servers: nginx (WebDAV) and SeaweedFS (S3) ------------------------------

class Remote:
    """A cache on a real server, and the server's storage behind it, to damage entries as a writer could."""

    def __init__(self, kind: str, server):
        self.kind, self.server = kind, server
        self.env = server.env() if kind == "s3" else {}
        if kind == "s3":
            self.client = server.client()
            if "Buckets" not in self.client.list_buckets() or not any(b["Name"] == "signed" for b in self.client.list_buckets()["Buckets"]):
                self.client.create_bucket(Bucket="signed")

    def url(self, prefix: str) -> str:
        if self.kind == "s3":
            return f"s3://signed/{prefix}?endpoint_url={self.server.endpoint}"
        return f"{self.server.url}/cache/{prefix}"

    def keys(self, prefix: str) -> list[str]:
        if self.kind == "s3":
            found = self.client.list_objects_v2(Bucket="signed", Prefix=f"{prefix}/").get("Contents", [])
            return sorted(item["Key"][len(prefix) + 1:] for item in found)
        folder = self.server.root / "cache" / prefix
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []

    def read(self, prefix: str, key: str) -> bytes:
        if self.kind == "s3":
            return self.client.get_object(Bucket="signed", Key=f"{prefix}/{key}")["Body"].read()
        return (self.server.root / "cache" / prefix / key).read_bytes()

    def write(self, prefix: str, key: str, data: bytes) -> None:
        if self.kind == "s3":
            self.client.put_object(Bucket="signed", Key=f"{prefix}/{key}", Body=data)
        else:
            path = self.server.root / "cache" / prefix / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def delete(self, prefix: str, key: str) -> None:
        if self.kind == "s3":
            self.client.delete_object(Bucket="signed", Key=f"{prefix}/{key}")
        else:
            (self.server.root / "cache" / prefix / key).unlink()

    def copy(self, source: str, target: str) -> None:
        for key in self.keys(source):
            self.write(target, key, self.read(source, key))

    def manifests(self, prefix: str) -> dict[str, dict]:
        found = {}
        for key in self.keys(prefix):
            if key.endswith("/manifest.json"):
                manifest = json.loads(self.read(prefix, key))
                found[manifest["task"]] = manifest
        return found


@pytest.fixture(scope="module", params=["webdav", "s3"])
def remote(request, tmp_path_factory):
    """A real server with the entries of a cold build signed by ci-2026a under the prefix "warm" (never changed)."""
    server = request.getfixturevalue("nginx" if request.param == "webdav" else "s3")
    remote = Remote(request.param, server)
    base = tmp_path_factory.mktemp(f"signed-{request.param}")
    writer = make_project(base)
    result = writer.doit(f"cache={remote.url('warm')}", *trusting(OLD_PUBLIC, signing=key_file(base / "keys", OLD_SECRET)), env=remote.env)
    assert result.returncode == 0 and faults(result) == [], result.stdout + result.stderr
    return remote


@pytest.fixture
def entries(remote, request) -> str:
    """A copy of the warm entries under a prefix of this test's own."""
    prefix = "t-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    remote.copy("warm", prefix)
    return prefix


def read_as(project, remote, prefix, *public, revoked=()):
    """A developer's build: reads the cache (ro:), trusts these keys, has no signing key."""
    return project.doit(f"cache=ro:{remote.url(prefix)}", *trusting(*public, revoked=revoked), env=remote.env)


@pytest.mark.slow
def test_server_signed_entries_restore_and_every_object_is_free_of_the_secret(remote, entries, tmp_path):
    keys = remote.keys(entries)
    assert len([k for k in keys if k.endswith(".dsse.json")]) == len(CACHED) == len([k for k in keys if k.endswith("/manifest.json")])
    secret = base64.b64decode(OLD_SECRET.split(":")[1])
    for key in keys:
        data = remote.read(entries, key)
        assert secret[:32] not in data and OLD_SECRET.split(":")[1].encode() not in data and secret[:32].hex().encode() not in data
    fresh = make_project(tmp_path / "fresh")
    result = read_as(fresh, remote, entries, OLD_PUBLIC)
    assert result.returncode == 0 and restored(result) == CACHED and faults(result) == [], result.stdout + result.stderr
    explain = fresh.cli("explain", "hello-x86_64", *trusting(OLD_PUBLIC), env={**remote.env, "MLBUILD_CACHE": "ro:" + remote.url(entries)})
    shown = remote.url(entries).split("?")[0]
    assert f"restored from {shown}, built by {os.uname().nodename} on 20" in explain.stdout and "key ci-2026a)" in explain.stdout, explain.stdout


def test_server_a_tampered_archive_is_refused(remote, entries, tmp_path):
    hello = remote.manifests(entries)[HELLO]
    signature, old = hello["signature"], hello["archive_sha256"]
    tampered = remote.read(entries, f"{signature}/{hello['archive']}") + b"\0" * 64
    sha = hashlib.sha256(tampered).hexdigest()
    remote.write(entries, f"{signature}/{sha}.tar.zst", tampered)
    remote.write(entries, envelope_key(signature, sha), remote.read(entries, envelope_key(signature, old)))
    remote.write(entries, f"{signature}/manifest.json",
                 json.dumps({**hello, "archive": f"{sha}.tar.zst", "archive_sha256": sha, "archive_size": len(tampered)}).encode())
    fresh = make_project(tmp_path / "fresh")
    result = read_as(fresh, remote, entries, OLD_PUBLIC)
    assert result.returncode == 0, result.stderr
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith(f"{HELLO}: artifact cache entry {signature[:12]}") and f"names the archive {old[:12]}" in line, line
    assert restored(result) == CACHED - x86("hello") and fresh.run_binary("hello") == "Hello, world!\n"


def test_server_a_manifest_swapped_from_another_entry_with_its_valid_signature_is_refused(remote, entries, tmp_path):
    found = remote.manifests(entries)
    hello, extra = found[HELLO], found["build:extra-x86_64"]
    remote.write(entries, f"{hello['signature']}/{extra['archive']}", remote.read(entries, f"{extra['signature']}/{extra['archive']}"))
    remote.write(entries, envelope_key(hello["signature"], extra["archive_sha256"]),
                 remote.read(entries, envelope_key(extra["signature"], extra["archive_sha256"])))
    remote.write(entries, f"{hello['signature']}/manifest.json", json.dumps({**extra, "signature": hello["signature"]}).encode())
    fresh = make_project(tmp_path / "fresh")
    result = read_as(fresh, remote, entries, OLD_PUBLIC)
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert f"names the task signature {extra['signature'][:12]}, not this task's {hello['signature'][:12]}" in line, line
    assert fresh.run_binary("hello") == "Hello, world!\n" and HELLO not in restored(result)


def test_server_an_unknown_key_and_a_revoked_key_are_refused_in_one_line_each(remote, entries, tmp_path):
    fresh = make_project(tmp_path / "fresh")
    unknown = read_as(fresh, remote, entries, NEW_PUBLIC)
    assert unknown.returncode == 0 and restored(unknown) == set(), unknown.stderr
    lines = faults(unknown)
    assert len(lines) == 1, unknown.stderr
    [line] = lines
    assert "it is signed by ci-2026a, which is not in cache_trusted_keys" in line, line
    shutil.rmtree(fresh.path("build"))
    revoked = read_as(fresh, remote, entries, OLD_PUBLIC, NEW_PUBLIC, revoked=("ci-2026a",))
    lines = faults(revoked)
    assert len(lines) == 1, revoked.stderr
    [line] = lines
    assert "it is signed by ci-2026a, a revoked key (cache_revoked_keys)" in line and restored(revoked) == set(), line
    assert fresh.run_binary("app") == "app says hi\n"


@pytest.mark.slow
def test_server_rotation_old_entries_refused_once_the_old_key_is_removed_and_healed_by_trusting_it_again(remote, entries, tmp_path):
    writer = make_project(tmp_path / "writer")
    writer.update_recipe("app", vars={"message": "rotated"})
    new = key_file(tmp_path / "keys", NEW_SECRET)
    pushed = writer.doit(f"cache={remote.url(entries)}", *trusting(OLD_PUBLIC, NEW_PUBLIC, signing=new), env=remote.env)
    assert pushed.returncode == 0 and restored(pushed) == x86("hello", "extra") and faults(pushed) == [], pushed.stderr
    reader = make_project(tmp_path / "reader")
    reader.update_recipe("app", vars={"message": "rotated"})
    only_new = read_as(reader, remote, entries, NEW_PUBLIC)
    lines = faults(only_new)
    assert len(lines) == 1, only_new.stderr
    [line] = lines
    assert "it is signed by ci-2026a, which is not in cache_trusted_keys" in line, line
    assert restored(only_new) == x86("app", "target", "images") and reader.run_binary("app") == "rotated\n"
    shutil.rmtree(reader.path("build"))
    both = read_as(reader, remote, entries, OLD_PUBLIC, NEW_PUBLIC)
    assert restored(both) == CACHED and faults(both) == [], both.stderr


def test_server_a_missing_signing_key_skips_the_push_in_one_line(remote, tmp_path):
    project = make_project(tmp_path / "p")
    prefix = "missing-key-" + tmp_path.name[-12:]
    result = project.doit(f"cache={remote.url(prefix)}", *trusting(OLD_PUBLIC, signing=tmp_path / "nowhere.secret"), env=remote.env)
    assert result.returncode == 0 and result.executed == ALL_TASKS, result.stderr
    lines = faults(result)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert "which requires signatures: cache_signing_key (" in line and "cannot read it: No such file or directory" in line, line
    assert remote.keys(prefix) == []


def test_server_cache_trust_unsigned_exempts_the_cache_named_as_its_lines_show_it(remote, entries, tmp_path):
    """Unsigned entries on the server: refused, until cache_trust_unsigned names the cache (an S3 URL without its
    endpoint query, as every line shows it); a name that is not the cache's is one line with did-you-mean."""
    for key in remote.keys(entries):
        if key.endswith(".dsse.json"):
            remote.delete(entries, key)
    url, shown = remote.url(entries), remote.url(entries).split("?")[0]
    fresh = make_project(tmp_path / "fresh")
    refused = fresh.doit(f"cache=ro:{url}", env=remote.env)
    assert refused.returncode == 0 and restored(refused) == set() and len(trust_lines(refused)) == 1, refused.stderr
    shutil.rmtree(fresh.path("build"))
    exempt = fresh.doit(f"cache=ro:{url}", f"cache_trust_unsigned={shown}", env=remote.env)
    assert exempt.returncode == 0 and restored(exempt) == CACHED, exempt.stdout + exempt.stderr
    assert faults(exempt) == [unchecked_warning("cache_trust_unsigned", shown)]
    typo = fresh.doit(f"cache=ro:{url}", f"cache_trust_unsigned={shown}-old", env=remote.env)
    [line] = typo.stderr.strip().splitlines()
    assert typo.returncode != 0 and f"is not one of the caches (did you mean '{shown}'?)" in line, typo.stderr


def test_server_graph_paints_restore_only_an_entry_whose_signature_the_restore_would_accept(remote, entries, tmp_path):
    fresh = make_project(tmp_path / "fresh")
    setting = f"cache=ro:{remote.url(entries)}"
    assert restored(read_as(fresh, remote, entries, OLD_PUBLIC)) == CACHED
    for task in (HELLO, EXTRA):
        assert fresh.doit("clean", task).returncode == 0
    extra = remote.manifests(entries)[EXTRA]
    remote.delete(entries, envelope_key(extra["signature"], extra["archive_sha256"]))
    result = fresh.cli("graph", setting, *trusting(OLD_PUBLIC), env=remote.env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "next build: 2 up to date, 1 run, 3 run if a dependency's output changes, 1 restore from cache" in result.stdout
    colour = dict(GRAPH_COLOUR.findall(fresh.read("build/graph.dot")))
    assert (colour[HELLO], colour[EXTRA]) == (RESTORE_COLOUR, RUN_COLOUR)


@pytest.mark.slow
def test_server_s3_cache_sign_and_verify(s3, tmp_path):
    """Entries pushed unsigned before signing existed, signed where they are (S3 lists; plain HTTP cannot)."""
    remote = Remote("s3", s3)
    url = remote.url("unsigned")
    builder = make_project(tmp_path / "builder")
    assert builder.doit(f"cache={url}", "cache_signing_key=", "cache_require_signatures=0", env=remote.env).returncode == 0
    env = {**remote.env, "MLBUILD_CACHE": url}
    settings = trusting(OLD_PUBLIC, signing=key_file(tmp_path / "keys", OLD_SECRET))
    before = builder.cli("cache", "verify", *settings, env=env)
    assert before.returncode == 1 and before.stdout.count("not trusted: it is not signed") == len(CACHED), before.stdout
    signing = builder.cli("cache", "sign", *settings, env=env)
    assert signing.returncode == 0 and f"signed {len(CACHED)} entries" in signing.stdout, signing.stdout + signing.stderr
    after = builder.cli("cache", "verify", *settings, env=env)
    assert after.returncode == 0 and "verified 5 entries: 5 good, 0 bad" in after.stdout, after.stdout
    fresh = make_project(tmp_path / "fresh")
    result = read_as(fresh, remote, "unsigned", OLD_PUBLIC)
    assert restored(result) == CACHED and faults(result) == [], result.stderr
