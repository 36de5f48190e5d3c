"""The artifact cache with a local folder (file://): restore instead of build, push after a build, faults.

Every fresh project made by make_project has the same tarballs and recipes, so the
same signatures: a cache warmed by one is hit by the next, like a fresh clone's.
"""

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import sys
import threading
import time
from pathlib import Path

import pytest
import zstandard

from conftest import ALL_TASKS, TEST_KEY_FILE, TEST_PUBLIC, TEST_SECRET, Project, assert_stamps_valid, base_environment, make_project, x86

from mlbuild.engine.cache import ArtifactCache
from mlbuild.engine.cache.archive import pack, tree_entries
from mlbuild.engine.cache.signing import Trust
from mlbuild.errors import MlbuildError
from mlbuild.trees import hash_file, hash_tree

CACHED = x86("hello", "extra", "app", "target", "images")  # every task but fetch


def manifests(cache: Path) -> dict[str, dict]:
    """{task: manifest} of a file cache."""
    found = {}
    for path in cache.glob("*/manifest.json"):
        manifest = json.loads(path.read_text())
        found[manifest["task"]] = manifest
    return found


def restored(result) -> set[str]:
    return {line.split(": restored from ")[0] for line in result.stdout.splitlines() if ": restored from " in line}


def faults(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "artifact cache" in line or "restore" in line]


