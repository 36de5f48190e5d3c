"""fetch: checksums are enforced, and hostile tarballs are refused without writing outside the destination."""

import io
import json
import stat
import tarfile

import pytest

from conftest import make_tarball, sha256_of
from mlbuild.errors import MlbuildError
from mlbuild.sources.unpack import unpack


def test_a_sha256_mismatch_fails_the_fetch_naming_both_hashes_and_caches_nothing(project):
    source = project.recipes["app"]["sources"][0]
    actual = source["sha256"]
    wrong = "0123456789abcdef" * 4
    project.update_recipe("app", sources=[{**source, "sha256": wrong}])

    result = project.doit()
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"sha256 mismatch for app-2.tar.gz: expected {wrong}, got {actual}" in output
    # Nothing built on it; fetch:hello, and on a loaded machine hello's builds, may have run beside it
    # (doit's -n is the job budget + 2, so tasks that do not need app run in parallel).
    assert "fetch:app" in result.executed and "build:app-x86_64" not in result.executed
    assert not [task for task in result.executed if task.startswith(("build:target", "build:images"))]
    cache = project.path(".cache/downloads")
    hello = cache / project.recipes["hello"]["sources"][0]["sha256"]
    assert [p for p in cache.rglob("*") if not p.is_dir() and p.parent != hello] == [], "no file, not even a partial one"


def test_a_file_url_that_does_not_exist_fails_the_fetch_with_a_message(project):
    source = project.recipes["app"]["sources"][0]
    project.update_recipe("app", sources=[{**source, "url": source["url"] + ".missing"}])
    result = project.doit()
    assert result.returncode != 0
    assert "fetch:app: every source failed: file://" in result.stdout + result.stderr
    assert "download failed" in result.stdout + result.stderr
    # Nothing of app's (fetch:hello may have run beside it: doit's -n is the job budget + 2).
    hello = project.path(".cache/downloads") / project.recipes["hello"]["sources"][0]["sha256"]
    assert [p for p in project.path(".cache/downloads").rglob("*") if not p.is_dir() and p.parent != hello] == []


# --- hostile tarballs, unit tests of mlbuild.sources.unpack.unpack --------------------------

def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, linkname, mode, len(data)
    return info, data


def _write_tar(path, members) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


@pytest.fixture
def sandbox(tmp_path):
    """box/dest is where unpack writes; box/ and tmp_path must hold nothing else afterwards."""
    box = tmp_path / "box"
    box.mkdir()
    return box


