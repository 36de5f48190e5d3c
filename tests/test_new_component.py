"""Adding a small component is one recipe file: zlib, on the configure/make infrastructure.

A copy of the project (recipes/, templates/, dodo.py, pyproject.toml) gets
tests/new_component/zlib.toml as recipes/zlib.toml and nothing else; the real
engine (this checkout's src/) then checks, lists, orders and — marked
`distribution`, since it needs the real musl and a real compile — builds it.
The copy shares the user's download, ccache and artifact caches (the default
`cache`), so what the real system already built is restored, not rebuilt.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "tests" / "new_component" / "zlib.toml"
COPIED = ["recipes", "arches", "templates", "dodo.py", "pyproject.toml"]

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
    """The copy, committed as it was, then with the new component added; (root, the addition's diff)."""
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
    shutil.copy2(RECIPE, root / "recipes" / "zlib.toml")
    git(root, "add", "-A")
    diff = git(root, "diff", "--cached", "--name-status")
    git(root, "commit", "-q", "-m", "zlib")
    return root, diff


def test_adding_zlib_is_one_recipe_file_and_nothing_else(tree):
    _, diff = tree
    assert diff.splitlines() == ["A\trecipes/zlib.toml"]
    # ... and that file names an infrastructure as its build script, no template of its own.
    assert 'build = "infra/configure-make"' in RECIPE.read_text()


def test_mlbuild_check_passes_with_the_new_component(tree):
    root, _ = tree
    result = run(root, "-m", "mlbuild.frontend.cli", "check")
    assert result.returncode == 0, result.stderr
    assert f"ok: {len(list((REPO / 'recipes').glob('*.toml'))) + 1} recipes" in result.stdout  # ours and zlib


def test_doit_lists_the_new_component_for_every_arch(tree):
    root, _ = tree
    result = run(root, "-m", "doit", "list", "--all")
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert {"fetch:zlib", "build:zlib-x86_64", "build:zlib-arm64"} <= names


def test_the_graph_builds_it_after_musl_and_compiler_rt_and_puts_it_in_the_target(tree):
    from mlbuild.frontend.project import Project

    root, _ = tree
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
    assert 'make -j"$JOBS" LDFLAGS=-static\n' in script and 'make install DESTDIR="$OUT"\n' in script


@pytest.mark.distribution
def test_zlib_builds_statically_against_musl_and_a_program_linked_with_it_runs(tree, tmp_path):
    root, _ = tree
    result = run(root, "-m", "doit", "build:target-x86_64", timeout=3600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    target = root / "target" / "x86_64"
    assert (target / "usr" / "lib" / "libz.a").is_file()
    assert (target / "usr" / "include" / "zlib.h").is_file() and (target / "usr" / "include" / "zconf.h").is_file()
    assert not list((target / "usr" / "lib").glob("libz.so*"))  # static only
    source = tmp_path / "zhello.c"
    source.write_text(ZLIB_HELLO)
    program = tmp_path / "zhello"
    subprocess.run(["/usr/lib/llvm-19/bin/clang", "--target=x86_64-unknown-linux-musl", f"--sysroot={target}",
                    f"-resource-dir={target}/usr/lib/clang/19", "--rtlib=compiler-rt", "--unwindlib=none",
                    "-fuse-ld=lld", "-static", "-O2", source, "-lz", "-o", program], check=True)
    assert "INTERP" not in subprocess.run(["readelf", "-lh", program], capture_output=True, text=True).stdout
    ran = subprocess.run([program], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("zlib 1.2.13: 67 bytes, ") and ran.stdout.rstrip().endswith("packed, and back")
