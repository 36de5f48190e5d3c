"""Reproducible builds: the same inputs give the same bytes in another folder, under another umask, TZ and locale.

The synthetic project (conftest.py) is built twice with the real doit, in two different absolute
paths, each with its own empty ccache, by processes with different umasks, time zones and
locales; its scripts compile with debug info and __FILE__, make an archive, and create files
under a private umask of their own. Every file of the system and both images must be identical.
"""

import os
import stat
import shutil
import subprocess
import sys

import pytest

from conftest import ARCH, EXTRA_C, REPO, base_environment, make_project, parse_tasks, x86

from mlbuild.system.cpio import normal_mode, write_initramfs
from mlbuild.steps.images import MODES

# hello.c with the things that carry build paths into objects: __FILE__ (assert) and debug info.
HELLO_C = """\
#include <assert.h>
#include <stdio.h>
#include "greeting.h"
const char *where(void) { return __FILE__; }
int main(int argc, char **argv) { assert(argv); puts(GREETING); return argc > 5 ? where()[0] : 0; }
"""
HELLO_SH = """\
printf '#define GREETING "%s"\\n' {{ vars.greeting }} > greeting.h
ccache clang -g -O1 $PREFIX_MAP_FLAGS -I. -c "$SRC/hello.c" -o hello.o
ccache clang -g -O1 $PREFIX_MAP_FLAGS -c "$SRC/extra.c" -o extra.o
clang hello.o -o hello
mkdir -p "$OUT/bin" "$OUT/lib"
cp hello "$OUT/bin/hello"
llvm-ar rcs "$OUT/lib/libhello.a" hello.o extra.o
# A component that creates private files on purpose: the images must not keep 0700/0600.
(umask 077 && mkdir -p "$OUT/share/private" && echo secret > "$OUT/share/private/data")
date -u +%s > "$WORK/clock"  # the clock the build's tools saw (the second build's is shifted)
"""

