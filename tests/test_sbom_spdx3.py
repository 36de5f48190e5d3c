"""mlbuild sbom's SPDX 3.0.1 JSON-LD: checked against the official SPDX 3.0.1 JSON schema (jsonschema) and read
back by the SPDX project's own bindings (spdx-python-model); components, sources, patches, licenses, package
URLs, the build relationships, a Kconfig configuration, and the element ids a VEX document refers to."""

import copy
import hashlib
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import jsonschema
import pytest

from conftest import REPO, after_settings_line, base_environment
from test_legal import PATCH, licensed_hello

SCHEMA = REPO / "src/mlbuild/exports/spdx-json-schema-3.0.1.json"
# The official schema, copied unchanged (its .license file says from where): an edit to it is caught here.
SCHEMA_SHA256 = "873ff9d3177a0c12495fe585c5012f7bec0aa70aabed1f2f1e79f25bd95eb107"
NS = "https://mlbuild.invalid/spdx/"


def schema_errors(data: dict) -> list[str]:
    """What the official SPDX 3.0.1 JSON schema finds wrong in a document (read here, not through mlbuild)."""
    schema = json.loads(SCHEMA.read_bytes())
    return [error.message for error in jsonschema.Draft202012Validator(schema).iter_errors(data)]


def by_id(data: dict) -> dict:
    return {element.get("spdxId", element.get("@id")): element for element in data["@graph"]}


def relations(data: dict) -> set[tuple[str, str, str]]:
    return {(element["from"], element["relationshipType"], to)
            for element in data["@graph"] if element["type"] == "Relationship" for to in element["to"]}


