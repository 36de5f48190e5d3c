"""Hostile and damaged archives: each is refused in one line, nothing lands outside, no staging is left.

Unit tests of mlbuild.sources.unpack.unpack on crafted tarballs, plus `doit fetch:hello` end to end
where the defect was seen through the whole tool (a truncated tarball whose sha256 matches).
"""

import gzip
import io
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import EXTRA_C, HELLO_C, REPO, make_tarball, sha256_of
from mlbuild.errors import MlbuildError
from mlbuild.sources.unpack import unpack


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size, info.mtime = kind, linkname, mode, len(data), 1672531200
    return info, data


def _tar_bytes(members, format=tarfile.GNU_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _everything(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _refused(archive: Path, destination: Path, strip: int = 1) -> str:
    """unpack must refuse with one line and leave no destination behind; the message."""
    with pytest.raises(MlbuildError) as raised:
        unpack(archive, destination, strip_components=strip, label=f"fetch:evil: {archive.name}")
    message = str(raised.value)
    assert "\n" not in message, message
    assert message.startswith(f"fetch:evil: {archive.name}: "), message
    assert not destination.exists() and not destination.is_symlink(), "the half-unpacked folder must be removed"
    return message


# --- CVE-2025-4517: a link chain whose real path is longer than PATH_MAX -----------------------

def _path_max_escape(outside: Path) -> list:
    """The published proof of concept, reshaped: 16 folders of 247-byte names, each reached
    through a one-letter link, so that realpath gives up beyond PATH_MAX and tarfile's 'data'
    filter takes the lexical path for the real one; then a link up 16 levels and one to the
    victim folder outside, and a file written through it."""
    long = "d" * 247
    steps = "abcdefghijklmnop"
    members, path = [], ""
    for step in steps:
        members.append(_member(f"{path}{long}", tarfile.DIRTYPE, mode=0o755))
        members.append(_member(f"{path}{step}", tarfile.SYMTYPE, linkname=long))
        path += f"{long}/"
    link_path = "/".join(steps) + "/" + "l" * 254
    members.append(_member(link_path, tarfile.SYMTYPE, linkname="../" * len(steps)))
    depth = len(outside.parts) - 1
    members.append(_member("escape", tarfile.SYMTYPE, linkname=link_path + "/.." * 2 + "/" + "../" * depth + str(outside).lstrip("/")))
    members.append(_member("escape/pwned", data=b"written outside"))
    return members


def test_a_symlink_chain_beyond_path_max_is_refused_and_writes_nothing_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tmp_path / "pathmax.tar"
    archive.write_bytes(_tar_bytes(_path_max_escape(outside)))

    message = _refused(archive, tmp_path / "box" / "dest", strip=0)

    assert "refusing member" in message
    assert _everything(outside) == [], "a file was written outside the destination"
    assert list((tmp_path / "box").iterdir()) == []


def test_a_member_through_a_link_is_refused_even_when_each_link_looks_harmless(tmp_path):
    archive = tmp_path / "through.tar"
    archive.write_bytes(_tar_bytes([_member("pkg/inner", tarfile.DIRTYPE, mode=0o755),
                                    _member("pkg/alias", tarfile.SYMTYPE, linkname="inner"),
                                    _member("pkg/alias/file.c", data=b"x")]))
    message = _refused(archive, tmp_path / "dest")
    assert "refusing member 'pkg/alias/file.c': its path goes through the symbolic link 'alias' of the archive" in message


def test_a_link_that_leaves_the_tree_only_through_another_link_is_refused(tmp_path):
    # d1/d2/up -> ../.. is the root; x -> d1/d2/up/.. looks like d1/d2 but is above the root.
    archive = tmp_path / "twolinks.tar"
    archive.write_bytes(_tar_bytes([_member("pkg/d1/d2", tarfile.DIRTYPE, mode=0o755),
                                    _member("pkg/d1/d2/up", tarfile.SYMTYPE, linkname="../.."),
                                    _member("pkg/x", tarfile.SYMTYPE, linkname="d1/d2/up/..")]))
    message = _refused(archive, tmp_path / "dest")
    assert "symbolic link 'd1/d2/up/..' resolves outside the destination through other links" in message


def test_a_symlink_loop_is_refused_in_one_line(tmp_path):
    archive = tmp_path / "loop.tar"
    archive.write_bytes(_tar_bytes([_member("pkg/main.c", data=b"int main;"),
                                    _member("pkg/a", tarfile.SYMTYPE, linkname="b"),
                                    _member("pkg/b", tarfile.SYMTYPE, linkname="a/x")]))
    message = _refused(archive, tmp_path / "dest")
    assert "is part of a loop or of a chain of more than 40 links" in message


def test_a_member_name_over_255_bytes_is_refused_in_one_line(tmp_path):
    archive = tmp_path / "longname.tar"
    archive.write_bytes(_tar_bytes([_member("pkg/ok.c", data=b"ok"), _member("pkg/" + "n" * 300 + ".c", data=b"x")]))
    message = _refused(archive, tmp_path / "dest")
    assert "a name in its path is 302 bytes long (at most 255)" in message


def test_a_path_longer_than_path_max_is_refused(tmp_path):
    deep = "/".join(["f" * 200] * 21)  # 4220 bytes, every name short enough
    archive = tmp_path / "deep.tar"
    archive.write_bytes(_tar_bytes([_member(f"pkg/{deep}/x.c", data=b"x")]))
    assert "its path would be longer than PATH_MAX (4096 bytes)" in _refused(archive, tmp_path / "dest")


def test_a_hard_link_to_a_file_the_archive_did_not_unpack_before_is_refused(tmp_path):
    archive = tmp_path / "hard.tar"
    archive.write_bytes(_tar_bytes([_member("pkg/hard.c", tarfile.LNKTYPE, linkname="pkg/later.c"),
                                    _member("pkg/later.c", data=b"x")]))
    assert "hard link to 'later.c', which is not a file unpacked before it" in _refused(archive, tmp_path / "dest")


def test_a_member_that_appears_twice_is_refused(tmp_path):
    archive = tmp_path / "twice.tar"
    archive.write_bytes(_tar_bytes([_member("pkg/a.c", data=b"first"), _member("pkg/a.c", tarfile.SYMTYPE, linkname="b.c")]))
    assert "refusing member 'pkg/a.c': it appears twice in the archive" in _refused(archive, tmp_path / "dest")


# --- damaged archives that used to be accepted, short ------------------------------------------

def _payload() -> bytes:
    """A tarball big enough that a cut shows in the middle: 50 files of 8 KiB that do not compress away."""
    members = [_member("pkg/", tarfile.DIRTYPE, mode=0o755)]
    members += [_member(f"pkg/file{i:02}.c", data=os.urandom(8192)) for i in range(50)]
    return _tar_bytes(members)


@pytest.mark.parametrize("suffix, compress, tool", [
    ("tar.gz", lambda data: gzip.compress(data, mtime=0), "gzip"),
    ("tar.xz", lzma.compress, "xz"),
])
def test_a_truncated_compressed_tarball_is_refused_not_unpacked_short(tmp_path, suffix, compress, tool):
    whole = compress(_payload())
    archive = tmp_path / f"cut.{suffix}"
    archive.write_bytes(whole[: len(whole) * 6 // 10])
    message = _refused(archive, tmp_path / "dest")
    assert f"{tool} data is truncated or corrupt" in message


def test_a_tarball_cut_at_a_member_boundary_is_refused(tmp_path):
    data = _tar_bytes([_member("pkg/a.c", data=b"a" * 600), _member("pkg/b.c", data=b"b" * 10)])
    archive = tmp_path / "cut.tar"
    archive.write_bytes(data[:512 + 1024])  # a.c complete, then nothing: no end-of-archive block
    assert "no end-of-archive block after 'pkg/a.c' (truncated)" in _refused(archive, tmp_path / "dest")


@pytest.mark.parametrize("compress", [None, lzma.compress], ids=["plain", "xz"])
def test_a_tarball_cut_inside_a_big_file_is_refused(tmp_path, compress):
    data = _tar_bytes([_member("pkg/big.bin", data=os.urandom(1 << 20))])[:600_000]
    archive = tmp_path / "cut.tar"
    archive.write_bytes(compress(data) if compress else data)  # a whole xz stream of a cut tar: xz is happy
    assert "the archive ends inside 'pkg/big.bin' (truncated)" in _refused(archive, tmp_path / "dest")


def test_a_damaged_header_in_the_middle_is_refused_not_taken_for_the_end(tmp_path):
    data = bytearray(_tar_bytes([_member("pkg/a.c", data=b"a" * 10), _member("pkg/b.c", data=b"b" * 10)]))
    data[1024 + 10] ^= 0xFF  # b.c's header: its checksum no longer matches
    archive = tmp_path / "damaged.tar"
    archive.write_bytes(bytes(data))
    assert "invalid header after 'pkg/a.c' (corrupt)" in _refused(archive, tmp_path / "dest")


def test_a_malformed_pax_size_is_refused_not_read_as_zero(tmp_path):
    info, data = _member("pkg/big.c", data=b"int x;\n" * 200)
    info.pax_headers = {"size": "14x0"}
    archive = tmp_path / "pax.tar"
    archive.write_bytes(_tar_bytes([(info, data), _member("pkg/after.c", data=b"y")], format=tarfile.PAX_FORMAT))
    message = _refused(archive, tmp_path / "dest")
    assert "malformed pax header field size='14x0'" in message


def test_strip_components_deeper_than_the_archive_is_refused(tmp_path):
    archive = tmp_path / "shallow.tar.gz"
    make_tarball(archive, {"main.c": "int main;", "README": "hi"}, "pkg-1.0")
    message = _refused(archive, tmp_path / "dest", strip=2)
    assert "nothing is left after stripping 2 leading folder(s): strip_components is deeper than the archive" in message


# --- what must still work --------------------------------------------------------------------

def test_long_names_links_and_modes_come_out_as_the_archive_says(tmp_path):
    long_dir = "pkg/" + "/".join(["x" * 120] * 3)
    big = os.urandom(3 << 20)
    archive = tmp_path / "good.tar"
    archive.write_bytes(_tar_bytes([
        _member("pkg", tarfile.DIRTYPE, mode=0o700),
        _member(f"{long_dir}/deep.c", data=b"deep"),
        _member("pkg/run.sh", data=b"#!/bin/sh\n", mode=0o6777),
        _member("pkg/shortcut", tarfile.SYMTYPE, linkname=long_dir[4:] + "/deep.c"),
        _member("pkg/sub/up", tarfile.SYMTYPE, linkname="../run.sh"),
        _member("pkg/sub/hard.c", tarfile.LNKTYPE, linkname=f"{long_dir}/deep.c"),
        _member("pkg/ünïcode-ñame.txt", data=b"u"),
        _member("pkg/big.bin", data=big),  # bigger than what is gathered: spliced through the kernel
    ], format=tarfile.PAX_FORMAT))
    destination = tmp_path / "out"
    unpack(archive, destination, strip_components=1)
    assert (destination / "shortcut").read_text() == "deep"
    assert (destination / "sub/up").read_text() == "#!/bin/sh\n"
    assert (destination / "sub/hard.c").stat().st_ino == (destination / long_dir[4:] / "deep.c").stat().st_ino
    assert (destination / "ünïcode-ñame.txt").read_bytes() == b"u"
    assert (destination / "big.bin").read_bytes() == big
    assert (destination / "run.sh").stat().st_mode & 0o7777 == 0o755  # setuid, setgid, sticky and g/o write dropped
    assert (destination / "run.sh").stat().st_mtime == 1672531200


def test_unpack_does_not_need_tarfile_filters_and_runs_on_debian_12s_python(tmp_path):
    """Debian 12's python3 is 3.11.2, which has no tarfile `filter=`; unpack must work there."""
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no system python3")
    archive = tmp_path / "plain.tar.gz"
    make_tarball(archive, {"main.c": "int main;"}, "pkg-1.0")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; import tarfile;"
            "tarfile.data_filter = None;"  # also on a newer python: nothing of the filter API is used
            "from mlbuild.sources.unpack import unpack; unpack(Path(sys.argv[2]), Path(sys.argv[3]), 1);"
            "print(Path(sys.argv[3], 'main.c').read_text())")
    result = subprocess.run([python, "-I", "-c", code, REPO / "src", archive, tmp_path / "out"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "int main;\n"


NOT_UTF8 = "caf\udce9.c"  # the byte 0xe9 alone (Latin-1 é), as tarfile writes a surrogate-escaped name


@pytest.mark.parametrize("format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_a_member_name_that_is_not_utf8_is_refused_naming_it_escaped(tmp_path, format):
    archive = tmp_path / "latin1.tar"
    archive.write_bytes(_tar_bytes([_member("pkg/ok.c", data=b"int x;"), _member(f"pkg/{NOT_UTF8}", data=b"int y;")], format))
    message = _refused(archive, tmp_path / "out")
    assert message == ("fetch:evil: latin1.tar: refusing member 'pkg/caf\\xe9.c': its name is not valid UTF-8 "
                       "(mlbuild names files as text; repack the archive with UTF-8 names)")


def test_a_link_whose_target_is_not_utf8_is_refused(tmp_path):
    archive = tmp_path / "link.tar"
    archive.write_bytes(_tar_bytes([_member("pkg/link", tarfile.SYMTYPE, linkname=NOT_UTF8)]))
    assert _refused(archive, tmp_path / "out").endswith("refusing member 'pkg/link': the target of its link, "
                                                        "'caf\\xe9.c', is not valid UTF-8")


def test_a_utf8_name_beyond_ascii_unpacks(tmp_path):
    archive = tmp_path / "utf8.tar"
    archive.write_bytes(_tar_bytes([_member("pkg/café.c", data=b"int x;")]))
    unpack(archive, tmp_path / "out", strip_components=1)
    assert (tmp_path / "out" / "café.c").read_bytes() == b"int x;"


# --- through the whole tool ------------------------------------------------------------------

def test_a_tarball_with_a_name_that_is_not_utf8_fails_fetch_in_one_line_naming_archive_and_member(project):
    """Before: it unpacked, and the first tree hash of a folder holding the file (an output a build installed it
    into, the artifact cache) failed with "UnicodeEncodeError … surrogates not allowed", naming no file."""
    archive = project.tarballs / "hello-latin1.tar.gz"
    make_tarball(archive, {"hello.c": HELLO_C, "extra.c": EXTRA_C, NOT_UTF8: "int y;"}, "hello-1.0")
    project.update_recipe("hello", sources=[{"url": archive.as_uri(), "sha256": sha256_of(archive)}])

    result = project.doit()

    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output and "surrogates" not in output
    assert ("fetch:hello: hello-latin1.tar.gz: refusing member 'hello-1.0/caf\\xe9.c': its name is not valid UTF-8"
            in output), output
    assert [p.name for p in project.path("build/src").iterdir() if "hello" in p.name] == [], "no staging or tree left"
    assert not project.stamp("fetch:hello").exists()


def test_a_truncated_tarball_with_a_matching_sha256_fails_fetch_in_one_line_and_leaves_no_staging(project):
    whole = project.tarballs / "hello-whole.tar.gz"
    make_tarball(whole, {"hello.c": os.urandom(60000).hex(), "extra.c": "int x;"}, "hello-1.0")
    cut = project.tarballs / "hello-cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[:30000])
    project.update_recipe("hello", sources=[{"url": cut.as_uri(), "sha256": sha256_of(cut)}])

    result = project.doit("fetch:hello")

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "fetch:hello: hello-cut.tar.gz: gzip data is truncated or corrupt" in output
    assert "Traceback" not in output
    src = project.path("build/src")
    assert not src.exists() or [p.name for p in src.iterdir()] == [], "no staging or half-unpacked tree left"
    assert not project.stamp("fetch:hello").exists()


def test_a_patch_that_does_not_apply_leaves_no_half_patched_staging(project):
    project.write("recipes/hello/broken.patch", "--- a/hello.c\n+++ b/hello.c\n@@ -1 +1 @@\n-no such line\n+x\n")
    project.update_recipe("hello", patches=["broken.patch"])
    result = project.doit("fetch:hello")
    assert result.returncode != 0
    assert "fetch:hello: patch recipes/hello/broken.patch does not apply" in result.stdout + result.stderr
    src = project.path("build/src")
    assert not src.exists() or [p.name for p in src.iterdir()] == []


def test_a_full_disk_while_unpacking_is_one_line_and_leaves_no_folder(tmp_path):
    """In a private mount namespace: a 1 MB tmpfs, and a tarball of 3 MB."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("user and mount namespaces are not available here")
    archive = tmp_path / "big.tar.gz"
    make_tarball(archive, {"big.bin": os.urandom(3 << 20)}, "pkg-1.0")
    mount = tmp_path / "mnt"
    mount.mkdir()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path;"
            "from mlbuild.sources.unpack import unpack; from mlbuild.errors import MlbuildError\n"
            "try:\n    unpack(Path(sys.argv[2]), Path(sys.argv[3], 'dest'), 1, 'fetch:big: big.tar.gz')\n"
            "except MlbuildError as error:\n    print(error)\n"
            "print(sorted(p.name for p in Path(sys.argv[3]).iterdir()))")
    result = subprocess.run(["unshare", "-rm", "sh", "-ec", f'mount -t tmpfs -o size=1m tmpfs {mount}; exec "$@"', "sh",
                             sys.executable, "-c", code, REPO / "src", archive, mount], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    message, left = result.stdout.splitlines()
    assert message.startswith(f"fetch:big: big.tar.gz: tar could not unpack into {mount}/dest: tar: big.bin: "), message
    assert "(no space left on device: " in message
    assert left == "[]"