@pytest.fixture(scope="session")
def warm_cache(tmp_path_factory) -> Path:
    """A cache folder filled by a cold build of the synthetic project (never changed: tests copy it)."""
    base = tmp_path_factory.mktemp("warm")
    project = make_project(base)
    result = project.doit(f"cache={(base / 'cache').as_uri()}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert restored(result) == set()
    return base / "cache"


@pytest.fixture
def cache(warm_cache, tmp_path) -> Path:
    """A copy of the warm cache, to damage at will."""
    copy = tmp_path / "cache"
    shutil.copytree(warm_cache, copy)
    return copy


@pytest.fixture
def fresh(tmp_path):
    """A fresh clone: empty build folders, empty ccache."""
    return make_project(tmp_path / "fresh")


def test_a_cold_build_pushes_every_task_but_fetch_with_a_manifest_naming_its_signature(warm_cache):
    project = Project(warm_cache.parent / "project", warm_cache.parent / "tarballs")
    found = manifests(warm_cache)
    assert set(found) == CACHED
    for task, manifest in found.items():
        stamp = json.loads(project.stamp(task).read_text())
        assert manifest["signature"] == stamp["signature"]
        assert manifest["output_hash"] == stamp["output_hash"]
        archive = warm_cache / manifest["signature"] / manifest["archive"]
        assert hash_file(archive) == manifest["archive_sha256"] and archive.stat().st_size == manifest["archive_size"]
    hello = found["build:hello-x86_64"]
    assert (hello["recipe"], hello["version"]) == ("hello", "1.0")
    binary = project.path("build/out/hello-x86_64/bin/hello")
    assert hello["entries"]["bin/hello"]["sha256"] == hash_file(binary)
    assert hello["entries"]["bin/hello"]["mode"] == 0o755


def test_a_fresh_clone_with_a_warm_cache_restores_every_task_and_runs_no_build_script(fresh, cache):
    result = fresh.doit(f"cache={cache.as_uri()}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == ALL_TASKS
    assert restored(result) == CACHED
    assert faults(result) == []
    for task in x86("hello", "extra", "app"):
        log = fresh.log(task)
        assert "# restored from file://" in log and "# running" not in log
    assert fresh.run_binary("app") == "app says hi\n"
    assert fresh.run_binary("hello") == "Hello, world!\n"
    assert_stamps_valid(fresh)
    explain = fresh.cli("explain", "app-x86_64", env={"MLBUILD_CACHE": cache.as_uri()})
    assert f"restored from {cache.as_uri()}" in explain.stdout
    again = fresh.doit(f"cache={cache.as_uri()}")
    assert again.returncode == 0 and again.executed == set()
    # Nothing was built, so no source was unpacked (lazy fetch): the tarballs were only verified.
    assert [list(fresh.path(f"build/src/{name}").iterdir()) for name in ("hello", "app")] == [[], []]
    assert "unpacked when a build needs it" in fresh.log("fetch:hello")


def test_a_restored_file_gets_the_time_of_the_restore_not_the_archives(fresh, cache):
    fresh.doit(f"cache={cache.as_uri()}")
    binary = fresh.path("build/out/hello-x86_64/bin/hello")
    # make in a dependent's work folder compares mtimes: a restored header must look new, not 2023.
    assert binary.stat().st_mtime > 1700000000


def test_a_rebuilt_or_restored_file_with_the_same_bytes_keeps_its_time_and_a_changed_one_is_new(fresh, cache):
    """A dependent's kept build folder (make, ninja) must not see unchanged outputs as new."""
    url = cache.as_uri()
    fresh.doit(f"cache={url}")
    extra, hello = fresh.path("build/out/extra-x86_64/bin/extra"), fresh.path("build/out/hello-x86_64/bin/hello")
    before = extra.stat().st_mtime_ns, hello.stat().st_mtime_ns
    # A comment in extra's script: a new signature, built here, the same binary.
    fresh.edit("templates/build/extra.sh.j2", "ccache clang", "# same program\nccache clang")
    fresh.update_recipe("hello", vars={"greeting": "changed"})
    result = fresh.doit(f"cache={url}")
    assert result.returncode == 0, result.stderr
    assert x86("extra", "hello") <= result.executed and restored(result) == set()
    assert "1 unchanged files keep their time" in fresh.log("build:extra-x86_64")
    assert extra.stat().st_mtime_ns == before[0]
    assert hello.stat().st_mtime_ns > before[1] and fresh.run_binary("hello") == "changed\n"
    # Back to the cached script: restored from the cache, the same bytes again, the same time.
    fresh.edit("templates/build/extra.sh.j2", "# same program\nccache clang", "ccache clang")
    result = fresh.doit(f"cache={url}")
    assert "build:extra-x86_64" in restored(result)
    assert extra.stat().st_mtime_ns == before[0]


def test_after_a_restore_a_change_rebuilds_only_what_it_changes_and_pushes_it(fresh, cache):
    url = cache.as_uri()
    fresh.doit(f"cache={url}")
    fresh.update_recipe("app", vars={"message": "changed"})
    result = fresh.doit(f"cache={url}")
    assert result.returncode == 0, result.stderr
    assert result.executed == x86("app", "target", "images")
    assert restored(result) == set()
    assert "# running" in fresh.log("build:app-x86_64")
    assert fresh.run_binary("app") == "changed\n"
    # The one build that ran unpacked its source first; the restored ones' sources stay packed.
    assert "\nunpacking app-" in fresh.log("build:app-x86_64")
    assert fresh.path("build/src/app/app.c").is_file() and list(fresh.path("build/src/hello").iterdir()) == []
    assert fresh.leftovers() == []
    assert len([m for m in cache.glob("*/manifest.json")]) == len(CACHED) + 3  # the new app, target and images


def test_mlbuild_unpack_gives_the_source_a_build_would_use_and_a_refetch_drops_it(fresh, cache):
    url = cache.as_uri()
    fresh.doit(f"cache={url}")
    result = fresh.cli("unpack", "hello", env={"MLBUILD_CACHE": url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fetch:hello: build/src/hello"
    assert sorted(p.name for p in fresh.path("build/src/hello").iterdir()) == [".mlbuild-unpacked", "extra.c", "hello.c"]
    assert fresh.cli("unpack", "helo", env={"MLBUILD_CACHE": url}).stderr.strip() == (
        "mlbuild: unpack: no recipe 'helo' (did you mean hello?)")
    # A fetch that runs again replaces the tree: the next build that needs it unpacks anew.
    fresh.stamp("fetch:hello").unlink()  # as `doit forget fetch:hello` does
    rerun = fresh.doit(f"cache={url}", "fetch:hello")
    assert rerun.executed == {"fetch:hello"} and list(fresh.path("build/src/hello").iterdir()) == []
    fresh.update_recipe("hello", vars={"greeting": "Hi"})
    assert fresh.doit(f"cache={url}").returncode == 0
    assert "\nunpacking hello-" in fresh.log("build:hello-x86_64")


def test_two_processes_that_need_one_packed_source_unpack_it_one_after_the_other(fresh, cache):
    """`mlbuild unpack`, `doit menuconfig:` and a run's build may ask for one source at once: the second
    waits on the source's own lock instead of removing the first one's half-unpacked tree (seen when two
    test workers unpacked llvm-project in one tree: `tar: cmake: Cannot stat`, `Directory not empty`)."""
    url = cache.as_uri()
    fresh.doit(f"cache={url}")
    assert list(fresh.path("build/src/hello").iterdir()) == []
    lock = fresh.path("build/locks/unpack-hello")
    lock.parent.mkdir(exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as another process's unpack of hello holds it
    try:
        waiting = subprocess.Popen([sys.executable, "-m", "mlbuild.frontend.cli", "unpack", "hello"], cwd=fresh.root,
                                   env=base_environment({"MLBUILD_CACHE": url}), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None, waiting.communicate()
        assert not fresh.path("build/src/.hello.unpacking").exists()  # it has not touched the staging folder
    finally:
        os.close(fd)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert out.strip() == "fetch:hello: build/src/hello"
    assert sorted(p.name for p in fresh.path("build/src/hello").iterdir()) == [".mlbuild-unpacked", "extra.c", "hello.c"]


def test_a_source_left_packed_under_a_cache_is_unpacked_when_the_cache_is_turned_off(fresh, cache):
    assert fresh.doit(f"cache={cache.as_uri()}").returncode == 0
    assert list(fresh.path("build/src/app").iterdir()) == []
    fresh.update_recipe("app", vars={"message": "no cache"})
    result = fresh.doit("cache=")  # fetch:app stays up to date: its tree is still to be unpacked
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fetch:app" not in result.executed and "\nunpacking app-" in fresh.log("build:app-x86_64")
    assert fresh.run_binary("app") == "no cache\n"
    # Unpacked once: the cache turned on again does not unpack it again.
    fresh.update_recipe("app", vars={"message": "cache again"})
    assert fresh.doit(f"cache={cache.as_uri()}").returncode == 0
    assert "unpacking" not in fresh.log("build:app-x86_64")


def test_caches_are_tried_in_order_and_a_read_only_one_is_never_written(fresh, cache, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = fresh.doit(f"cache=ro:{empty.as_uri()},{cache.as_uri()}")
    assert result.returncode == 0, result.stderr
    assert restored(result) == CACHED
    assert list(empty.iterdir()) == []
    stats = fresh.cli("cache", "stats", env={"MLBUILD_CACHE": f"ro:{empty.as_uri()},{cache.as_uri()}"})
    assert f"{empty.as_uri()} (read-only): 0 hits, 5 misses" in stats.stdout
    assert f"{cache.as_uri()} (read-write): 5 hits, 0 misses" in stats.stdout


def test_a_read_only_cache_alone_builds_locally_and_pushes_nothing(fresh, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = fresh.doit(f"cache=ro:{empty.as_uri()}")
    assert result.returncode == 0 and restored(result) == set()
    assert list(empty.iterdir()) == []


def test_the_archive_is_the_same_bytes_for_the_same_tree_whatever_its_mtimes(tmp_path):
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "tool").write_text("#!/bin/sh\n")
    (tree / "bin" / "tool").chmod(0o755)
    (tree / "lib").mkdir()
    (tree / "lib" / "link").symlink_to("../bin/tool")
    first = pack(tree, tmp_path / "a.tar.zst", tree_entries(tree))
    os.utime(tree / "bin" / "tool", (1, 1))
    second = pack(tree, tmp_path / "b.tar.zst", tree_entries(tree))
    assert first == second
    with open(tmp_path / "a.tar.zst", "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as plain:
        members = tarfile.open(fileobj=plain, mode="r|").getmembers()
    assert [m.name for m in members] == ["bin", "bin/tool", "lib", "lib/link"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 1672531200)}


def test_pack_hashes_files_as_it_reads_them_and_refuses_a_file_changed_since_it_was_listed(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data").write_text("first")
    listed = tree_entries(tree, hash_files=False)
    sha = pack(tree, tmp_path / "a.tar.zst", listed)
    assert sha == hash_file(tmp_path / "a.tar.zst")
    assert listed == tree_entries(tree)  # the sha256 pack filled in is the file's
    hashed = tree_entries(tree)
    (tree / "data").write_text("other")  # same size, other bytes: what a task still writing would do
    with pytest.raises(MlbuildError, match="data: changed while it was packed"):
        pack(tree, tmp_path / "b.tar.zst", hashed)


# --- faults: one line, the build goes on locally, nothing half-unpacked ------------------------------

def _entry(cache: Path, task: str) -> tuple[Path, Path, dict]:
    manifest = manifests(cache)[task]
    folder = cache / manifest["signature"]
    return folder / "manifest.json", folder / manifest["archive"], manifest


def corrupt(cache):
    _, archive, _ = _entry(cache, "build:hello-x86_64")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    return "corrupt"


def truncate(cache):
    _, archive, _ = _entry(cache, "build:hello-x86_64")
    archive.write_bytes(archive.read_bytes()[:40])
    return "truncated"


def other_signature(cache):
    manifest_path, _, _ = _entry(cache, "build:hello-x86_64")
    other, _, _ = _entry(cache, "build:extra-x86_64")
    shutil.copy(other, manifest_path)  # hello's entry now holds extra's manifest
    return "names signature"


def garbage_manifest(cache):
    manifest_path, _, _ = _entry(cache, "build:hello-x86_64")
    manifest_path.write_text("{not json")
    return "manifest is not readable"


def archive_gone(cache):
    _, archive, _ = _entry(cache, "build:hello-x86_64")
    archive.unlink()
    return "names an archive that is not there"


@pytest.mark.parametrize("damage", [corrupt, truncate, other_signature, garbage_manifest, archive_gone])
def test_a_damaged_entry_is_one_line_and_the_task_is_built_locally(fresh, cache, damage):
    reason = damage(cache)
    result = fresh.doit(f"cache={cache.as_uri()}")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = faults(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("build:hello-x86_64: artifact cache") and reason in lines[0] and "building locally" in lines[0]
    assert "Traceback" not in result.stderr
    assert restored(result) == CACHED - x86("hello")
    assert "# running" in fresh.log("build:hello-x86_64")
    assert fresh.run_binary("hello") == "Hello, world!\n"
    assert fresh.leftovers() == []
    assert_stamps_valid(fresh)


def forge(cache: Path, task: str, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    """Replace a task's entry by an archive of the given members with a manifest that matches it (hashes and all)."""
    manifest_path, archive, manifest = _entry(cache, task)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    packed = zstandard.ZstdCompressor().compress(buffer.getvalue())
    archive.unlink()
    sha = hashlib.sha256(packed).hexdigest()
    (archive.parent / f"{sha}.tar.zst").write_bytes(packed)
    manifest.update(archive=f"{sha}.tar.zst", archive_sha256=sha, archive_size=len(packed))
    manifest_path.write_text(json.dumps(manifest))
    sign_entry(cache, manifest)  # signed by a trusted key: the restore's own checks must still refuse it


def sign_entry(cache: Path, manifest: dict, secret: str = TEST_SECRET) -> Path:
    """Sign an entry of a file cache as a push does (the envelope beside its archive); returns the envelope's path."""
    from mlbuild.engine.cache.signing import Signer, builder, envelope, envelope_key, statement
    from mlbuild.model.models import SECRET_KEY_BYTES, parse_key_text

    path = cache / envelope_key(manifest["signature"], manifest["archive_sha256"])
    path.write_bytes(envelope(statement(manifest, builder(), 1.8e9), Signer(*parse_key_text(secret, SECRET_KEY_BYTES))))
    return path


def member(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


@pytest.mark.parametrize("members, why", [
    ([(member("../escaped"), b"x")], "leaves the destination"),
    ([(member("bin/evil", tarfile.SYMTYPE, "/etc/passwd"), b"")], "absolute path"),
    ([(member("bin/evil", tarfile.SYMTYPE, "../../../../outside"), b"")], "outside the destination"),
    ([(member("bin/hard", tarfile.LNKTYPE, "../../etc/passwd"), b"")], "outside the destination"),
    # A link inside the output, then a file under it: a restore never writes through a link (issue 26, item 5).
    ([(member("usr/share", tarfile.SYMTYPE, "../bin"), b""), (member("usr/share/escaped"), b"x")], "goes through the symbolic link"),
])
def test_an_entry_with_paths_or_links_out_of_the_output_is_refused_and_built_locally(fresh, cache, members, why):
    forge(cache, "build:hello-x86_64", members)
    result = fresh.doit(f"cache={cache.as_uri()}")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = faults(result)
    assert len(lines) == 1 and "refusing member" in lines[0] and why in lines[0], lines
    assert not (fresh.root / "build" / "out" / "escaped").exists() and not (fresh.root / "build" / "escaped").exists()
    assert fresh.run_binary("hello") == "Hello, world!\n"
    assert fresh.leftovers() == []


def test_a_server_that_refuses_connections_is_one_line_for_the_whole_run(fresh):
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}/cache"
    result = fresh.doit(f"cache={url}")
    assert result.returncode == 0, result.stderr
    lines = faults(result)
    assert len(lines) == 1, lines
    assert "not reachable" in lines[0] and "Connection refused" in lines[0] and "not used again" in lines[0]
    assert result.executed == ALL_TASKS and restored(result) == set()


def test_a_bad_cache_url_is_one_line_and_nothing_runs(fresh):
    result = fresh.doit("cache=ftp://example.org/cache")
    assert result.returncode != 0
    assert "cache[0]: expected a cache URL" in result.stderr and "Traceback" not in result.stderr
    assert result.executed == set()


def _can_mount_tmpfs(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode == 0:
        subprocess.run(["umount", str(folder)], check=True)
    return done.returncode == 0


def test_a_disk_full_during_unpack_is_one_line_leaves_nothing_and_the_build_goes_on(tmp_path):
    """The build folder on a small tmpfs: the archive (zeros, compressing to nothing) fits, its unpacked file does not."""
    small = tmp_path / "small"
    if not _can_mount_tmpfs(small):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    big = 'head -c 3000000 /dev/zero > "$OUT/bin/zeros"\n'
    cache = tmp_path / "cache"
    warm = make_project(tmp_path / "warm")
    warm.write("templates/build/extra.sh.j2", warm.read("templates/build/extra.sh.j2") + big)
    assert warm.doit(f"cache={cache.as_uri()}").returncode == 0
    fresh = make_project(tmp_path / "fresh")
    fresh.write("templates/build/extra.sh.j2", warm.read("templates/build/extra.sh.j2"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(small)], check=True)
    try:
        # Download (tiny) + tar (3 MB) + the unpacked 3 MB > 5 MB; after cleaning up, the local build's 3 MB fits.
        result = fresh.doit("build:extra-x86_64", f"cache={cache.as_uri()}", f"build_dir={small / 'build'}")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = faults(result)
        assert len(lines) == 1 and lines[0].startswith("build:extra-x86_64:") and "building locally" in lines[0], lines
        # The unpacker's own words for it: the OS's, or tar's when it unpacks with tar.
        assert "No space left on device" in lines[0] or "could not unpack" in lines[0], lines
        assert "build:extra-x86_64" not in restored(result)
        leftovers = [p for p in small.rglob("*") if p.name.endswith((".staging", ".tmp", ".tar"))]
        assert leftovers == []
        assert (small / "build" / "out" / "extra-x86_64" / "bin" / "zeros").stat().st_size == 3000000
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_two_pushes_of_the_same_signature_at_once_leave_a_whole_entry(cache, fresh, tmp_path):
    """Two builds push one signature with different bytes (a build that is not reproducible): the manifest
    that wins always names its own archive, which is there and verifies."""
    from mlbuild.frontend.project import Project

    project = Project(fresh.root, environ={})
    fresh.doit()  # stamps for the inputs
    project.stamps.refresh()
    step = project.steps["build:hello-x86_64"]
    stamp = project.stamps.read(step.stamp)
    target = tmp_path / "shared"
    trees = []
    for n in range(2):
        tree = tmp_path / f"out{n}"
        shutil.copytree(step.output, tree, symlinks=True)
        (tree / "bin" / "variant").write_text(f"build {n}\n" * 1000)
        trees.append(tree)
    for round_ in range(5):
        shutil.rmtree(target, ignore_errors=True)
        trust = Trust([TEST_PUBLIC], signing_key=TEST_KEY_FILE, root=fresh.root)
        caches = [ArtifactCache([target.as_uri()], tmp_path / f"stats{n}.json", say=print, trust=trust) for n in range(2)]
        threads = [threading.Thread(target=caches[n].push, args=(step, stamp["inputs"], trees[n], hash_tree(trees[n]), 1.0)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        verify = fresh.cli("cache", "verify", env={"MLBUILD_CACHE": target.as_uri()})
        assert verify.returncode == 0 and "verified 1 entries: 1 good, 0 bad" in verify.stdout, verify.stdout + verify.stderr
        assert not list(target.rglob(".*.tmp"))


# --- mlbuild cache ------------------------------------------------------------------------------

def test_cache_verify_finds_a_corrupt_entry_and_delete_removes_it(fresh, cache):
    env = {"MLBUILD_CACHE": cache.as_uri()}
    good = fresh.cli("cache", "verify", env=env)
    assert good.returncode == 0 and "verified 5 entries: 5 good, 0 bad" in good.stdout
    corrupt(cache)
    bad = fresh.cli("cache", "verify", env=env)
    assert bad.returncode == 1 and "corrupt" in bad.stdout and "4 good, 1 bad" in bad.stdout
    fresh.cli("cache", "verify", "--delete", env=env)
    assert "build:hello-x86_64" not in manifests(cache)
    assert fresh.cli("cache", "verify", env=env).returncode == 0


def test_cache_prune_evicts_least_recently_used_entries_first(fresh, cache):
    env = {"MLBUILD_CACHE": cache.as_uri()}
    for path in cache.glob("*/manifest.json"):
        os.utime(path, (1, 1))  # all long unused …
    result = fresh.doit(f"cache={cache.as_uri()}", "build:hello-x86_64")  # … but hello, restored just now
    assert restored(result) == x86("hello")
    hello_size = sum(p.stat().st_size for p in (cache / manifests(cache)["build:hello-x86_64"]["signature"]).iterdir())
    pruned = fresh.cli("cache", "prune", "--max-size", str(hello_size + 100), env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert set(manifests(cache)) == x86("hello")
    assert "removed 4 entries" in pruned.stdout


def test_cache_push_uploads_what_is_built_and_stats_counts_bytes(tmp_path):
    project = make_project(tmp_path / "p")
    assert project.doit().returncode == 0  # no cache configured while building
    target = tmp_path / "cache"
    env = {"MLBUILD_CACHE": target.as_uri()}
    pushed = project.cli("cache", "push", env=env)
    assert pushed.returncode == 0 and "pushed 5 task outputs" in pushed.stdout, pushed.stdout + pushed.stderr
    assert set(manifests(target)) == CACHED
    again = project.cli("cache", "push", env=env)
    assert "pushed 0 task outputs; 5 were already" in again.stdout
    stats = project.cli("cache", "stats", env=env)
    assert "5 pushes" in stats.stdout and "5 entries" in stats.stdout
    size = project.cli("cache", "prune", "--max-size", "lots", env=env)
    assert size.returncode == 2 and "--max-size 'lots': expected a number of bytes with an optional K, M, G or T" in size.stderr
