"""Adding a small library with `mlbuild new`: zlib from Debian's source archive, on the configure/make infrastructure.

A copy of the project (recipes/, templates/, dodo.py, pyproject.toml, .gitignore) gets recipes/zlib.toml from
`mlbuild new zlib debian:zlib=1:1.2.13.dfsg-1` (the version Debian 12 has: Debian's archive is the
source this machine reaches, through the private apt state mlbuild keeps) and nothing else; the
real engine (this checkout's src/) then checks, lists and orders it, and — marked `distribution`,
since it needs the real musl and real compiles — builds it for both arches and runs a program
linked against it in both guests. The copy shares the user's download, ccache and artifact caches
(the default `cache`), so what the real system already built is restored, not rebuilt.
"""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
ZLIB = "debian:zlib=1:1.2.13.dfsg-1"
ZLIB_SHA256 = "71feb7947e3c00ef125f83b79a4e529bde31171e5babe48b391f06758d1ab0a1"  # Debian's repacked orig tarball
ARCHES = ("x86_64", "arm64")
TRIPLES = {"x86_64": "x86_64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}
COPIED = ["recipes", "arches", "templates", "dodo.py", "pyproject.toml", ".gitignore"]  # a clone: build/ is not tracked

ZLIB_HELLO = r"""
#include <stdio.h>
#include <string.h>
#include <zlib.h>

int main(void) {
    const char text[] = "hello from zlib, hello from zlib, hello from zlib, hello from zlib";
    unsigned char packed[256], unpacked[256];
    uLongf packed_size = sizeof packed, unpacked_size = sizeof unpacked;
    if (compress(packed, &packed_size, (const Bytef *) text, sizeof text) != Z_OK) return 1;
    if (uncompress(unpacked, &unpacked_size, packed, packed_size) != Z_OK) return 2;
    if (unpacked_size != sizeof text || memcmp(unpacked, text, sizeof text) != 0) return 3;
    printf("zlib %s: %u bytes, %lu packed, and back\n", zlibVersion(), (unsigned) sizeof text, (unsigned long) packed_size);
    return 0;
}
"""


def environment() -> dict:
    """The caller's environment without mlbuild's or ccache's settings: the default caches; no clang in the target."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLBUILD_", "CCACHE_"))}
    env.update(PYTHONPATH=str(REPO / "src"), MLBUILD_TARGET_LLVM="0")
    return env


def run(tree: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=tree, env=environment(), capture_output=True, text=True, timeout=timeout)


def git(tree: Path, *args: str) -> str:
    command = ["git", "-C", str(tree), "-c", "user.name=mlbuild", "-c", "user.email=mlbuild@example.org", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The copy, committed as it was, then with the new component added by `mlbuild new`; (root, the addition's diff, what it printed)."""
    if not shutil.which("apt-get"):
        pytest.skip("no apt-get: not a Debian/Ubuntu machine (zlib comes from Debian's source archive)")
    root = tmp_path_factory.mktemp("new-component")
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the project as it was")
    # The whole addition:
    added = run(root, "-m", "mlbuild.frontend.cli", "new", "zlib", ZLIB, timeout=600)
    assert added.returncode == 0, added.stdout + added.stderr
    git(root, "add", "-A")
    diff = git(root, "diff", "--cached", "--name-status")
    git(root, "commit", "-q", "-m", "zlib")
    return root, diff, added.stdout


@pytest.mark.slow
def test_adding_zlib_is_one_recipe_file_and_nothing_else(tree):
    root, diff, printed = tree
    assert diff.splitlines() == ["A\trecipes/zlib.toml"]
    assert printed.splitlines()[:3] == [
        f"new: zlib_1.2.13.dfsg.orig.tar.bz2 from Debian source zlib=1:1.2.13.dfsg-1, in the download cache (sha256 {ZLIB_SHA256})",
        "new: it builds with ./configure (its own, not GNU Autoconf's): infra/configure-make",
        "wrote recipes/zlib.toml"]
    assert printed.splitlines()[-1] == "next: `doit build:zlib-x86_64`"  # nothing left to fill in: Debian said it all
    # ... and that file names an infrastructure as its build script, no template of its own, and what Debian says.
    recipe = tomllib.loads((root / "recipes" / "zlib.toml").read_text())
    assert recipe["build"] == "infra/configure-make" and recipe["version"] == "1.2.13"
    assert (recipe["license"], recipe["homepage"], recipe["summary"]) == ("Zlib", "http://zlib.net/", "Compression library")
    assert recipe["sources"] == [{"debian": "zlib=1:1.2.13.dfsg-1", "sha256": ZLIB_SHA256}]
    assert recipe["vars"] == {"configure_host": False, "configure_args": ["--static"]}  # zlib's own configure


def test_mlbuild_check_passes_with_the_new_component(tree):
    root, _, _ = tree
    result = run(root, "-m", "mlbuild.frontend.cli", "check")
    assert result.returncode == 0, result.stderr
    assert f"ok: {len(list((REPO / 'recipes').glob('*.toml'))) + 1} recipes" in result.stdout  # ours and zlib


def test_doit_lists_the_new_component_for_every_arch(tree):
    root, _, _ = tree
    result = run(root, "-m", "doit", "list", "--all")
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert {"fetch:zlib", "build:zlib-x86_64", "build:zlib-arm64"} <= names


def test_the_graph_builds_it_after_musl_and_compiler_rt_and_puts_it_in_the_target(tree):
    from mlbuild.frontend.project import Project

    root, _, _ = tree
    project = Project(root, {"target_llvm": "0"}, environ={})
    graph = project.graph
    for arch in ("x86_64", "arm64"):
        zlib = f"build:zlib-{arch}"
        assert set(graph.predecessors(zlib)) == {"fetch:zlib", f"build:musl-{arch}", f"build:compiler-rt-{arch}"}
        order = list(nx.topological_sort(graph))
        assert order.index(f"build:musl-{arch}") < order.index(zlib) < order.index(f"build:target-{arch}")
        assert graph.has_edge(zlib, f"build:target-{arch}")
    script = project.steps["build:zlib-x86_64"].script
    assert '"$SRC/configure" --prefix=/usr --static\n' in script  # no --host: zlib's configure refuses it
    assert 'make $MAKE_JOBS\n' in script and 'make install DESTDIR="$OUT"\n' in script


# A post-build hook puts each arch's program into its target; a check of the user's runs it in the guest.
HOOK = """#!/bin/sh
set -eu
cp "$PROJECT_DIR/programs/zhello-$ARCH" "$TARGET_DIR/usr/bin/zhello"
"""
CHECK = """
[[tool.mlbuild.checks]]
name = "zlib"
command = "zhello"
expect = '^zlib 1\\.2\\.13: 67 bytes, [0-9]+ packed, and back$'
"""


@pytest.mark.distribution
def test_zlib_builds_for_both_arches_and_a_program_linked_with_it_runs_in_both_guests(tree):
    root, _, _ = tree
    result = run(root, "-m", "doit", "-n", "2", *(f"build:target-{arch}" for arch in ARCHES), timeout=3600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    (root / "programs").mkdir()
    for arch in ARCHES:
        target = root / "target" / arch
        assert (target / "usr" / "lib" / "libz.a").is_file()
        assert (target / "usr" / "include" / "zlib.h").is_file() and (target / "usr" / "include" / "zconf.h").is_file()
        assert not list((target / "usr" / "lib").glob("libz.so*"))  # static only
        source = root / "programs" / "zhello.c"
        source.write_text(ZLIB_HELLO)
        program = root / "programs" / f"zhello-{arch}"
        subprocess.run(["/usr/lib/llvm-19/bin/clang", f"--target={TRIPLES[arch]}", f"--sysroot={target}",
                        f"-resource-dir={target}/usr/lib/clang/19", "--rtlib=compiler-rt", "--unwindlib=none",
                        "-fuse-ld=lld", "-static", "-O2", source, "-lz", "-o", program], check=True)
        assert "INTERP" not in subprocess.run(["readelf", "-lh", program], capture_output=True, text=True).stdout
    (root / "hooks").mkdir()
    (root / "hooks" / "zhello.sh").write_text(HOOK)
    (root / "hooks" / "zhello.sh").chmod(0o755)
    pyproject = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(pyproject.replace("[tool.mlbuild]\n", '[tool.mlbuild]\npost_build = ["hooks/zhello.sh"]\n', 1) + CHECK)
    for arch in ARCHES:
        booted = run(root, "-m", "doit", f"boottest:{arch}", timeout=1800)
        assert booted.returncode == 0, (booted.stdout + booted.stderr)[-5000:]
        assert re.search(r"zlib: zlib 1\.2\.13: 67 bytes, [0-9]+ packed, and back", booted.stdout), booted.stdout[-3000:]