BUILDERS = [
    {"umask": 0o022, "env": {"TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}},
    # Under faketime three days ahead, which reaches the build scripts through pass_environment.
    {"umask": 0o077, "env": {"TZ": "Asia/Tokyo", "LANG": "POSIX", "LC_ALL": "POSIX",
                             "MLBUILD_PASS_ENVIRONMENT": "LD_PRELOAD,FAKETIME"}, "clock": "+3d"},
]
FAKETIME = shutil.which("faketime")


def _build(project, builder: dict) -> None:
    clock = ["faketime", "-f", builder["clock"]] if builder.get("clock") and FAKETIME else []
    result = subprocess.run(
        [*clock, sys.executable, "-m", "doit"], cwd=project.root, env=base_environment({"MLBUILD_VERBOSE": "1", **builder["env"]}),
        capture_output=True, text=True, timeout=300, preexec_fn=lambda: os.umask(builder["umask"]),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert x86("hello", "target", "images") <= parse_tasks(result.stdout)[0]


def _files(root) -> dict[str, tuple[int, bytes]]:
    """Every path below root: (mode, content or link target)."""
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path).encode()
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    content = handle.read()
            else:
                content = b""
            found[os.path.relpath(path, root)] = (info.st_mode, content)
    return found


def _ext4_mode(image, path: str) -> int:
    result = subprocess.run(["debugfs", "-R", f"stat {path}", str(image)], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    for line in result.stdout.splitlines():
        if "Mode:" in line:
            return int(line.split("Mode:")[1].split()[0], 8)
    raise AssertionError(f"debugfs found no {path} in {image}: {result.stderr}")


def _cpio_modes(archive) -> dict[str, int]:
    """name -> permission bits, read from the newc headers."""
    data, modes, offset = archive.read_bytes(), {}, 0
    while True:
        header = data[offset:offset + 110]
        mode, size, name_size = int(header[14:22], 16), int(header[54:62], 16), int(header[94:102], 16)
        name = data[offset + 110:offset + 110 + name_size - 1].decode()
        if name == "TRAILER!!!":
            return modes
        modes[name] = stat.S_IMODE(mode)
        offset += 110 + name_size
        offset += -offset % 4
        offset += size + (-size % 4)


@pytest.mark.slow
def test_two_builds_in_different_folders_umasks_time_zones_and_locales_are_bit_identical(tmp_path):
    projects = []
    for base, builder in zip((tmp_path / "first", tmp_path / "second" / "deeper" / "elsewhere"), BUILDERS):
        project = make_project(base)
        project.write("templates/build/hello.sh.j2", HELLO_SH)
        project.update_recipe("hello", sources=[project.new_source("hello", {"hello.c": HELLO_C, "extra.c": EXTRA_C}, "hello-1.0")])
        # The whole tree in the images, static library included: its mode there is checked below.
        project.write("pyproject.toml", project.read("pyproject.toml") + 'image_profile = "full"\n')
        _build(project, builder)
        projects.append(project)
    first, second = projects
    if FAKETIME:  # scripts/setup.sh installs it; the test still compares the rest without it
        clocks = [int(project.path(f"build/work/hello-{ARCH}/clock").read_text()) for project in projects]
        assert 2.9 * 86400 < clocks[1] - clocks[0] < 3.1 * 86400, clocks

    systems = [_files(project.path(f"target/{ARCH}")) for project in projects]
    assert systems[0].keys() == systems[1].keys()
    differing = sorted(name for name in systems[0] if systems[0][name] != systems[1][name])
    assert differing == []
    for project in projects:
        for name, (_, content) in _files(project.path(f"target/{ARCH}")).items():
            assert str(project.root).encode() not in content, f"{name} holds the build path {project.root}"
    # The debug info names the fixed work folder instead (ccache made the source's path relative to it).
    assert b"/usr/obj/hello" in systems[0]["bin/hello"][1]

    for image in ("initramfs.cpio", "initramfs.cpio.zst", "rootfs.ext4"):
        contents = [project.path(f"build/images/{ARCH}/{image}").read_bytes() for project in projects]
        assert contents[0] == contents[1], f"{image} differs between the two builds"

    # The run under umask 077 made a target tree with normal modes, and the images normalise
    # what a script made private on purpose.
    target = second.path(f"target/{ARCH}")
    assert stat.S_IMODE((target / "bin").stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "etc/hostname").stat().st_mode) == 0o644
    assert stat.S_IMODE((target / "share/private").stat().st_mode) == 0o700  # the script's own choice
    modes = _cpio_modes(second.path(f"build/images/{ARCH}/initramfs.cpio"))
    expected = {"bin": 0o755, "bin/hello": 0o755, "lib/libhello.a": 0o644, "etc/hostname": 0o644,
                "share/private": 0o755, "share/private/data": 0o644, "tmp": 0o1777, "proc": 0o755}
    assert {name: modes[name] for name in expected} == expected
    ext4 = second.path(f"build/images/{ARCH}/rootfs.ext4")
    assert {name: _ext4_mode(ext4, "/" + name) for name in expected} == expected


def _tree(root, umask: int) -> None:
    old = os.umask(umask)
    try:
        (root / "bin").mkdir(parents=True)
        (root / "etc").mkdir()
        (root / "tmp").mkdir()
        os.chmod(root / "tmp", 0o1777)
        (root / "bin" / "busybox").write_bytes(b"\x7fELF")
        os.chmod(root / "bin" / "busybox", 0o777 & ~umask)
        (root / "bin" / "sh").symlink_to("busybox")
        (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    finally:
        os.umask(old)


def test_an_initramfs_of_a_tree_made_under_umask_077_has_normal_modes_and_equals_one_made_under_022(tmp_path):
    archives = []
    for umask in (0o022, 0o077):
        root = tmp_path / f"root-{umask:o}"
        _tree(root, umask)
        archive = tmp_path / f"initramfs-{umask:o}.cpio"
        # The engine's modes and a recipe's declared one, as the images use them.
        write_initramfs(root, archive, 1672531200, {**MODES, "bin/busybox": 0o4755}, {})
        archives.append(archive)
    assert stat.S_IMODE((tmp_path / "root-77" / "etc").stat().st_mode) == 0o700  # the tree is private
    assert archives[0].read_bytes() == archives[1].read_bytes()
    assert _cpio_modes(archives[1]) == {"bin": 0o755, "bin/busybox": 0o4755, "bin/sh": 0o777, "etc": 0o755,
                                        "etc/passwd": 0o644, "tmp": 0o1777}


def test_normal_modes_keep_only_the_execute_bit_and_the_special_bits():
    assert normal_mode(stat.S_IFREG | 0o600) == 0o644
    assert normal_mode(stat.S_IFREG | 0o700) == 0o755
    assert normal_mode(stat.S_IFREG | 0o4700) == 0o4755
    assert normal_mode(stat.S_IFDIR | 0o700) == 0o755
    assert normal_mode(stat.S_IFDIR | 0o1700) == 0o1755
    assert normal_mode(stat.S_IFLNK | 0o777) == 0o777


def test_every_build_script_of_the_project_maps_the_checkouts_paths_away():
    """Each rendered build script (clang in the target and the host toolchain included) gives its compiles $PREFIX_MAP_FLAGS."""
    from mlbuild.frontend.project import Project
    from mlbuild.steps.build import BuildStep

    scripts = {step.name: step.script for userland in ("busybox", "toybox")
               for step in Project(REPO, {"target_llvm": "1", "userland": userland}, environ={}).steps.values()
               if isinstance(step, BuildStep)}
    assert {"build:clang-arm64", "build:llvm-host", "build:linux-x86_64", "build:busybox-arm64", "build:toybox-arm64"} <= scripts.keys()
    missing = sorted(name for name, script in scripts.items() if "$PREFIX_MAP_FLAGS" not in script)
    assert missing == []
    for name in ("build:clang-arm64", "build:llvm-host"):  # in the flags CMake is given, not only in a comment
        flags = [line for line in scripts[name].splitlines() if line.startswith('flags="')]
        assert len(flags) == 1 and "$PREFIX_MAP_FLAGS" in flags[0], flags
        assert '-DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags"' in scripts[name]


@pytest.mark.slow
def test_pass_environment_naming_a_variable_mlbuild_sets_is_refused_and_the_list_is_what_scripts_get(project):
    """Such a name was accepted and dropped in silence: mlbuild's value wins. The refusal lists the variables
    mlbuild owns, which must be exactly those a build script sees (derived from the same dict, not kept by hand)."""
    project.edit("templates/build/app.sh.j2", "mkdir", 'env -0 | tr "\\0" "\\n" | sed -n "s/=.*//p" | sort > "$WORK/names"\nmkdir')
    project.edit("pyproject.toml", "jobs = 2\n", 'jobs = 2\npass_environment = ["MY_PROXY"]\n')
    result = project.doit(env={"MY_PROXY": "http://proxy:3128"})
    assert result.returncode == 0, result.stdout + result.stderr
    seen = set(project.read("build/work/app-x86_64/names").split()) - {"PWD", "SHLVL", "_", "OLDPWD"}  # bash's own
    assert "MY_PROXY" in seen  # a name mlbuild does not set passes

    project.edit("pyproject.toml", 'pass_environment = ["MY_PROXY"]', 'pass_environment = ["PATH", "OUT", "MY_PROXY", "SOURCE_DATE_EPOCH"]')
    for run in (project.doit("list"), project.doit(), project.cli("check")):
        assert run.returncode == 2, run.stdout + run.stderr
        lines = run.stderr.splitlines()
        assert len(lines) == 1, run.stderr
        prefix = ("mlbuild: configuration: pass_environment: PATH, OUT, SOURCE_DATE_EPOCH are set by mlbuild for every "
                  "build script and cannot be passed through; mlbuild's own variables: ")
        assert lines[0].startswith(prefix), lines[0]
        assert set(lines[0].removeprefix(prefix).split(", ")) == seen - {"MY_PROXY"}
    assert project.doit(env={"MLBUILD_PASS_ENVIRONMENT": "TZ"}).stderr.startswith(
        "mlbuild: configuration: pass_environment: TZ is set by mlbuild for every build script")
