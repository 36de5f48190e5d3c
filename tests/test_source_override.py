"""Local source overrides ([tool.mlbuild.override]): a component built from a folder of the user's."""

import json
import os
import stat
import time

import pytest

from conftest import EXTRA_C, HELLO_C, after_settings_line, x86
from mlbuild.sealed import seal, unseal

LOCAL_HELLO_C = HELLO_C.replace("puts(GREETING)", 'printf("%s (local)\\n", GREETING)')
LOCAL_EXTRA_C = EXTRA_C.replace('puts("extra")', 'puts("extra (local)")')


def make_override(project, files=None):
    """hello's source as a folder beside the project (with a .git, a link and an executable), configured as ../hello-src."""
    folder = project.root.parent / "hello-src"
    for name, text in (files or {"hello.c": LOCAL_HELLO_C, "extra.c": LOCAL_EXTRA_C}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / ".git").mkdir(exist_ok=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "LICENSE").write_text("MIT License, the local copy\n")
    (folder / "tools").mkdir(exist_ok=True)
    (folder / "tools" / "gen.sh").write_text("#!/bin/sh\n")
    (folder / "tools" / "gen.sh").chmod(0o750)
    if not (folder / "main.c").is_symlink():
        (folder / "main.c").symlink_to("hello.c")
    return folder


def configure(project, value='"../hello-src"', name="hello"):
    project.write("pyproject.toml", project.read("pyproject.toml") + f"\n[tool.mlbuild.override]\n{name} = {value}\n")


@pytest.fixture
def overridden(built):
    """The built project, then hello's source overridden by ../hello-src and built again."""
    folder = make_override(built)
    configure(built)
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    built.override = folder
    return built


def test_an_override_is_copied_in_without_download_checksum_or_patches(project):
    folder = make_override(project)
    configure(project)
    # A patch that cannot apply, and a tarball that is gone: neither may be used.
    project.write("recipes/hello/0001-broken.patch", "--- a/nothing.c\n+++ b/nothing.c\n@@ -1 +1 @@\n-a\n+b\n")
    project.update_recipe("hello", patches=["0001-broken.patch"])
    os.remove(project.recipes["hello"]["sources"][0]["url"].removeprefix("file://"))

    result = project.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fetch:hello" in result.executed
    assert project.run_binary("hello") == "Hello, world! (local)\n"
    assert project.run_binary("extra") == "extra (local)\n"  # extra uses hello's source (source = "hello")

    copy = project.path("build/src/hello")
    assert not (copy / ".git").exists()
    assert os.readlink(copy / "main.c") == "hello.c"
    assert stat.S_IMODE((copy / "tools" / "gen.sh").stat().st_mode) == 0o750
    assert (copy / "hello.c").stat().st_mtime_ns == (folder / "hello.c").stat().st_mtime_ns  # make in a kept work folder sees only edits

    from mlbuild.trees import hash_tree
    stamp = json.loads(project.stamp("fetch:hello").read_text())
    assert stamp["output_hash"] == hash_tree(copy) == hash_tree(folder, frozenset({".git"}))
    assert stamp["inputs"] == {"override": stamp["output_hash"]}
    assert "copying the local override ../hello-src" in project.log("fetch:hello")


