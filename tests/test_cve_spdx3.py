"""mlbuild cve --format spdx-3.0: the VEX statements as SPDX 3.0.1 security profile, checked against the official
SPDX 3.0.1 JSON schema (read here, not through mlbuild) and read back by spdx-python-model; its packages are the
ones of the SBOM of the same arch. The records and the fake builds are test_cve.py's."""

import copy
import json
from pathlib import Path

import pytest

from conftest import after_settings_line
from test_cve import FEEDS, kernel_and_busybox, report
from test_sbom_spdx3 import NS, by_id, schema_errors

VEX_TYPES = {"affected": "security_VexAffectedVulnAssessmentRelationship",
             "not_affected": "security_VexNotAffectedVulnAssessmentRelationship",
             "fixed": "security_VexFixedVulnAssessmentRelationship"}


def vex_relationships(data: dict) -> dict:
    """{record id: its VEX relationship} of a document with one component per record."""
    elements = by_id(data)
    return {elements[e["from"]]["name"]: e for e in data["@graph"] if e["type"].startswith("security_Vex")}


def test_the_vex_as_spdx_3_names_the_packages_of_the_sbom_of_the_same_arch(project):
    kernel_and_busybox(project)
    result = project.cli("cve", "x86_64", "--feed", *FEEDS, "--format", "openvex", "--format", "spdx-3.0")
    assert result.returncode == 0, result.stderr
    assert after_settings_line(result.stdout).splitlines()[-1] == (
        "build/cve/x86_64.openvex.json (OpenVEX), build/cve/x86_64.vex.spdx.json (SPDX 3.0.1, validated) and "
        "build/cve/x86_64.txt: 12 records read, 11 statements: 4 affected, 4 not affected, 3 fixed; "
        "1 records name no component of the x86_64 system")
    data = json.loads(project.read("build/cve/x86_64.vex.spdx.json"))
    assert schema_errors(data) == []
    from spdx_python_model import v3_0_1 as spdx

    objects = spdx.SHACLObjectSet()
    spdx.JSONLDDeserializer().deserialize_data(data, objects)  # the SPDX project's bindings read it back whole
    assert len(list(objects.foreach_type(spdx.security_Vulnerability))) == 11

    # The same verdicts as the OpenVEX document of the same run, each as its SPDX class and relationship type.
    openvex = {s["vulnerability"]["name"]: s for s in json.loads(project.read("build/cve/x86_64.openvex.json"))["statements"]}
    related = vex_relationships(data)
    assert {name: r["type"] for name, r in related.items()} == {name: VEX_TYPES[s["status"]] for name, s in openvex.items()}
    kinds = {"security_VexAffectedVulnAssessmentRelationship": "affects", "security_VexFixedVulnAssessmentRelationship": "fixedIn",
             "security_VexNotAffectedVulnAssessmentRelationship": "doesNotAffect"}
    assert all(r["relationshipType"] == kinds[r["type"]] for r in related.values())

    kernel, busybox = f"{NS}x86_64/package/hello@6.1.176", f"{NS}x86_64/package/app@1.36.1"
    radeon = related["CVE-2026-74417"]
    assert radeon["to"] == [kernel] and radeon["security_justificationType"] == "vulnerableCodeNotPresent"
    assert radeon["security_impactStatement"].startswith(
        "drivers/gpu/drm/radeon/radeon_gem.c not compiled in this configuration (not in hello's compiled-file list")
    timers = related["CVE-2026-64370"]
    assert timers["security_actionStatement"].startswith("Update hello to 6.1.178 or later")
    assert timers["security_statusNotes"] == "6.1.176 is in [2.6.12, 6.1.178) on the 6.1 branch"
    patched = related["CVE-2023-42364"]
    assert patched["to"] == [busybox] and "recipes/app/0001-awk-fix-use-after-free.patch fixes it" in patched["security_statusNotes"]
    elements = by_id(data)
    vulnerability = elements[radeon["from"]]
    assert vulnerability["type"] == "security_Vulnerability" and vulnerability["spdxId"] == f"{NS}vulnerability/CVE-2026-74417"
    assert {"type": "ExternalIdentifier", "externalIdentifierType": "cve", "identifier": "CVE-2026-74417"} in vulnerability["externalIdentifier"]
    assert "awk.c" in elements[related["CVE-2023-42366"]["from"]]["description"]

    # Every package a statement names is an element of the SBOM of the arch, and the document imports it.
    assert project.cli("sbom", "x86_64").returncode == 0
    sbom = by_id(json.loads(project.read("build/sbom/x86_64.spdx.json")))
    named = {to for r in related.values() for to in r["to"]}
    assert named == {kernel, busybox}
    assert all(sbom[package]["type"] == "software_Package" for package in named)
    assert {sbom[kernel]["name"], sbom[kernel]["software_packageVersion"]} == {"hello", "6.1.176"}
    [document] = [e for e in data["@graph"] if e["type"] == "SpdxDocument"]
    assert {entry["externalSpdxId"] for entry in document["import"]} == named
    assert document["profileConformance"] == ["core", "security"]
    assert set(document["rootElement"]) == {r["from"] for r in related.values()}


