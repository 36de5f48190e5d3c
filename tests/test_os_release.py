"""/etc/os-release (issue 27, item 6): the project's version, a reproducible build id, bad versions one line.

The synthetic project (tests/conftest.py) gets the real templates/target/etc/os-release.j2 and a [project]
version; its target is built with the real doit.
"""

import json
import shutil

import pytest

from conftest import REPO, x86

from mlbuild.errors import InputError
from mlbuild.system import os_release


def with_os_release(project, version: str | None = "2.5.0"):
    shutil.copy(REPO / "templates" / "target" / "etc" / "os-release.j2", project.path("templates/target/etc/os-release.j2"))
    if version is not None:
        project.write("pyproject.toml", f'[project]\nname = "mine"\nversion = "{version}"\n\n' + project.read("pyproject.toml"))


def fields(project) -> dict[str, str]:
    text = project.read("target/x86_64/etc/os-release")
    return dict(line.split("=", 1) for line in text.splitlines())


@pytest.mark.slow
def test_the_target_says_its_name_version_and_a_build_id_that_is_the_same_elsewhere_and_changes_with_a_component(built, tmp_path):
    with_os_release(built)
    assert built.doit().executed == x86("target", "images")  # a new file of the target: no component rebuilt
    first = fields(built)
    assert first["NAME"] == "mlbuild" and first["ID"] == "mlbuild" and first["VERSION_ID"] == "2.5.0"
    assert first["PRETTY_NAME"] == '"mlbuild 2.5.0 (x86_64)"'
    assert len(first["BUILD_ID"]) == 16 and int(first["BUILD_ID"], 16) >= 0

    # The same project in another folder, built again later: the same id (no path, no time in it).
    elsewhere = built.copy_to(tmp_path / "elsewhere")
    shutil.rmtree(elsewhere.path("target"))
    shutil.rmtree(elsewhere.path("build"))
    assert elsewhere.doit().returncode == 0
    assert fields(elsewhere) == first

    # A component built from something else: another id. The version follows pyproject.toml.
    built.update_recipe("hello", vars={"greeting": "Howdy"})
    built.edit("pyproject.toml", 'version = "2.5.0"', 'version = "2.6.0rc1"')
    assert built.doit().returncode == 0
    second = fields(built)
    assert second["BUILD_ID"] != first["BUILD_ID"] and second["VERSION_ID"] == "2.6.0rc1"


def test_without_a_project_version_the_file_has_no_version_id(built):
    with_os_release(built, version=None)
    assert built.doit().returncode == 0
    assert "VERSION_ID" not in fields(built) and fields(built)["PRETTY_NAME"] == '"mlbuild (x86_64)"'


@pytest.mark.parametrize("version", ["1.0 beta", "1.0\nID=evil", "2.0+local"])
def test_a_version_os_release_cannot_hold_is_one_line_naming_the_field(project, version):
    project.write("pyproject.toml", f"[project]\nversion = {json.dumps(version)}\n\n" + project.read("pyproject.toml"))
    with pytest.raises(InputError, match=r"^pyproject.toml: project.version: expected a version of 0-9, a-z, '.', '_' and '-' "
                                         r"\(it is /etc/os-release's VERSION_ID\), got "):
        os_release.project_version(project.root)
    with_os_release(project, version=None)
    result = project.doit()
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "pyproject.toml: project.version: expected a version" in result.stderr, result.stderr


def test_the_build_id_is_a_hash_of_the_components_inputs_in_any_order():
    one = os_release.build_id({"build:a-x86_64": {"recipe:vars": {"x": 1}}, "build:b-x86_64": {"script": "ab"}})
    assert one == os_release.build_id({"build:b-x86_64": {"script": "ab"}, "build:a-x86_64": {"recipe:vars": {"x": 1}}})
    assert one != os_release.build_id({"build:a-x86_64": {"recipe:vars": {"x": 2}}, "build:b-x86_64": {"script": "ab"}})
    assert len(one) == 16
