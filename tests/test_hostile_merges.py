"""Merged trees never write through a link another input made (issue 26, item 5).

One component may install a symbolic link to a folder outside the tree (`usr/share -> /elsewhere`,
or `-> ../../elsewhere`); when another component, a dependent's $SYSROOT or an overlay then puts a
file under the same path, a merge that followed the link would write outside the tree and exit 0.
Every merge refuses instead: one line naming who made the link, who wrote under it, and the path,
a non-zero exit, and nothing in the folder the link points to.
"""

import os
import shutil
import stat
from pathlib import Path

import pytest

from conftest import x86
from mlbuild.errors import MlbuildError
from mlbuild.trees import check_no_link_on_the_way, merge_tree

COMMON = {"version": "1.0", "summary": "a test component", "homepage": "https://example.org/", "license": "MIT",
          "source": "hello"}
LINK_SH = 'mkdir -p "$OUT/$(dirname {{ vars.path }})"\nln -s {{ vars.link }} "$OUT/"{{ vars.path }}\n'
FILE_SH = 'mkdir -p "$OUT/usr/share"\necho "written by bwrite" > "$OUT/usr/share/file"\n'


def add_components(project, link: str, linker: str = "alink", path: str = "usr/share", **extra) -> None:
    """linker installs path -> link; bwrite installs usr/share/file (components sort by name: alink first, zlink last)."""
    project.write("templates/build/linker.sh.j2", LINK_SH)
    project.write("templates/build/bwrite.sh.j2", FILE_SH)
    project.write_recipe(linker, {"name": linker, **COMMON, "build": "linker", "vars": {"link": link, "path": path}, **extra})
    project.write_recipe("bwrite", {"name": "bwrite", **COMMON, "build": "bwrite", **extra})