def test_the_vendored_schema_is_the_official_one_unchanged():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA.read_bytes())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["@context"] == {"const": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"}


def test_sbom_is_valid_spdx_3_with_components_sources_patches_licenses_purls_and_relationships(project):
    sha = licensed_hello(project)
    project.update_recipe("app", license="Apache-2.0 WITH LLVM-exception")
    result = project.cli("sbom", "x86_64")
    assert result.returncode == 0, result.stderr
    assert after_settings_line(result.stdout) == "build/sbom/x86_64.spdx.json: SPDX 3.0.1, 3 components, validated\n"
    data = json.loads(project.read("build/sbom/x86_64.spdx.json"))
    assert schema_errors(data) == []
    # The SPDX project's bindings read it back whole (types and required properties checked).
    from spdx_python_model import v3_0_1 as spdx

    objects = spdx.SHACLObjectSet()
    spdx.JSONLDDeserializer().deserialize_data(data, objects)
    assert {o.name for o in objects.foreach_type(spdx.software_Package)} == {"mlbuild-system-x86_64", "hello", "extra", "app"}

    elements = by_id(data)
    system, hello, extra, app = (f"{NS}x86_64/system", f"{NS}x86_64/package/hello@1.0", f"{NS}x86_64/package/extra@1.0",
                                 f"{NS}x86_64/package/app@1.0")
    hello_source, app_source = f"{NS}source/hello@1.0", f"{NS}source/app@1.0"
    patch = f"{hello_source}/patch/0001-comment.patch"
    assert elements[hello]["software_packageVersion"] == "1.0" and elements[hello]["software_homePage"] == "https://example.org/"
    assert elements[hello]["software_packageUrl"] == "pkg:generic/hello@1.0"  # a file:// source: no download_url
    assert "software_packageUrl" not in elements[extra]  # built from hello's source: that source's purl is not its own
    source = elements[hello_source]
    assert source["software_primaryPurpose"] == "source" and source["verifiedUsing"] == [
        {"type": "Hash", "algorithm": "sha256", "hashValue": sha}]
    assert "software_downloadLocation" not in source and "file://" in source["comment"]  # a local file: said in a comment
    assert elements[patch]["name"] == "recipes/hello/0001-comment.patch"
    assert elements[patch]["verifiedUsing"][0]["hashValue"] == hashlib.sha256(PATCH.encode()).hexdigest()
    assert elements[patch]["software_primaryPurpose"] == "patch"
    licenses = {e["spdxId"]: e["simplelicensing_licenseExpression"] for e in data["@graph"]
                if e["type"] == "simplelicensing_LicenseExpression"}
    declared = {(source, to) for source, kind, to in relations(data) if kind == "hasDeclaredLicense"}
    assert {(package, licenses[license]) for package, license in declared} == {
        (hello, "MIT"), (extra, "MIT"), (app, "Apache-2.0 WITH LLVM-exception")}
    related = relations(data)
    assert {(system, "contains", package) for package in (hello, extra, app)} <= related
    assert {(hello_source, "generates", hello), (hello_source, "generates", extra), (app_source, "generates", app)} <= related
    assert {(hello, "patchedBy", patch), (extra, "patchedBy", patch)} <= related
    assert (app, "patchedBy", patch) not in related
    build = f"{NS}x86_64/build/hello@1.0"
    assert elements[build]["type"] == "build_Build" and elements[build]["build_buildType"] == f"{NS}build-type/hello"
    assert {(build, "hasInput", hello_source), (build, "hasInput", patch), (build, "hasOutput", hello)} <= related
    documents = [e for e in data["@graph"] if e["type"] == "SpdxDocument"]
    boms = [e for e in data["@graph"] if e["type"] == "software_Sbom"]
    assert len(documents) == len(boms) == 1 and documents[0]["rootElement"] == [boms[0]["spdxId"]]
    assert boms[0]["rootElement"] == [system] and boms[0]["software_sbomType"] == ["build"]
    assert set(documents[0]["element"]) == set(elements) - {documents[0]["spdxId"], "_:CreationInfo0"}
    creation = elements["_:CreationInfo0"]
    assert creation["specVersion"] == "3.0.1" and creation["createdBy"] == [f"{NS}agent/mlbuild"]

    # The same tree again: the same bytes. Another patch: the package ids stay, the document's changes.
    first = project.read("build/sbom/x86_64.spdx.json")
    assert project.cli("sbom", "x86_64").returncode == 0 and project.read("build/sbom/x86_64.spdx.json") == first
    project.write("recipes/hello/0001-comment.patch", PATCH.replace("/* patched */", "/* patched again */"))
    assert project.cli("sbom", "x86_64").returncode == 0
    again = by_id(json.loads(project.read("build/sbom/x86_64.spdx.json")))
    assert hello in again and again[patch]["verifiedUsing"] != elements[patch]["verifiedUsing"]
    assert {i for i in again if "/document-" in i} != {i for i in elements if "/document-" in i}


def test_the_schema_check_finds_a_missing_required_field_or_a_wrong_value(project):
    assert project.cli("sbom", "x86_64").returncode == 0
    written = json.loads(project.read("build/sbom/x86_64.spdx.json"))
    # A few elements of it (the schema checks each element alone; the whole one is checked above): quicker to check.
    kinds = ("CreationInfo", "SoftwareAgent", "Tool", "build_Build", "Relationship", "software_Package")
    good = {"@context": written["@context"], "@graph": [
        next(e for e in written["@graph"] if e["type"] == kind) for kind in kinds]}
    assert schema_errors(good) == []

    def broken(kind: str, field: str, value=None) -> dict:
        data = copy.deepcopy(good)
        element = next(e for e in data["@graph"] if e["type"] == kind)
        element.pop(field) if value is None else element.__setitem__(field, value)
        return data

    assert schema_errors(broken("CreationInfo", "specVersion"))  # required
    assert schema_errors(broken("build_Build", "build_buildType"))  # required
    assert schema_errors(broken("Relationship", "relationshipType"))  # required
    assert schema_errors(broken("Relationship", "relationshipType", "isMadeOf"))  # not in the vocabulary
    assert schema_errors(broken("software_Package", "software_primaryPurpose", "kernel"))
    assert schema_errors({**good, "@context": "https://spdx.org/rdf/3.0.0/spdx-context.jsonld"})

    # mlbuild's own check (the same schema) finds them too, and says which element and what.
    from mlbuild.exports import spdx3

    assert spdx3.problems(good) == []
    assert spdx3.problems(broken("CreationInfo", "specVersion")) == [
        "$['@graph'][0] (CreationInfo _:CreationInfo0): 'specVersion' is a required property"]
    [problem] = spdx3.problems(broken("Relationship", "relationshipType", "isMadeOf"))
    assert problem.startswith("$['@graph'][4].relationshipType (Relationship https://mlbuild.invalid/spdx/")
    assert "'isMadeOf' is not one of ['affects'" in problem


def test_a_document_that_does_not_validate_is_not_written(project, monkeypatch):
    from mlbuild.errors import MlbuildError
    from mlbuild.exports import spdx3
    from mlbuild.frontend.project import Project

    made = spdx3.document

    def without_spec_version(project, arch):
        sbom = made(project, arch)
        next(e for e in sbom.data["@graph"] if e["type"] == "CreationInfo").pop("specVersion")
        return sbom

    monkeypatch.setattr(spdx3, "document", without_spec_version)
    target = project.path("out/sbom.json")
    with pytest.raises(MlbuildError) as raised:
        spdx3.write(Project(project.root), "x86_64", target)
    message = str(raised.value)
    assert message.startswith("sbom x86_64: the SPDX 3.0.1 document does not validate against its JSON schema: ")
    assert "specVersion" in message and "\n" not in message
    assert not project.path("out").exists()  # not even its folder


def test_element_ids_are_stable_iris_of_name_version_and_arch(project):
    from mlbuild.exports import materials, spdx3
    from mlbuild.frontend.project import Project

    assert spdx3.package_id("x86_64", "busybox", "1.35.0") == f"{NS}x86_64/package/busybox@1.35.0"
    assert spdx3.package_id("arm64", "busybox", "1:1.35.0") == f"{NS}arm64/package/busybox@1%3A1.35.0"
    assert spdx3.system_id("x86_64") == f"{NS}x86_64/system"
    loaded = Project(project.root)
    components = materials.components(loaded, "x86_64")
    ids = {spdx3.component_id(component, "x86_64") for component in components}
    assert ids == {f"{NS}x86_64/package/{name}@1.0" for name in ("hello", "extra", "app")}
    packages = {e["spdxId"] for e in spdx3.document(loaded, "x86_64").data["@graph"] if e["type"] == "software_Package"}
    assert ids <= packages
    # Made anew from another load of the project: the same ids (nothing of a run is in them).
    assert {spdx3.component_id(c, "x86_64") for c in materials.components(Project(project.root), "x86_64")} == ids


def _source(**fields):
    from mlbuild.model.models import Source

    return Source(sha256="0" * 64, **fields)


@pytest.mark.parametrize("fields, expected", [
    ({"debian": "busybox=1:1.35.0-4+deb12u1"}, "pkg:deb/debian/busybox@1:1.35.0-4%2Bdeb12u1?arch=source"),
    ({"url": "https://github.com/llvm/llvm-project/releases/download/llvmorg-19.1.7/llvm-project-19.1.7.src.tar.xz"},
     "pkg:github/llvm/llvm-project@llvmorg-19.1.7"),
    ({"url": "https://github.com/Owner/Tool/archive/refs/tags/v2.0.tar.gz"}, "pkg:github/owner/tool@v2.0"),
    ({"url": "https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.176.tar.xz"},
     "pkg:generic/linux@6.1.176?download_url=https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.176.tar.xz"),
    ({"url": "file:///srv/mirror/linux-6.1.176.tar.xz"}, "pkg:generic/linux@6.1.176"),
])
def test_package_urls_of_source_alternatives(fields, expected):
    from mlbuild.exports import materials

    assert materials.package_url(SimpleNamespace(name="linux", version="6.1.176"), _source(**fields)) == expected


def test_a_password_in_a_url_is_not_in_its_package_url():
    from mlbuild.exports import materials

    purl = materials.package_url(SimpleNamespace(name="app", version="2"), _source(url="https://me:hunter2@example.org/app-2.tar.gz"))
    assert "hunter2" not in purl and purl.startswith("pkg:generic/app@2?download_url=https://me:")


CONF_SH = """\
mkdir -p "$OUT/boot"
# The final configuration: the fragment, except that CONFIG_DROPPED did not take, plus a default the fragment did not ask for.
sed -e 's/^CONFIG_DROPPED=y$/# CONFIG_DROPPED is not set/' "$FILES/conf.config" > "$OUT/boot/config"
echo 'CONFIG_DEFAULT_ON=y' >> "$OUT/boot/config"
"""
CONF_FRAGMENT = "CONFIG_WANTED=y\nCONFIG_DROPPED=y\n# CONFIG_OFF is not set\nCONFIG_NAME=\"{{ options.flavour }}\"\n"


def test_a_kconfig_recipes_final_configuration_is_recorded_in_its_build(project):
    project.write("templates/build/conf.sh.j2", CONF_SH)
    project.write("templates/conf/conf.config", CONF_FRAGMENT)
    project.write_recipe("conf", {
        "name": "conf", "version": "2.0", "summary": "a Kconfig-configured component", "homepage": "https://example.org/",
        "license": "MIT", "build": "conf", "sources": [project.new_source("conf", {"README": "conf\n"}, "conf-2.0")],
        "files": ["conf/conf.config"], "kconfig": "boot/config",
        "options": {"flavour": {"help": "which flavour", "choices": ["plain", "fancy"], "default": "plain"}}})
    build = f"{NS}x86_64/build/conf@2.0"

    # Not built yet: said in a note, the document is valid without it.
    result = project.cli("sbom", "x86_64")
    assert result.returncode == 0, result.stderr
    assert after_settings_line(result.stdout).splitlines() == [
        "build/sbom/x86_64.spdx.json: SPDX 3.0.1, 4 components, validated",
        "note: conf: its configuration is not recorded: build/out/conf-x86_64/boot/config is not there (build it first)"]
    element = by_id(json.loads(project.read("build/sbom/x86_64.spdx.json")))[build]
    assert "build_configSourceDigest" not in element
    assert element["build_parameter"] == [{"type": "DictionaryEntry", "key": "flavour", "value": "plain"}]

    built = project.doit("flavour=fancy")
    assert built.returncode == 0, built.stdout + built.stderr
    result = project.cli("sbom", "x86_64", "flavour=fancy")
    assert result.returncode == 0 and "note:" not in result.stdout, result.stdout + result.stderr
    data = json.loads(project.read("build/sbom/x86_64.spdx.json"))
    assert schema_errors(data) == []
    element = by_id(data)[build]
    final = project.path("build/out/conf-x86_64/boot/config").read_bytes()
    assert element["build_configSourceDigest"] == [
        {"type": "Hash", "algorithm": "sha256", "hashValue": hashlib.sha256(final).hexdigest()}]
    # The recipe's option, then each symbol the fragment sets with the value it got (not what it asked for);
    # a symbol only the base configuration sets is not listed.
    assert [(entry["key"], entry["value"]) for entry in element["build_parameter"]] == [
        ("flavour", "fancy"), ("CONFIG_WANTED", "y"), ("CONFIG_DROPPED", "n"), ("CONFIG_OFF", "n"), ("CONFIG_NAME", '"fancy"')]
    # kconfig only documents the output: taking it away (or adding it) rebuilds nothing.
    project.write_recipe("conf", {key: value for key, value in project.recipes["conf"].items() if key != "kconfig"})
    assert project.doit("flavour=fancy").executed == set()


def test_the_real_projects_sbom_validates_with_debian_github_and_generic_purls_and_the_busybox_patch(tmp_path):
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("recipes", "arches", "templates"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    result = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "sbom", "arm64", "download_dir=downloads",
                             "target_llvm=0"], cwd=root, env=base_environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "build/sbom/arm64.spdx.json: SPDX 3.0.1, 6 components, validated" in result.stdout
    assert "note: linux: its configuration is not recorded: build/out/linux-arm64/boot/config is not there" in result.stdout
    data = json.loads((root / "build/sbom/arm64.spdx.json").read_text())
    assert schema_errors(data) == []
    elements = by_id(data)
    linux = elements[f"{NS}source/linux@6.1.176"]
    # Nothing downloaded here: the first alternative (kernel.org) is the one in use, Debian's the other.
    assert linux["software_downloadLocation"] == "https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.176.tar.xz"
    assert linux["software_packageUrl"] == (
        "pkg:generic/linux@6.1.176?download_url=https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.176.tar.xz")
    assert [i["identifier"] for i in linux["externalIdentifier"]] == ["pkg:deb/debian/linux@6.1.176-1?arch=source"]
    llvm = elements[f"{NS}source/llvm-project@19.1.7"]
    assert llvm["software_packageUrl"] == "pkg:github/llvm/llvm-project@llvmorg-19.1.7"
    busybox = f"{NS}arm64/package/busybox@1.35.0"
    patched = {to for source, kind, to in relations(data) if source == busybox and kind == "patchedBy"}
    assert patched == {f"{NS}source/busybox@1.35.0/patch/0001-libbb-ptr_to_globals-honours-BB_GLOBAL_CONST.patch"}
    assert {e["name"] for e in data["@graph"] if e["type"] == "software_Package"} >= {"linux", "busybox", "musl", "linux-headers"}
    kernel_build = elements[f"{NS}arm64/build/linux@6.1.176"]
    assert kernel_build["build_parameter"] == [{"type": "DictionaryEntry", "key": "kernel_config", "value": "qemu"}]
