"""The findings of `mlbuild cve` as SPDX 3.0.1 JSON-LD of the security profile (`--format spdx-3.0`): a VEX
document whose statements name the packages of the arch's SBOM (`mlbuild sbom`, spdx3.py) by their ids.

Made with spdx-python-model and checked against the official SPDX 3.0.1 JSON schema as spdx3.py does. Per record
a security_Vulnerability: its id and aliases as externalIdentifiers (cve for a CVE id, securityOther for the
others), its description. Per record and component a VEX relationship from the vulnerability to the component's
package, whose id is the one the SBOM of the same arch gives it (spdx3.package_ids):
  affected             security_VexAffectedVulnAssessmentRelationship (affects), with the action statement;
  not affected         security_VexNotAffectedVulnAssessmentRelationship (doesNotAffect), justification
                       vulnerableCodeNotPresent and the evidence as its impact statement;
  fixed                security_VexFixedVulnAssessmentRelationship (fixedIn);
  under investigation  security_VexUnderInvestigationVulnAssessmentRelationship (underInvestigationFor);
each with the reason as its status notes. The packages are elements of the SBOM, not of this document: the
SpdxDocument imports them (an ExternalMap each).
"""

from mlbuild.errors import MlbuildError
from mlbuild.exports import spdx3
from mlbuild.exports.spdx3 import NAMESPACE, id_part


def vulnerability_id(record_id: str) -> str:
    """The spdxId of a vulnerability: its record's id (the same in every arch's VEX document)."""
    return f"{NAMESPACE}vulnerability/{id_part(record_id)}"


def document(findings: list, parts: list, arch: str) -> dict:
    """The VEX document of the findings (cve.py Finding) about the arch's components (parts, in the order
    materials.components gives them), as JSON-LD data (not yet checked against the schema: spdx3.problems)."""
    elements = spdx3.Elements()
    spdx, made = elements.spdx, elements.made
    packages = {id(part): package for part, package in zip(parts, spdx3.package_ids(parts, arch))}
    vulnerabilities: list[str] = []
    for finding in findings:
        record = finding.record
        vulnerability = vulnerability_id(record.id)
        if vulnerability not in elements.elements:
            vulnerabilities.append(vulnerability)
            elements.add(made(spdx.security_Vulnerability, _id=vulnerability, name=record.id,
                              description=record.description or None,
                              externalIdentifier=[_identifier(spdx, made, name) for name in record.ids]))
        package = packages[id(finding.component)]
        kind, relation, details = _assessment(spdx, finding)
        elements.add(made(kind, _id=f"{package}/vex/{id_part(record.id)}", from_=vulnerability, to=[package],
                          relationshipType=getattr(spdx.RelationshipType, relation),
                          security_statusNotes=finding.reason if finding.status != "not_affected" else None, **details))
    everything = [elements.agent, elements.tool, *elements.elements.values()]
    ids = [element._id for element in everything]
    identity = spdx3.content_identity(spdx, everything)
    imported = list(dict.fromkeys(packages[id(finding.component)] for finding in findings))
    spdx_document = made(
        spdx.SpdxDocument, _id=f"{NAMESPACE}{id_part(arch)}/vex-{identity}", name=f"mlbuild-vex-{arch}",
        comment=f"VEX statements on the {arch} system: its packages are elements of the SBOM `mlbuild sbom {arch}` "
                f"writes, imported here by their ids",
        rootElement=vulnerabilities, element=ids,
        import_=[made(spdx.ExternalMap, externalSpdxId=package) for package in imported],
        profileConformance=[spdx.ProfileIdentifierType.core, spdx.ProfileIdentifierType.security])
    return spdx3.serialize(spdx, [spdx_document, *everything], what="cve")


def _identifier(spdx, made, name: str):
    kind = spdx.ExternalIdentifierType.cve if name.upper().startswith("CVE-") else spdx.ExternalIdentifierType.securityOther
    return made(spdx.ExternalIdentifier, externalIdentifierType=kind, identifier=name)


def _assessment(spdx, finding) -> tuple[type, str, dict]:
    """(class, relationship type, its own properties) of a finding's VEX relationship."""
    if finding.status == "affected":
        return spdx.security_VexAffectedVulnAssessmentRelationship, "affects", {"security_actionStatement": finding.action}
    if finding.status == "not_affected":
        return spdx.security_VexNotAffectedVulnAssessmentRelationship, "doesNotAffect", {
            "security_justificationType": spdx.security_VexJustificationType.vulnerableCodeNotPresent,
            "security_impactStatement": finding.reason}
    if finding.status == "fixed":
        return spdx.security_VexFixedVulnAssessmentRelationship, "fixedIn", {}
    return spdx.security_VexUnderInvestigationVulnAssessmentRelationship, "underInvestigationFor", {}


def checked(findings: list, parts: list, arch: str) -> dict:
    """The VEX document, checked against the official SPDX 3.0.1 JSON schema: one line naming the first problem."""
    data = document(findings, parts, arch)
    found = spdx3.problems(data)
    if found:
        raise MlbuildError(f"cve {arch}: the SPDX 3.0.1 VEX document does not validate against its JSON schema: {found[0]}")
    return data