def one_line(result, *words: str) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if all(word in line for word in words)]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture
def outside(tmp_path) -> Path:
    """The folder the links point to: next to the project (tmp_path/project), outside every tree of it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


# --- trees.merge_tree, the merge of the target, the toolchain and every $SYSROOT --------------------------

def _output(base: Path, name: str, files: dict[str, str] = {}, links: dict[str, str] = {}) -> Path:
    root = base / name
    root.mkdir()
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    for path, target in links.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(target)
    return root


@pytest.mark.parametrize("link", ["ABSOLUTE", "../../outside", "../usr/../../outside"])
def test_a_merge_refuses_a_file_under_an_earlier_sources_link_and_writes_nothing_outside(tmp_path, outside, link):
    link = str(outside) if link == "ABSOLUTE" else link
    linker = _output(tmp_path, "linker", links={"usr/share": link})
    writer = _output(tmp_path, "writer", files={"usr/share/file": "x", "usr/bin/tool": "y"})
    destination = tmp_path / "merged"  # usr/share -> ../../outside leads from merged/usr to tmp_path/outside
    destination.mkdir()
    owners: dict[str, str] = {}
    merge_tree(linker, destination, "build:alink-x86_64", owners)
    with pytest.raises(MlbuildError) as refused:
        merge_tree(writer, destination, "build:bwrite-x86_64", owners)
    assert str(refused.value) == (f"build:bwrite-x86_64: installs usr/share/file, but usr/share is a symbolic link (-> {link}) "
                                  "that build:alink-x86_64 installs; refusing to write through another input's link")
    assert list(outside.iterdir()) == []


def test_a_merge_refuses_a_link_where_an_earlier_source_made_a_folder_and_a_folder_where_it_made_a_file(tmp_path, outside):
    writer = _output(tmp_path, "writer", files={"usr/share/file": "x"})
    linker = _output(tmp_path, "linker", links={"usr/share": str(outside)})
    flat = _output(tmp_path, "flat", files={"usr/share": "a file where the others have a folder"})
    destination = tmp_path / "merged"
    destination.mkdir()
    owners: dict[str, str] = {}
    merge_tree(writer, destination, "build:bwrite-x86_64", owners)
    with pytest.raises(MlbuildError, match=r"^build:zlink-x86_64: installs usr/share as a symbolic link, "
                                           r"where build:bwrite-x86_64 installs a folder$"):
        merge_tree(linker, destination, "build:zlink-x86_64", owners)
    with pytest.raises(MlbuildError, match=r"^build:flat-x86_64: installs usr/share as a file, where build:bwrite-x86_64 installs a folder$"):
        merge_tree(flat, destination, "build:flat-x86_64", {**owners})
    other = tmp_path / "other"
    other.mkdir()
    owners = {}
    merge_tree(flat, other, "build:flat-x86_64", owners)
    with pytest.raises(MlbuildError, match=r"^build:bwrite-x86_64: installs usr/share/file, but build:flat-x86_64 installs usr/share as a file$"):
        merge_tree(writer, other, "build:bwrite-x86_64", owners)
    assert list(outside.iterdir()) == []


def test_a_link_a_source_brings_for_itself_is_merged_as_a_link_and_its_folders_stay_its_own(tmp_path):
    own = _output(tmp_path, "own", files={"usr/lib/libc.a": "x"}, links={"lib": "usr/lib", "bin/sh": "busybox"})
    destination = tmp_path / "merged"
    destination.mkdir()
    owners: dict[str, str] = {}
    merge_tree(own, destination, "build:musl-x86_64", owners)
    assert os.readlink(destination / "lib") == "usr/lib" and (destination / "usr/lib/libc.a").read_text() == "x"
    assert owners == {"usr/lib/libc.a": "build:musl-x86_64", "lib": "build:musl-x86_64", "bin/sh": "build:musl-x86_64"}


def test_a_write_after_the_merge_is_refused_through_a_link_on_its_way_or_into_a_linked_folder(tmp_path, outside):
    root = tmp_path / "merged"
    root.mkdir()
    (root / "etc").symlink_to(outside)
    owners = {"etc": "build:alink-x86_64"}
    with pytest.raises(MlbuildError, match=r"^templates/target: installs etc/hostname, but etc is a symbolic link .* that build:alink-x86_64"):
        check_no_link_on_the_way(root, "etc/hostname", "templates/target", owners)
    check_no_link_on_the_way(root, "etc", "overlay", owners)  # replacing the link itself is allowed...
    with pytest.raises(MlbuildError, match=r"^overlay: installs etc, but etc is a symbolic link"):
        check_no_link_on_the_way(root, "etc", "overlay", owners, itself=True)  # ... merging a folder into it is not
    check_no_link_on_the_way(root, "usr/share/file", "overlay", owners)  # nothing there yet: fine


# --- the synthetic project: the target, a dependent's $SYSROOT, overlays ------------------------------------

@pytest.mark.parametrize("link", ["ABSOLUTE", "../../../../outside"])  # from target/.x86_64.staging/usr to tmp_path/outside
def test_a_component_writing_under_anothers_link_to_outside_fails_the_target_in_one_line(built, outside, link):
    link = str(outside) if link == "ABSOLUTE" else link
    add_components(built, link)
    result = built.doit()
    assert result.returncode != 0
    assert x86("alink", "bwrite") <= result.executed  # each component alone builds
    line = one_line(result, "refusing to write through")
    assert line.endswith(f"build:target-x86_64: build:bwrite-x86_64: installs usr/share/file, but usr/share is a symbolic link "
                         f"(-> {link}) that build:alink-x86_64 installs; refusing to write through another input's link")
    assert list(outside.iterdir()) == []
    assert not built.stamp("build:target-x86_64").exists() and built.leftovers() == []


def test_a_link_installed_after_anothers_folder_fails_the_target_in_one_line(built, outside):
    add_components(built, str(outside), linker="zlink")
    result = built.doit()
    assert result.returncode != 0
    line = one_line(result, "installs usr/share as a symbolic link")
    assert line.endswith("build:target-x86_64: build:zlink-x86_64: installs usr/share as a symbolic link, where build:bwrite-x86_64 installs a folder")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("link", ["ABSOLUTE", "../../../../../../outside"])  # from build/work/app-x86_64/sysroot/usr
def test_a_dependents_sysroot_never_follows_one_dependencys_link_with_anothers_file(built, outside, link):
    link = str(outside) if link == "ABSOLUTE" else link
    add_components(built, link, target=False)
    built.update_recipe("bwrite", depends=["alink"])  # the sysroot merges alink first
    built.update_recipe("app", depends=["hello", "bwrite"])
    result = built.doit()
    assert result.returncode != 0
    line = one_line(result, "refusing to write through")
    assert line.endswith(f"build:app-x86_64: build:bwrite-x86_64: installs usr/share/file, but usr/share is a symbolic link "
                         f"(-> {link}) that build:alink-x86_64 installs; refusing to write through another input's link")
    assert list(outside.iterdir()) == []
    assert "# running" not in built.log("build:app-x86_64")  # stopped while assembling the sysroot, before the script


@pytest.mark.parametrize("path, expected", [
    # mlbuild's own overlay (etc/hostname.j2 of the synthetic project): its folder etc may not replace a component's link
    ("etc", "build:target-x86_64: templates/target/etc would overwrite a file of build:alink-x86_64"),
    # a user overlay with usr/share/blob: its folder usr/share would merge into the link
    ("usr/share", "build:target-x86_64: overlay: installs usr/share, but usr/share is a symbolic link (-> {outside}) "
                  "that build:alink-x86_64 installs; refusing to write through another input's link"),
    # /tmp's mode 1777 would be set on the folder the link points to
    ("tmp", "build:target-x86_64: mlbuild (its skeleton): installs tmp, but tmp is a symbolic link (-> {outside}) "
            "that build:alink-x86_64 installs; refusing to write through another input's link"),
])
def test_overlays_and_mlbuilds_own_files_never_write_through_a_components_link(built, outside, path, expected):
    add_components(built, str(outside), path=path)
    built.write_recipe("bwrite", {**built.recipes["bwrite"], "target": False})
    built.write("overlay/usr/share/blob", "from the overlay\n")
    built.write("pyproject.toml", built.read("pyproject.toml") + 'overlays = ["overlay"]\n')
    mode = stat.S_IMODE(outside.stat().st_mode)
    result = built.doit()
    assert result.returncode != 0
    assert one_line(result, "build:target-x86_64: ", "alink").endswith(expected.format(outside=outside))
    assert list(outside.iterdir()) == [] and stat.S_IMODE(outside.stat().st_mode) == mode


def test_the_toolchain_never_gathers_a_sysroot_through_a_host_recipes_link(built, outside):
    """build:toolchain merges host recipes into toolchain/ and stage-1 builds into toolchain/<triple>/:
    a host recipe's `<triple> -> /elsewhere` would take the sysroot there. (aaa-llvm sorts, and merges, first.)"""
    built.write("templates/build/wrapper.sh.j2", f'mkdir -p "$OUT/bin"\nln -s {outside} "$OUT/x86_64-unknown-linux-musl"\n')
    recipe = {key: built.recipes["hello"][key] for key in ("version", "summary", "homepage", "license")}
    built.write_recipe("aaa-llvm", {"name": "aaa-llvm", **recipe, "source": "hello", "host": True, "build": "wrapper",
                                    "sysroots": ["app"]})
    result = built.doit("build:toolchain")
    assert result.returncode != 0
    line = one_line(result, "refusing to write through")
    assert line.endswith(f"build:toolchain: build:app-x86_64: installs x86_64-unknown-linux-musl, but x86_64-unknown-linux-musl "
                         f"is a symbolic link (-> {outside}) that build:aaa-llvm-host installs; refusing to write through another input's link")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("path, expected", [
    ("etc", "build:target-x86_64: mlbuild: installs etc/"),  # the accounts' etc/passwd, group, shadow
    ("home", "build:target-x86_64: [[tool.mlbuild.users]]: installs home/alice"),  # alice's home folder
])
def test_the_accounts_files_and_home_folders_never_write_through_a_components_link(built, outside, path, expected):
    add_components(built, str(outside), path=path)
    built.write_recipe("bwrite", {**built.recipes["bwrite"], "target": False})
    shutil.rmtree(built.path("templates/target"))  # else templates/target's folder etc is refused first
    built.write("pyproject.toml", built.read("pyproject.toml") + '[[tool.mlbuild.users]]\nname = "alice"\nuid = 1000\n')
    result = built.doit()
    assert result.returncode != 0
    line = one_line(result, "refusing to write through")
    assert expected in line and f"but {path} is a symbolic link (-> {outside}) that build:alink-x86_64 installs" in line, line
    assert list(outside.iterdir()) == []
