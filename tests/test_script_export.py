"""`mlbuild script TASK`: the whole build as one linear shell script that gives mlbuild's outputs without mlbuild or Python."""

import hashlib
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from conftest import EXTRA_C, HELLO_C, x86

from mlbuild.trees import hash_tree


def _no_python(folder):
    """A folder of python/python3 stand-ins that fail loudly: put first on PATH, any use of Python shows."""
    folder.mkdir()
    for name in ("python", "python3", "mlbuild", "doit"):
        path = folder / name
        path.write_text(f"#!/bin/sh\necho 'the exported script ran {name}' >&2\nexit 99\n")
        path.chmod(0o755)
    return folder


def test_the_exported_script_builds_the_same_components_target_and_images_without_mlbuild_or_python(built, tmp_path):
    # A patch and a config file, so the script has to carry both.
    built.write("recipes/hello/0001-louder.patch",
                "--- a/hello.c\n+++ b/hello.c\n@@ -1,3 +1,3 @@\n #include <stdio.h>\n #include \"greeting.h\"\n"
                "-int main(void) { puts(GREETING); return 0; }\n+int main(void) { puts(GREETING \"!\"); return 0; }\n")
    built.update_recipe("hello", patches=["0001-louder.patch"], files=["hello/extra.conf.j2"])
    built.write("templates/hello/extra.conf.j2", "greeting={{ vars.greeting }}\nno newline at the end")
    built.edit("templates/build/hello.sh.j2", "mkdir -p", 'mkdir -p "$OUT/etc"\ncp "$FILES/extra.conf" "$OUT/etc/"\nmkdir -p')
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert built.run_binary("hello") == "Hello, world!!\n"

    exported = built.cli("script", "build:images-x86_64")
    assert exported.returncode == 0, exported.stderr
    script = exported.stdout
    assert not re.search(r"\bpython3?\b", script)  # (MLBUILD_PYTHON=true: mlbuild's fragment check is skipped)
    # in dependency order, each step commented
    order = [line.split(":", 1)[0][2:] + ":" + line.split(":", 2)[1] for line in script.splitlines()
             if line.startswith("# fetch:") or line.startswith("# build:")]
    assert order == ["fetch:app", "fetch:hello", *sorted(x86("extra", "hello")), "build:app-x86_64",
                     "build:target-x86_64", "build:images-x86_64"]
    # per fetch: the download cache by checksum, then each place; the functions doing it written once
    assert script.count("\ncached ") == 2 and script.count("\n  || from_url ") == 2
    assert script.count("cached() {") == 1 and script.count("sha256sum <") == 2  # a cached file, a fresh one
    # mlbuild's download limits (download_timeout, download_max_size, download_min_rate over download_rate_window)
    assert script.count('CURL_LIMITS="--max-time 3600 --max-filesize 4294967296 --speed-limit 1024 --speed-time 30"') == 1

    (tmp_path / "build.sh").write_text(script)
    downloads = tmp_path / "downloads"  # empty: the script downloads (file:// here) and checks each sha256
    environment = {"PATH": f"{_no_python(tmp_path / 'shims')}:/usr/bin:/bin", "HOME": str(tmp_path),
                   "MLBUILD_DOWNLOADS": str(downloads)}
    run = subprocess.run(["bash", str(tmp_path / "build.sh"), str(tmp_path / "out")], env=environment,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "the exported script ran" not in run.stderr
    assert len(list(downloads.glob("*/*.tar.gz"))) == 2

    out = tmp_path / "out"
    for name in ("hello", "extra", "app"):
        assert hash_tree(out / "out" / f"{name}-x86_64") == hash_tree(built.path(f"build/out/{name}-x86_64")), name
    assert (out / "out/hello-x86_64/etc/extra.conf").read_text() == "greeting=Hello, world!\nno newline at the end"
    assert hash_tree(out / "target/x86_64") == hash_tree(built.path("target/x86_64"))
    for image in ("initramfs.cpio", "initramfs.cpio.zst", "rootfs.ext4"):
        ours = hashlib.sha256((out / "images/x86_64" / image).read_bytes()).hexdigest()
        assert ours == hashlib.sha256(built.path(f"build/images/x86_64/{image}").read_bytes()).hexdigest(), image


def test_a_download_with_the_wrong_checksum_stops_the_exported_script(built, tmp_path):
    source = built.new_source("hello", {"hello.c": HELLO_C, "extra.c": EXTRA_C}, "hello-1.0")
    built.update_recipe("hello", sources=[source])
    script = built.cli("script", "build:hello-x86_64").stdout
    tarball = built.tarballs / source["url"].rsplit("/", 1)[-1]
    tarball.write_bytes(tarball.read_bytes() + b"tampered")
    (tmp_path / "build.sh").write_text(script)
    run = subprocess.run(["bash", str(tmp_path / "build.sh"), str(tmp_path / "out")],
                         env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLBUILD_DOWNLOADS": str(tmp_path / "dl")},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-2:] == [f"fetch:hello: sha256 mismatch for {tarball.name}",
                                                    "fetch:hello: every source failed"]
    assert not (tmp_path / "out/src/hello").exists() and not list((tmp_path / "dl").glob("*/*.tar.gz"))


def test_script_for_an_unknown_task_is_one_line(built):
    result = built.cli("script", "nosuch")
    assert result.returncode != 0
    assert result.stderr == "mlbuild: script: no task 'build:nosuch'; `doit list --all` shows them\n"


@pytest.mark.slow
def test_with_the_runtime_image_profile_the_exported_script_packs_the_same_images(built, tmp_path):
    # Headers, a static library and an include folder deep down: what the runtime images leave out.
    built.edit("templates/build/app.sh.j2", "mkdir -p", 'mkdir -p "$OUT/usr/include/app" "$OUT/usr/lib/clang/19/include" "$OUT/usr/share/man"\n'
               'echo "int app;" > "$OUT/usr/include/app/app.h"\necho x > "$OUT/usr/lib/clang/19/include/x.h"\n'
               'echo lib > "$OUT/usr/lib/libapp.a"\necho lib > "$OUT/usr/lib/libapp.so"\necho man > "$OUT/usr/share/man/app.1"\nmkdir -p')
    result = built.doit("image_profile=runtime")
    assert result.returncode == 0, result.stdout + result.stderr
    exported = built.cli("script", "build:images-x86_64", "image_profile=runtime")
    assert exported.returncode == 0, exported.stderr
    out = _run_exported(exported.stdout, tmp_path)
    assert hash_tree(out / "target/x86_64") == hash_tree(built.path("target/x86_64"))
    assert (out / "target/x86_64/usr/lib/libapp.a").exists()  # the target keeps everything
    for image in ("initramfs.cpio", "initramfs.cpio.zst", "rootfs.ext4"):
        ours = hashlib.sha256((out / "images/x86_64" / image).read_bytes()).hexdigest()
        assert ours == hashlib.sha256(built.path(f"build/images/x86_64/{image}").read_bytes()).hexdigest(), image
    archive = (out / "images/x86_64/initramfs.cpio").read_bytes()
    assert b"usr/lib/libapp.so" in archive and b"libapp.a" not in archive and b"app.h" not in archive
    assert not (out / "work/images-x86_64-runtime").exists()


@pytest.mark.slow
def test_the_exported_script_runs_the_post_build_and_post_image_hooks_as_mlbuild_does(built, tmp_path):
    post_build = built.write("hooks/post-build.sh", '#!/bin/sh\nset -eu\necho "$MLBUILD_HOOK $ARCH $IMAGE_PROFILE $SOURCE_DATE_EPOCH" > "$TARGET_DIR/etc/built-by"\n'
                             'test "$1" = "$TARGET_DIR"\n')
    post_image = built.write("hooks/post-image.sh", '#!/bin/sh\nset -eu\nls "$IMAGES_DIR" > "$IMAGES_DIR/listing"\n'
                             'test -x "$TARGET_DIR/bin/hello"\n')
    post_build.chmod(0o755)
    post_image.chmod(0o755)
    built.edit("pyproject.toml", "[tool.mlbuild]\n", '[tool.mlbuild]\npost_build = ["hooks/post-build.sh"]\npost_image = ["hooks/post-image.sh"]\n')
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert built.read("target/x86_64/etc/built-by").startswith("post-build x86_64 ")

    exported = built.cli("script", "build:images-x86_64")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.count("post-build hook hooks/post-build.sh") == 1
    out = _run_exported(exported.stdout, tmp_path, MLBUILD_DOWNLOADS=str(tmp_path / "downloads"), MLBUILD_PROJECT=str(tmp_path))
    assert hash_tree(out / "target/x86_64") == hash_tree(built.path("target/x86_64"))
    for name in ("initramfs.cpio", "rootfs.ext4", "listing"):
        assert (out / "images/x86_64" / name).read_bytes() == built.path(f"build/images/x86_64/{name}").read_bytes(), name


def test_declared_permissions_give_the_exported_script_the_same_target_and_images(built, tmp_path):
    built.update_recipe("hello", permissions=[{"path": "bin/hello", "mode": "4750"}])
    built.update_recipe("app", permissions=[{"path": "bin/app", "mode": "0711", "uid": 1000, "gid": 100}])
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    exported = built.cli("script", "build:images-x86_64")
    assert exported.returncode == 0, exported.stderr
    assert "chmod 4750 " in exported.stdout and "# recipes/hello.toml" in exported.stdout
    out = _run_exported(exported.stdout, tmp_path)
    assert hash_tree(out / "target/x86_64") == hash_tree(built.path("target/x86_64"))  # the modes, setuid included
    for image in ("initramfs.cpio", "initramfs.cpio.zst", "rootfs.ext4"):  # the modes and the owners
        ours = hashlib.sha256((out / "images/x86_64" / image).read_bytes()).hexdigest()
        assert ours == hashlib.sha256(built.path(f"build/images/x86_64/{image}").read_bytes()).hexdigest(), image


def _run_exported(script: str, tmp_path, **environment: str):
    """Run an exported script with Python out of reach; the folder it built under."""
    (tmp_path / "build.sh").write_text(script)
    environment = {"PATH": f"{_no_python(tmp_path / 'shims')}:/usr/bin:/bin", "HOME": str(tmp_path), **environment}
    run = subprocess.run(["bash", str(tmp_path / "build.sh"), str(tmp_path / "out")], env=environment,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return tmp_path / "out"


def _failing(folder, *names):
    """Stand-ins for network programs that fail loudly: put first on PATH, any download attempt shows."""
    folder.mkdir(exist_ok=True)
    for name in names:
        path = folder / name
        path.write_text(f"#!/bin/sh\necho 'the exported script ran {name}' >&2\nexit 7\n")
        path.chmod(0o755)
    return folder


def test_the_exported_script_finds_the_download_cache_by_checksum_whatever_the_files_name(built, tmp_path):
    """mlbuild keeps a Debian tarball as musl_1.2.3.orig.tar.gz; the script must find it by its sha256, not look for the URL's name."""
    source = built.recipes["hello"]["sources"][0]
    sha, tarball = source["sha256"], Path(urllib.parse.urlsplit(source["url"]).path)
    downloads = tmp_path / "downloads"
    (downloads / sha).mkdir(parents=True)
    (downloads / sha / "hello_1.0.orig.tar.gz").write_bytes(tarball.read_bytes())
    (downloads / sha / "a-wrong-one.tar.gz").write_bytes(b"not the release")  # looked at, refused by its checksum
    # and upstream is gone: only the cache can give it
    built.update_recipe("hello", sources=[{"url": (tmp_path / "gone" / tarball.name).as_uri(), "sha256": sha}])
    exported = built.cli("script", "build:hello-x86_64")
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "build.sh").write_text(exported.stdout)
    shims = _failing(tmp_path / "shims", "curl", "apt-get", "python3")
    run = subprocess.run(["bash", str(tmp_path / "build.sh"), str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                         env={"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(tmp_path), "MLBUILD_DOWNLOADS": str(downloads)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "the exported script ran" not in run.stderr and "trying" not in run.stderr
    assert hash_tree(tmp_path / "out/out/hello-x86_64") == hash_tree(built.path("build/out/hello-x86_64"))


def test_the_exported_script_tries_every_alternative_of_a_source_in_order(built, tmp_path):
    source = built.recipes["hello"]["sources"][0]
    gone = (tmp_path / "upstream-is-down" / "hello-1.0.tar.gz").as_uri()
    wrong = built.new_source("hello", {"hello.c": "int main(void) { return 1; }\n"}, "hello-1.0")  # other bytes
    built.update_recipe("hello", sources=[{"url": gone, "sha256": source["sha256"]},
                                          {"url": wrong["url"], "sha256": source["sha256"]},  # a mirror serving other bytes
                                          source])
    exported = built.cli("script", "build:hello-x86_64")
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "build.sh").write_text(exported.stdout)
    downloads = tmp_path / "downloads"
    run = subprocess.run(["bash", str(tmp_path / "build.sh"), str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                         env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLBUILD_DOWNLOADS": str(downloads)})
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("fetch:hello: ")]
    wrong_name = wrong["url"].rsplit("/", 1)[-1]
    assert lines == [f"fetch:hello: trying {gone}", f"fetch:hello: {gone}: download failed",
                     f"fetch:hello: trying {wrong['url']}", f"fetch:hello: sha256 mismatch for {wrong_name}",
                     f"fetch:hello: trying {source['url']}"]
    assert [path.name for path in downloads.glob("*/*")] == [source["url"].rsplit("/", 1)[-1]]
    assert not list((downloads / ".partial").iterdir())  # nothing left of the failures
    assert hash_tree(tmp_path / "out/out/hello-x86_64") == hash_tree(built.path("build/out/hello-x86_64"))


MUSL_SHA256 = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4"


@pytest.mark.slow
def test_the_exported_script_gets_a_debian_source_without_deb_src_lines_through_a_private_apt_state(project, tmp_path):
    """The real archive, as tests/test_menuconfig_mirrors_debian_graph.py's: musl's orig tarball, 1 MB. The
    machine's apt configuration has deb lines only (what a Debian install has): the script derives its own."""
    if not shutil.which("apt-get"):
        pytest.skip("no apt-get: not a Debian/Ubuntu machine")
    gone = (tmp_path / "upstream-is-down" / "musl-1.2.3.tar.gz").as_uri()
    project.write_recipe("musl", {"name": "musl", "version": "1.2.3", "summary": "C library", "homepage": "https://musl.libc.org/",
                                  "license": "MIT", "sources": [{"url": gone, "sha256": MUSL_SHA256},
                                                                {"debian": "musl=1.2.3-1", "sha256": MUSL_SHA256}]})
    exported = project.cli("script", "fetch:musl")
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "build.sh").write_text(exported.stdout)
    downloads, temporary = tmp_path / "downloads", tmp_path / "tmp"
    temporary.mkdir()
    apt_configuration = sorted((path, path.read_bytes()) for path in Path("/etc/apt").rglob("*") if path.is_file())
    run = subprocess.run(["bash", str(tmp_path / "build.sh"), str(tmp_path / "out")], capture_output=True, text=True, timeout=600,
                         env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLBUILD_DOWNLOADS": str(downloads),
                              "TMPDIR": str(temporary)})
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "fetch:musl: trying Debian source musl=1.2.3-1" in run.stderr
    assert [path.name for path in downloads.glob("*/*")] == ["musl_1.2.3.orig.tar.gz"]
    assert (tmp_path / "out/src/musl/VERSION").read_text().strip() == "1.2.3"
    assert list(temporary.iterdir()) == []  # the private apt state is gone with the script
    assert sorted((path, path.read_bytes()) for path in Path("/etc/apt").rglob("*") if path.is_file()) == apt_configuration


@pytest.mark.slow
def test_the_exported_script_maps_its_own_folder_out_of_objects_as_mlbuild_maps_the_build_folder(built, tmp_path):
    """$PREFIX_MAP_FLAGS name the script's folder ($ROOT), not the exporting tree's: debug info built elsewhere is mlbuild's, bit for bit."""
    built.edit("templates/build/hello.sh.j2", 'ccache clang -O1 -I. -c "$SRC/hello.c"',
               'ccache clang -g -O1 $PREFIX_MAP_FLAGS -I. -c "$SRC/hello.c"')
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    binary = built.path("build/out/hello-x86_64/bin/hello").read_bytes()
    assert b"/usr/obj/hello" in binary and str(built.root).encode() not in binary  # the debug info names fixed folders
    exported = built.cli("script", "build:hello-x86_64")
    assert exported.returncode == 0, exported.stderr
    assert str(built.path("build")) not in exported.stdout
    assert "PREFIX_MAP_FLAGS=-ffile-prefix-map=\"$ROOT\"'/src/hello=/usr/src/hello " in exported.stdout
    out = _run_exported(exported.stdout, tmp_path)
    assert (out / "out/hello-x86_64/bin/hello").read_bytes() == binary


def test_the_script_of_the_whole_build_times_each_step_and_takes_another_ccache_folder(built, tmp_path):
    """`mlbuild script build` is what `doit build` builds; MLBUILD_STEP_TIMES and MLBUILD_CCACHE_DIR are what
    scripts/benchmark.py script measures it with."""
    exported = built.cli("script", "build")
    assert exported.returncode == 0, exported.stderr
    assert "# Exported by `mlbuild script build` from the task graph: 7 steps in dependency order." in exported.stdout
    steps = re.findall(r"^step (\S+)$", exported.stdout, re.M)
    assert steps == ["fetch:app", "fetch:hello", *sorted(x86("extra", "hello")), "build:app-x86_64",
                     "build:target-x86_64", "build:images-x86_64"]
    # the exporting tree's ccache folder only as the header's default
    assert exported.stdout.count("/.cache/ccache") == 1 and exported.stdout.count('CCACHE_DIR="$CCACHE_STORE"') == 3
    assert exported.stdout.count(f'CCACHE_STORE="${{MLBUILD_CCACHE_DIR:-{built.path(".cache/ccache")}}}"') == 1
    times, ccache = tmp_path / "times.tsv", tmp_path / "other-ccache"
    out = _run_exported(exported.stdout, tmp_path, MLBUILD_STEP_TIMES=str(times), MLBUILD_CCACHE_DIR=str(ccache),
                        MLBUILD_DOWNLOADS=str(tmp_path / "downloads"))
    rows = [line.split("\t") for line in times.read_text().splitlines()]
    assert [row[0] for row in rows] == steps
    assert all(row[1].isdigit() and row[2].isdigit() for row in rows)
    # the compiles are counted in the steps that ran them (three clang runs each, well over a millisecond)
    assert all(int(row[2]) > 0 for row in rows if row[0].startswith("build:hello") or row[0] == "build:app-x86_64"), rows
    assert list(ccache.rglob("*.o")) or list(ccache.rglob("*R")), "the compiles went through the given ccache folder"
    assert hash_tree(out / "target/x86_64") == hash_tree(built.path("target/x86_64"))