@pytest.mark.slow
def test_editing_a_file_in_the_override_reruns_exactly_that_component_and_what_depends_on_it(overridden):
    # extra.c: only build:extra's output changes; build:hello runs (its source changed) but gives the same
    # bytes, so build:app, which depends on hello, does not run (early cutoff).
    (overridden.override / "extra.c").write_text(LOCAL_EXTRA_C.replace("(local)", "(edited)"))
    result = overridden.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == {"fetch:hello"} | x86("hello", "extra", "target", "images")
    assert overridden.run_binary("extra") == "extra (edited)\n"

    (overridden.override / "hello.c").write_text(LOCAL_HELLO_C.replace("(local)", "(edited)"))
    result = overridden.doit()
    assert result.executed == {"fetch:hello"} | x86("hello", "extra", "app", "target", "images")
    assert overridden.run_binary("hello") == "Hello, world! (edited)\n"

    # A change under .git is not a change of the source.
    (overridden.override / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    assert overridden.doit().executed == set()


def test_touching_a_file_without_changing_it_reruns_nothing_not_even_the_fetch(overridden):
    # fetch's input is the folder's content hash: a new mtime alone changes no input.
    later = time.time() + 120
    os.utime(overridden.override / "hello.c", (later, later))
    result = overridden.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == set()


def test_explain_says_the_source_override_changed(overridden):
    (overridden.override / "hello.c").write_text(LOCAL_HELLO_C.replace("(local)", "(edited)"))
    result = overridden.cli("explain", "build:hello-x86_64")
    assert "  - fetch:hello: its source override ../hello-src changed\n" in result.stdout, result.stdout
    assert overridden.doit("fetch:hello").executed == {"fetch:hello"}
    result = overridden.cli("explain", "build:hello-x86_64")
    assert after_settings_line(result.stdout) == ("build:hello-x86_64 would run:\n"
                                                  "  - its source override ../hello-src changed (fetch:hello has a new output)\n")


def test_turning_an_override_off_goes_back_to_the_tarball(overridden):
    overridden.write("pyproject.toml", overridden.read("pyproject.toml").split("\n[tool.mlbuild.override]")[0] + "\n")
    assert after_settings_line(overridden.cli("explain", "fetch:hello").stdout).startswith(
        "fetch:hello would run:\n  - its source override is gone: the release tarball and patches again\n")
    result = overridden.doit()
    assert "fetch:hello" in result.executed
    assert overridden.run_binary("hello") == "Hello, world!\n"


def test_the_stat_cache_answers_for_unchanged_files_and_a_changed_ctime_reads_the_file_again(tmp_path, monkeypatch):
    from mlbuild.sources import override as source_override
    from mlbuild.sources.override import SourceOverride
    from mlbuild.trees import hash_tree

    monkeypatch.setattr(source_override, "RACY_SECONDS", 0)  # record files just written (see the next test)
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a.c").write_text("int a;\n")
    override = SourceOverride("hello", "src", folder, tmp_path / "cache.json")
    assert override.tree_hash() == hash_tree(folder)

    # A recorded hash is trusted while the file's stat is unchanged: written (sealed) by this user's mlbuild, a
    # wrong one is used; planted without the seal (someone who can write build/ only), it is not read.
    record = json.loads(unseal("override", override.cache_file.read_bytes()))
    record["files"]["a.c"][-1] = "0" * 64
    override.cache_file.write_text(json.dumps(record))
    assert override.tree_hash() == hash_tree(folder)
    override.cache_file.write_bytes(seal("override", json.dumps(record).encode()))
    assert override.tree_hash() != hash_tree(folder)

    # Same size, mtime set back (as `touch -d` or a careless tool would): ctime still tells, the file is read.
    info = (folder / "a.c").stat()
    (folder / "a.c").write_text("int b;\n")
    os.utime(folder / "a.c", ns=(info.st_atime_ns, info.st_mtime_ns))
    assert override.tree_hash() == hash_tree(folder)


def test_a_file_changed_just_now_is_not_recorded_in_the_stat_cache(tmp_path):
    from mlbuild.sources import override as source_override
    from mlbuild.sources.override import SourceOverride

    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "old.c").write_text("old\n")
    time.sleep(source_override.RACY_SECONDS + 0.2)
    (folder / "new.c").write_text("new\n")  # on a coarse-clock file system an edit in the same tick keeps its stat
    override = SourceOverride("hello", "src", folder, tmp_path / "cache.json")
    override.tree_hash()
    assert set(json.loads(unseal("override", override.cache_file.read_bytes()))["files"]) == {"old.c"}


@pytest.mark.parametrize("setting, expected", [
    ('"../nowhere"', "mlbuild: configuration: override.hello: ../nowhere ({parent}/nowhere) does not exist; "
                     "expected a folder holding hello's source\n"),
    ('"~/nowhere"', "mlbuild: configuration: override.hello: ~/nowhere ({parent}/nowhere) does not exist; "
                    "expected a folder holding hello's source\n"),
    ('"pyproject.toml"', "mlbuild: configuration: override.hello: pyproject.toml ({root}/pyproject.toml) is not a folder; "
                         "expected a folder holding hello's source\n"),
    ('"."', "mlbuild: configuration: override.hello: . ({root}) holds the build folder {root}/build; expected a folder outside it\n"),
    ('"build/src/hello"', "mlbuild: configuration: override.hello: build/src/hello ({root}/build/src/hello) is inside the "
                          "build folder {root}/build, which mlbuild rewrites; expected a folder outside it\n"),
])
def test_an_override_that_is_not_a_folder_is_one_line_naming_the_key_and_nothing_runs(project, setting, expected):
    configure(project, setting)
    project.path("build/src/hello").mkdir(parents=True)
    result = project.doit(env={"HOME": str(project.root.parent)})
    assert result.returncode == 2
    assert result.stderr == expected.format(parent=project.root.parent, root=project.root)
    assert not project.path("build/state").exists() and not project.path("build/logs").exists()