def test_spdx_3_alone_and_the_default_openvex_alone(project):
    kernel_and_busybox(project)
    result = project.cli("cve", "x86_64", "--feed", *FEEDS, "--format", "spdx-3.0")
    assert result.returncode == 0, result.stderr
    assert after_settings_line(result.stdout).splitlines()[-1].startswith(
        "build/cve/x86_64.vex.spdx.json (SPDX 3.0.1, validated) and build/cve/x86_64.txt: 12 records read")
    assert not project.path("build/cve/x86_64.openvex.json").exists()
    report(project)  # no --format: OpenVEX, as before
    assert project.path("build/cve/x86_64.openvex.json").exists()


def _vex(project):
    from mlbuild.exports import cve, cve_records, materials, spdx3_vex
    from mlbuild.frontend.project import Project

    loaded = Project(project.root)
    parts = materials.components(loaded, "x86_64")
    findings = cve.assess(cve_records.read_feeds([Path(feed) for feed in FEEDS]), parts)
    return spdx3_vex, findings, parts


def test_the_schema_check_fails_on_a_wrong_vex_document(project):
    kernel_and_busybox(project)
    spdx3_vex, findings, parts = _vex(project)
    good = spdx3_vex.document(findings, parts, "x86_64")
    assert schema_errors(good) == []

    def broken(status: str, field: str, value=None) -> dict:
        data = copy.deepcopy(good)
        element = next(e for e in data["@graph"] if e["type"] == VEX_TYPES[status])
        element.pop(field) if value is None else element.__setitem__(field, value)
        return data

    assert schema_errors(broken("affected", "security_actionStatement"))  # required of an affected statement
    assert schema_errors(broken("not_affected", "security_justificationType", "notCompiled"))  # not in the vocabulary
    assert schema_errors(broken("fixed", "from"))  # a relationship without its vulnerability
    wrong_identifier = copy.deepcopy(good)
    next(e for e in wrong_identifier["@graph"] if e["type"] == "security_Vulnerability")["externalIdentifier"][0][
        "externalIdentifierType"] = "cveId"
    assert schema_errors(wrong_identifier)

    from mlbuild.exports import spdx3

    [problem] = spdx3.problems(broken("affected", "security_actionStatement"))
    assert "(security_VexAffectedVulnAssessmentRelationship https://mlbuild.invalid/spdx/x86_64/package/" in problem
    assert problem.endswith("'security_actionStatement' is a required property")


def test_a_vex_document_that_does_not_validate_is_not_written_nor_the_openvex_beside_it(project, monkeypatch):
    from mlbuild.errors import MlbuildError
    from mlbuild.frontend.project import Project

    kernel_and_busybox(project)
    spdx3_vex, findings, parts = _vex(project)
    made = spdx3_vex.document

    def without_action(findings, parts, arch):
        data = made(findings, parts, arch)
        next(e for e in data["@graph"] if e["type"] == VEX_TYPES["affected"]).pop("security_actionStatement")
        return data

    monkeypatch.setattr(spdx3_vex, "document", without_action)
    from mlbuild.exports import cve

    args = type("Args", (), {"arch": "x86_64", "feed": FEEDS, "format": ["openvex", "spdx-3.0"], "output": None})()
    with pytest.raises(MlbuildError) as raised:
        cve.cmd_cve(Project(project.root), args)
    message = str(raised.value)
    assert message.startswith("cve x86_64: the SPDX 3.0.1 VEX document does not validate against its JSON schema: ")
    assert "security_actionStatement" in message and "\n" not in message
    assert not project.path("build/cve").exists()  # neither document, nor the table
