"""The SPDX 2.3 JSON SBOM of an arch's system (`mlbuild sbom --format spdx-2.3`).

One package per component of the target: name, version, where its source comes from, the source
tarball's sha256, the package URLs of its source alternatives, the recipe's license expression and the
patches applied. Written and validated by spdx-tools (the SPDX project's own library); nothing is
written if it does not validate.
"""

import datetime
import hashlib
import re
from pathlib import Path

from mlbuild.errors import MlbuildError
from mlbuild.exports import materials

SPDX_VERSION = "SPDX-2.3"


def spdx_id(name: str) -> str:
    """An SPDX element id: SPDXRef- and letters, digits, . and - only (recipe names may hold + and _)."""
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", name)


def document(project, arch: str):
    """The SPDX document (spdx_tools model) of the arch's system."""
    from spdx_tools.spdx.model import (Actor, ActorType, CreationInfo, Document, Package, PackagePurpose, Relationship,
                                       RelationshipType, SpdxNoAssertion)

    from mlbuild.reproducible import SOURCE_DATE_EPOCH

    system_id = spdx_id(f"system-{arch}")
    packages = [Package(spdx_id=system_id, name=f"mlbuild-system-{arch}", download_location=SpdxNoAssertion(),
                        files_analyzed=False, primary_package_purpose=PackagePurpose.OPERATING_SYSTEM,
                        comment=f"the {arch} system built by mlbuild (target/{arch}/ and build/images/{arch}/)")]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, system_id)]
    for component in materials.components(project, arch):
        packages.append(_package(component))
        relationships.append(Relationship(system_id, RelationshipType.CONTAINS, packages[-1].spdx_id))
    # The namespace must be unique per document: the hash of what the document says.
    identity = hashlib.sha256(repr([(p.name, p.version, p.checksums, p.source_info) for p in packages]).encode()).hexdigest()
    created = datetime.datetime.fromtimestamp(int(SOURCE_DATE_EPOCH), datetime.timezone.utc).replace(tzinfo=None)
    creation = CreationInfo(
        spdx_version=SPDX_VERSION, spdx_id="SPDXRef-DOCUMENT", name=f"mlbuild-system-{arch}",
        document_namespace=f"https://mlbuild.invalid/spdx/{arch}-{identity[:32]}",
        creators=[Actor(ActorType.TOOL, "mlbuild")], created=created,
    )
    return Document(creation_info=creation, packages=packages, relationships=relationships)


def _package(component):
    """A component's package: from its release tarball, or from a local source override (no location, checksum or patches)."""
    from spdx_tools.spdx.model import (Checksum, ChecksumAlgorithm, ExternalPackageRef, ExternalPackageRefCategory,
                                       Package, SpdxNoAssertion)

    recipe, source_recipe, override = component.recipe, component.source_recipe, component.override
    origin = "" if source_recipe is recipe else f"the source of recipe {source_recipe.name}; "
    common = dict(spdx_id=spdx_id(f"package-{recipe.name}"), name=recipe.name, version=recipe.version,
                  files_analyzed=False, homepage=recipe.homepage, license_declared=materials.license_expression(recipe),
                  license_concluded=SpdxNoAssertion(), copyright_text=SpdxNoAssertion(), summary=recipe.summary)
    if override:
        return Package(**common, download_location=SpdxNoAssertion(),
                       comment=f"source from a local override ({override.text}), not from its release tarball",
                       source_info=f"{origin}local override {override.text}; no patches applied")
    applied = materials.patches(component)
    source_info = origin + ("patches applied in order: " + ", ".join(f"{name} (sha256 {sha})" for name, sha in applied)
                            if applied else "no patches applied")
    location = materials.download_location(component.source)
    # SPDX knows http(s), ftp and VCS locations; a file:// source (a local mirror) is said in a comment.
    spdx_location = location if not location.startswith("file:") else SpdxNoAssertion()
    return Package(
        **common, download_location=spdx_location,
        comment=None if spdx_location == location else f"source from {location} (a local file: no SPDX download location)",
        checksums=[Checksum(ChecksumAlgorithm.SHA256, component.source.sha256)], source_info=source_info,
        external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl)
                             for purl in materials.package_urls(component)],
    )


def write(project, arch: str, path: Path) -> None:
    """Validate the document and write it as JSON (atomically)."""
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_file

    spdx = document(project, arch)
    problems = validate_full_spdx_document(spdx)
    if problems:
        raise MlbuildError(f"sbom {arch}: the SPDX 2.3 document does not validate: {problems[0].validation_message}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    write_document_to_file(spdx, str(partial), validate=False)
    partial.replace(path)
