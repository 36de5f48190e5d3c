"""Paths that worked but no test held: menuconfig's merge into fragments, mirrors, the Debian source
archive fallback, and `mlbuild graph`."""

import re
import shutil
import tomllib

import pytest

from conftest import make_tarball, sha256_of
from mlbuild.steps.menuconfig import changed_symbols, merge_into_fragment

BEFORE = """\
CONFIG_SHELL_ASH=y
# CONFIG_FEATURE_EDITING_HISTORY is not set
CONFIG_AWK=y
CONFIG_FEATURE_EDITING_MAX_LEN=1024
"""
AFTER = """\
CONFIG_SHELL_ASH=y
CONFIG_FEATURE_EDITING_HISTORY=y
# CONFIG_AWK is not set
CONFIG_FEATURE_EDITING_MAX_LEN=2048
CONFIG_VI=y
"""


def test_menuconfig_changes_are_the_symbols_that_differ_including_ones_switched_off(tmp_path):
    (tmp_path / "before").write_text(BEFORE)
    (tmp_path / "after").write_text(AFTER)
    assert changed_symbols(tmp_path / "before", tmp_path / "after") == {
        "CONFIG_AWK": "n", "CONFIG_FEATURE_EDITING_HISTORY": "y", "CONFIG_FEATURE_EDITING_MAX_LEN": "2048", "CONFIG_VI": "y",
    }


def test_menuconfig_merges_into_an_existing_fragment_in_place_keeping_its_comments(tmp_path):
    fragment = tmp_path / "fragments" / "busybox-arm64.config"
    fragment.parent.mkdir()
    fragment.write_text("# my choices\nCONFIG_AWK=y\n\n# history\nCONFIG_FEATURE_EDITING_HISTORY=16\n")
    merge_into_fragment(fragment, {"CONFIG_AWK": "n", "CONFIG_FEATURE_EDITING_HISTORY": "64", "CONFIG_VI": "y"})
    assert fragment.read_text() == ("# my choices\n# CONFIG_AWK is not set\n\n# history\nCONFIG_FEATURE_EDITING_HISTORY=64\n"
                                    "CONFIG_VI=y\n")


def test_menuconfig_creates_a_fragment_that_says_where_it_came_from(tmp_path):
    fragment = tmp_path / "fragments" / "linux-x86_64.config"
    merge_into_fragment(fragment, {"CONFIG_LOG_BUF_SHIFT": "15"})
    assert fragment.read_text() == ("# Saved by `doit menuconfig:linux-x86_64`; applied after the recipe's own fragments.\n"
                                    "CONFIG_LOG_BUF_SHIFT=15\n")


def test_a_source_missing_upstream_is_fetched_from_a_mirror_and_verified(project, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    tarball = mirror / "hello-1.0.tar.gz"
    sha = make_tarball(tarball, {"hello.c": "int main(void) { return 0; }\n", "extra.c": "int main(void) { return 0; }\n"},
                       top="hello-1.0")
    gone = tmp_path / "upstream-is-down" / "hello-1.0.tar.gz"
    project.update_recipe("hello", sources=[{"url": gone.as_uri(), "sha256": sha}])
    project.edit("pyproject.toml", "jobs = 2\n", f"jobs = 2\nmirrors = [{mirror.as_uri()!r}]\n".replace("'", '"'))
    result = project.doit("fetch:hello")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fetch:hello" in result.executed
    assert sha256_of(next(project.path(".cache/downloads").rglob("*hello-1.0.tar.gz*"))) == sha

    # A mirror that serves other bytes under the same name is never used.
    tarball.write_bytes(b"not the release")
    shutil.rmtree(project.path(".cache/downloads"))
    project.update_recipe("hello", sources=[{"url": gone.as_uri(), "sha256": sha}, {"url": (tmp_path / "x" / "y.tar.gz").as_uri(), "sha256": sha}])
    result = project.doit("fetch:hello")
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert not list(project.path(".cache/downloads").rglob("*hello-1.0.tar.gz")), "a wrong download was kept"


MUSL_SHA256 = "7d5b0b6062521e4627e099e4c9dc8248d32a30285e959b7eecaa780cf8cfd4a4"


@pytest.mark.slow
def test_a_source_missing_upstream_comes_from_debians_source_archive(project, tmp_path):
    """The real archive (the only place the machines this runs on reach): musl's orig tarball, 1 MB."""
    if not shutil.which("apt-get"):
        pytest.skip("no apt-get: not a Debian/Ubuntu machine")
    gone = tmp_path / "upstream-is-down" / "musl-1.2.3.tar.gz"
    project.write_recipe("musl", {"name": "musl", "version": "1.2.3", "summary": "C library", "homepage": "https://musl.libc.org/",
                                  "license": "MIT", "sources": [{"url": gone.as_uri(), "sha256": MUSL_SHA256},
                                                                {"debian": "musl=1.2.3-1", "sha256": MUSL_SHA256}]})
    result = project.doit("fetch:musl", timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    unpacked = [path for path in project.path("build").rglob("src/musl/Makefile")]
    assert unpacked, "musl's source was not unpacked"
    assert (unpacked[0].parent / "VERSION").read_text().strip() == "1.2.3"


def test_mlbuild_graph_writes_every_task_and_dependency_as_dot(project):
    result = project.cli("graph")
    assert result.returncode == 0, result.stdout + result.stderr
    dot = project.read("build/graph.dot")
    assert dot.lstrip().startswith("digraph")
    edges = set(re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot))
    expected = {("fetch:hello", "build:hello-x86_64"), ("fetch:hello", "build:extra-x86_64"), ("fetch:app", "build:app-x86_64"),
                ("build:hello-x86_64", "build:app-x86_64"), ("build:app-x86_64", "build:target-x86_64"),
                ("build:target-x86_64", "build:images-x86_64")}
    assert expected <= edges, edges
    assert ("build:app-x86_64", "build:hello-x86_64") not in edges  # the direction is dependency → dependant