def test_an_override_of_an_unknown_recipe_suggests_one_and_of_a_borrowed_source_names_its_owner(project):
    make_override(project)
    configure(project, name="helo")
    result = project.doit("list")
    assert result.returncode == 2
    assert result.stderr == ("mlbuild: configuration: override.helo: no recipe 'helo' (did you mean 'hello'?); "
                             "expected the name of a recipe in recipes/\n")

    result = project.doit("list", "override=extra=../hello-src")  # from the command line, replacing the table
    assert result.returncode == 2
    assert result.stderr == ("mlbuild: configuration: override.extra: recipe extra uses the source of recipe hello "
                             "(source = 'hello'); override hello instead\n")


def test_an_override_from_the_command_line(built):
    make_override(built)
    assert after_settings_line(built.cli("explain", "fetch:hello", "override=hello=../hello-src").stdout) == (
        "fetch:hello would run:\n  - its source is now the local override ../hello-src (no download, no patches)\n")
    result = built.doit("override=hello=../hello-src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert built.run_binary("hello") == "Hello, world! (local)\n"


def test_a_fifo_in_the_override_fails_the_fetch_in_one_line(overridden):
    os.mkfifo(overridden.override / "pipe")
    result = overridden.doit()
    assert result.returncode != 0
    assert f"fetch:hello: source override ../hello-src: {overridden.override}/pipe: expected a file, folder or " \
           "symbolic link, found a fifo" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_sbom_and_legal_info_say_local_override(overridden):
    result = overridden.cli("sbom", "x86_64")
    assert result.returncode == 0, result.stderr
    graph = json.loads(overridden.read("build/sbom/x86_64.spdx.json"))["@graph"]
    sources = {e["name"]: e for e in graph if e.get("software_primaryPurpose") == "source"}
    assert sources["hello"]["comment"] == "a local source override (../hello-src), not its release tarball"
    assert sources["hello"]["spdxId"].endswith("/source/hello@1.0/local-override")
    assert not {"software_downloadLocation", "verifiedUsing", "software_packageUrl"} & set(sources["hello"])
    assert "verifiedUsing" in sources["app"] and "override" not in sources["app"]["comment"]  # not overridden: as before
    generated = {(e["from"], e["to"][0]) for e in graph if e["type"] == "Relationship" and e["relationshipType"] == "generates"}
    assert (sources["hello"]["spdxId"], "https://mlbuild.invalid/spdx/x86_64/package/extra@1.0") in generated
    assert not any(e["type"] == "software_File" for e in graph)  # no patches applied

    result = overridden.cli("sbom", "x86_64", "--format", "spdx-2.3")
    assert result.returncode == 0, result.stderr
    packages = {p["name"]: p for p in json.loads(overridden.read("build/sbom/x86_64.spdx-2.3.json"))["packages"]}
    assert packages["hello"]["sourceInfo"] == "local override ../hello-src; no patches applied"
    assert packages["hello"]["downloadLocation"] == "NOASSERTION" and "checksums" not in packages["hello"]
    assert packages["extra"]["sourceInfo"] == "the source of recipe hello; local override ../hello-src; no patches applied"
    assert packages["app"]["sourceInfo"] == "no patches applied"  # not overridden: as before

    result = overridden.cli("legal-info", "x86_64")
    assert result.returncode == 0, result.stderr
    assert "warning: hello: built from the local override ../hello-src: its source is not saved" in result.stdout
    manifest = overridden.read("build/legal-info/x86_64/manifest.csv").splitlines()
    assert "hello,1.0,MIT,LICENSE,,local override ../hello-src,," in manifest
    assert overridden.read("build/legal-info/x86_64/licenses/hello-1.0/LICENSE") == "MIT License, the local copy\n"
    assert not overridden.path("build/legal-info/x86_64/sources/hello-1.0").exists()


def test_the_exported_script_copies_the_override_as_mlbuild_does(project):
    folder = make_override(project)
    configure(project)
    project.write("recipes/hello/0001-broken.patch", "--- a/nothing.c\n+++ b/nothing.c\n@@ -1 +1 @@\n-a\n+b\n")
    project.update_recipe("hello", patches=["0001-broken.patch"])
    result = project.cli("script", "build:extra-x86_64")
    assert result.returncode == 0, result.stderr
    assert "# hello: the local source override ../hello-src; no download, no patches\n" in result.stdout
    assert f"tar -C {folder} --exclude=.git -cf - . | tar -C " in result.stdout
    assert "curl -fL" not in result.stdout and "patch -p1" not in result.stdout  # no download, no patches