def _everything(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


HOSTILE = {
    "absolute-path": (lambda outside: [_member("pkg/ok.c", data=b"ok"), _member(f"{outside}/abs-evil", data=b"evil")],
                      "its path leaves the destination"),
    "dot-dot-path": (lambda outside: [_member("pkg/../../dotdot-evil", data=b"evil")],
                     "its path leaves the destination"),
    "symlink-outside": (lambda outside: [_member("pkg/link", tarfile.SYMTYPE, linkname="../../.."),
                                         _member("pkg/link/symlink-evil", data=b"evil")],
                        "points outside the destination"),
    "symlink-absolute": (lambda outside: [_member("pkg/link", tarfile.SYMTYPE, linkname=str(outside)),
                                          _member("pkg/link/symlink-evil", data=b"evil")],
                         "symbolic link to an absolute path"),
    "hardlink-outside": (lambda outside: [_member("pkg/hard", tarfile.LNKTYPE, linkname="pkg/../../victim")],
                         "hard link to 'pkg/../../victim' outside the destination"),
    "hardlink-absolute": (lambda outside: [_member("pkg/hard", tarfile.LNKTYPE, linkname=str(outside / "victim"))],
                          "outside the destination"),
    "character-device": (lambda outside: [_member("pkg/dev/mem", tarfile.CHRTYPE)],
                         "device files and fifos are not unpacked"),
    "fifo": (lambda outside: [_member("pkg/pipe", tarfile.FIFOTYPE)], "device files and fifos are not unpacked"),
    # Each link is harmless on its own path; together a/b/c resolves above the destination.
    # Only tarfile's 'data' filter (which follows links already on disk) can see it.
    "symlink-chain": (lambda outside: [_member("pkg/a", tarfile.DIRTYPE, mode=0o755),
                                       _member("pkg/a/b", tarfile.SYMTYPE, linkname=".."),
                                       _member("pkg/a/b/c", tarfile.SYMTYPE, linkname=".."),
                                       _member("pkg/a/b/c/chain-evil", data=b"evil")],
                      "refusing member"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_unpack_refuses_a_hostile_member_and_writes_nothing_outside_the_destination(case, sandbox, tmp_path):
    make_members, why = HOSTILE[case]
    victim = sandbox / "victim"  # a file a hard link might try to reach
    victim.write_text("precious")
    archive = tmp_path / "archives" / "evil.tar"
    archive.parent.mkdir()
    _write_tar(archive, make_members(sandbox))
    before_box, before_tmp = _everything(sandbox), sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(MlbuildError) as raised:
        unpack(archive, sandbox / "dest", strip_components=1, label="fetch:evil: evil.tar")

    message = str(raised.value)
    assert message.startswith("fetch:evil: evil.tar: refusing member"), message
    assert why in message
    assert "\n" not in message
    after_box = [name for name in _everything(sandbox) if name != "dest" and not name.startswith("dest/")]
    assert after_box == [name for name in before_box if name != "dest"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before_tmp
    assert victim.read_text() == "precious"
    escaped = [p for p in tmp_path.rglob("*evil") if "dest" not in p.relative_to(tmp_path).parts]
    assert escaped == []


def test_unpack_accepts_a_symlink_to_a_file_whose_name_starts_with_two_dots(tmp_path):
    archive = tmp_path / "dots.tar"
    _write_tar(archive, [_member("pkg/..hidden", data=b"x"), _member("pkg/link", tarfile.SYMTYPE, linkname="..hidden")])
    unpack(archive, tmp_path / "out", strip_components=1)
    assert (tmp_path / "out" / "link").read_text() == "x"


def test_unpack_extracts_an_ordinary_tarball_stripping_the_top_folder(tmp_path):
    archive = tmp_path / "good.tar"
    _write_tar(archive, [
        _member("pkg", tarfile.DIRTYPE, mode=0o755),
        _member("pkg/src/main.c", data=b"int main;"),
        _member("pkg/run.sh", data=b"#!/bin/sh\n", mode=0o4755),
        _member("pkg/inner-link", tarfile.SYMTYPE, linkname="src/main.c"),
        _member("pkg/up-and-back", tarfile.SYMTYPE, linkname="src/../run.sh"),
        _member("pkg/src/hard.c", tarfile.LNKTYPE, linkname="pkg/src/main.c"),
    ])
    destination = tmp_path / "out"
    unpack(archive, destination, strip_components=1)
    assert _everything(destination) == ["inner-link", "run.sh", "src", "src/hard.c", "src/main.c", "up-and-back"]
    assert (destination / "inner-link").read_text() == "int main;"
    assert (destination / "src/hard.c").read_text() == "int main;"
    mode = (destination / "run.sh").stat().st_mode
    assert mode & stat.S_IXUSR and not mode & stat.S_ISUID  # executable, setuid dropped


def test_unpack_reports_a_file_that_is_not_a_tarball(tmp_path):
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(b"this is not a tarball")
    with pytest.raises(MlbuildError, match=r"^junk.tar.gz: not a readable tar archive"):
        unpack(archive, tmp_path / "out", strip_components=1)


def test_a_hostile_tarball_fails_its_fetch_through_doit_and_writes_nothing_outside(project):
    tarball = project.tarballs / "hello-evil.tar.gz"
    make_tarball(tarball, {"hello.c": "int main;", "../../../evil.c": "evil"}, "hello-1.0")
    project.update_recipe("hello", sources=[{"url": tarball.as_uri(), "sha256": sha256_of(tarball)}])

    result = project.doit("fetch:hello")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "fetch:hello: hello-evil.tar.gz: refusing member 'hello-1.0/../../../evil.c': its path leaves the destination" in output
    assert result.executed == {"fetch:hello"}
    assert [p for p in project.root.parent.rglob("evil.c")] == []
    assert not project.stamp("fetch:hello").exists()


def test_a_hostile_tarball_unpacked_lazily_fails_the_build_that_needs_it_and_leaves_nothing(project, tmp_path):
    """With an artifact cache the fetch only verifies; the refusal comes from the build that unpacks."""
    tarball = project.tarballs / "hello-evil.tar.gz"
    make_tarball(tarball, {"hello.c": "int main;", "../../../evil.c": "evil"}, "hello-1.0")
    project.update_recipe("hello", sources=[{"url": tarball.as_uri(), "sha256": sha256_of(tarball)}])
    (tmp_path / "cache").mkdir()

    result = project.doit(f"cache={(tmp_path / 'cache').as_uri()}", "build:hello-x86_64")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert ("build:hello-x86_64: fetch:hello: hello-evil.tar.gz: refusing member 'hello-1.0/../../../evil.c': "
            "its path leaves the destination") in output
    assert "Traceback" not in output
    assert [p for p in project.root.parent.rglob("evil.c")] == []
    assert project.stamp("fetch:hello").exists() and not project.stamp("build:hello-x86_64").exists()
    assert [p.name for p in project.path("build/src").iterdir() if p.name != "app"] == ["hello"]
    assert list(project.path("build/src/hello").iterdir()) == [] and project.leftovers() == []


def test_a_fetch_stamp_with_an_output_hash_of_an_older_mlbuild_runs_again_and_gives_the_current_one(built):
    """A source's output hash is its identity, known from its inputs: a stamp that holds another one (written
    by an mlbuild that computed it differently) would give dependents signatures no other tree shares."""
    stamp_path = built.stamp("fetch:app")
    stamp = json.loads(stamp_path.read_text())
    current = stamp["output_hash"]
    stamp_path.write_text(json.dumps({**stamp, "output_hash": "0" * 64}))

    explained = built.cli("explain", "fetch:app")
    assert "its stamp's output hash was computed by an older mlbuild: it runs again to give the current one" in explained.stdout

    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fetch:app" in result.executed
    assert json.loads(stamp_path.read_text())["output_hash"] == current
    # Its dependents were built against the current hash: nothing of them runs again.
    assert not {task for task in result.executed if task.startswith("build:app")}, result.executed


def test_the_decompressor_and_tar_count_in_the_unpacking_tasks_cpu_time(tmp_path):
    """A fetch task's CPU in the statistics is its thread's plus the children it reaped (processes.thread_children):
    unpack's xz and GNU tar are among them, not left out."""
    import io
    import tarfile as tarfile_module

    from mlbuild.processes import thread_children
    from mlbuild.sources.unpack import unpack

    archive = tmp_path / "demo-1.tar.xz"
    with tarfile_module.open(archive, "w:xz") as tar:
        data = b"int main(void) { return 0; }\n"
        member = tarfile_module.TarInfo("demo-1/main.c")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    before = len(thread_children())
    unpack(archive, tmp_path / "out", 1)
    assert (tmp_path / "out/main.c").read_bytes() == data
    assert len(thread_children()) - before == 2  # xz, then tar
