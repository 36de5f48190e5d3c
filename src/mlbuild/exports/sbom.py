"""`mlbuild sbom <arch>`: an SPDX 2.3 JSON document of what the arch's system is made of.

One package per component of the target: name, version, where its source comes from, the
source tarball's sha256, the recipe's license expression and the patches applied. Written and
validated by spdx-tools (the SPDX project's own library); nothing is written if it does not validate.
"""

import datetime
import hashlib
import re
import urllib.parse
from pathlib import Path

from mlbuild.credentials import redact
from mlbuild.errors import InputError, MlbuildError
from mlbuild.model.graph import target_task

SPDX_VERSION = "SPDX-2.3"


def components(project, arch: str) -> list:
    """The components (steps/base.py Component) of the arch's system, in build order: what each
    step the target is assembled from says it ships (the Step protocol's bill_of_materials)."""
    if arch not in project.config.arches:
        raise InputError(f"{arch}: not one of the configured arches ({', '.join(project.config.arches)})")
    target = project.steps[target_task(arch)]
    return [component for dep in target.deps for component in project.steps[dep].bill_of_materials()]


def download_location(source) -> str:
    """Where a source is downloaded from, as the SBOM and legal-info show it: a password in the URL redacted."""
    if source.url:
        return redact(source.url)
    package, _, version = source.debian.partition("=")
    return f"https://snapshot.debian.org/package/{package}/{urllib.parse.quote(version, safe='')}/"


def patches(component) -> list[tuple[str, str]]:
    """(recipes/<name>/<patch>, sha256) of each patch applied to a component's source, in order."""
    return [(f"recipes/{component.source_recipe.name}/{patch.name}", hashlib.sha256(patch.read_bytes()).hexdigest())
            for patch in component.patches]


def spdx_id(name: str) -> str:
    """An SPDX element id: SPDXRef- and letters, digits, . and - only (recipe names may hold + and _)."""
    return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]", "-", name)


def document(project, arch: str):
    """The SPDX document (spdx_tools model) of the arch's system."""
    from spdx_tools.spdx.model import (Actor, ActorType, Checksum, ChecksumAlgorithm, CreationInfo, Document, Package,
                                       PackagePurpose, Relationship, RelationshipType, SpdxNoAssertion)

    from mlbuild.reproducible import SOURCE_DATE_EPOCH

    system_id = spdx_id(f"system-{arch}")
    packages = [Package(spdx_id=system_id, name=f"mlbuild-system-{arch}", download_location=SpdxNoAssertion(),
                        files_analyzed=False, primary_package_purpose=PackagePurpose.OPERATING_SYSTEM,
                        comment=f"the {arch} system built by mlbuild (target/{arch}/ and build/images/{arch}/)")]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, system_id)]
    for component in components(project, arch):
        recipe, source_recipe, override = component.recipe, component.source_recipe, component.override
        origin = "" if source_recipe is recipe else f"the source of recipe {source_recipe.name}; "
        if override:
            packages.append(_overridden_package(recipe, override, origin))
            relationships.append(Relationship(system_id, RelationshipType.CONTAINS, packages[-1].spdx_id))
            continue
        source = component.source
        applied = patches(component)
        source_info = origin + ("patches applied in order: " + ", ".join(f"{name} (sha256 {sha})" for name, sha in applied)
                                if applied else "no patches applied")
        license_expression = _license(recipe)
        package_id = spdx_id(f"package-{recipe.name}")
        location = download_location(source)
        # SPDX knows http(s), ftp and VCS locations; a file:// source (a local mirror) is said in a comment.
        spdx_location = location if not location.startswith("file:") else SpdxNoAssertion()
        packages.append(Package(
            spdx_id=package_id, name=recipe.name, version=recipe.version,
            download_location=spdx_location, files_analyzed=False,
            comment=None if spdx_location == location else f"source from {location} (a local file: no SPDX download location)",
            checksums=[Checksum(ChecksumAlgorithm.SHA256, source.sha256)],
            homepage=recipe.homepage, license_declared=license_expression, license_concluded=SpdxNoAssertion(),
            copyright_text=SpdxNoAssertion(), summary=recipe.summary, source_info=source_info,
        ))
        relationships.append(Relationship(system_id, RelationshipType.CONTAINS, package_id))
    # The namespace must be unique per document: the hash of what the document says.
    identity = hashlib.sha256(repr([(p.name, p.version, p.checksums, p.source_info) for p in packages]).encode()).hexdigest()
    created = datetime.datetime.fromtimestamp(int(SOURCE_DATE_EPOCH), datetime.timezone.utc).replace(tzinfo=None)
    creation = CreationInfo(
        spdx_version=SPDX_VERSION, spdx_id="SPDXRef-DOCUMENT", name=f"mlbuild-system-{arch}",
        document_namespace=f"https://mlbuild.invalid/spdx/{arch}-{identity[:32]}",
        creators=[Actor(ActorType.TOOL, "mlbuild")], created=created,
    )
    return Document(creation_info=creation, packages=packages, relationships=relationships)


def _overridden_package(recipe, override, origin: str):
    """A component built from a local source override: no download location, no tarball checksum, no patches."""
    from spdx_tools.spdx.model import Package, SpdxNoAssertion

    return Package(
        spdx_id=spdx_id(f"package-{recipe.name}"), name=recipe.name, version=recipe.version,
        download_location=SpdxNoAssertion(), files_analyzed=False,
        comment=f"source from a local override ({override.text}), not from its release tarball",
        homepage=recipe.homepage, license_declared=_license(recipe), license_concluded=SpdxNoAssertion(),
        copyright_text=SpdxNoAssertion(), summary=recipe.summary,
        source_info=f"{origin}local override {override.text}; no patches applied",
    )


def _license(recipe):
    from spdx_tools.common.spdx_licensing import spdx_licensing

    try:
        return spdx_licensing.parse(recipe.license)
    except Exception as error:
        raise InputError(f"recipes/{recipe.name}.toml: license: {recipe.license!r} is not an SPDX expression ({error})") from None


def write(project, arch: str, path: Path) -> Path:
    """Validate the document and write it as JSON (atomically)."""
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_file

    spdx = document(project, arch)
    problems = validate_full_spdx_document(spdx)
    if problems:
        raise MlbuildError(f"sbom {arch}: the SPDX document does not validate: {problems[0].validation_message}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    write_document_to_file(spdx, str(partial), validate=False)
    partial.replace(path)
    return path


def cmd_sbom(project, args) -> int:
    """Write an SPDX 2.3 JSON SBOM of an arch's system: components, versions, sources, sha256, licenses, patches."""
    path = Path(args.output).resolve() if args.output else project.build_dir / "sbom" / f"{args.arch}.spdx.json"
    write(project, args.arch, path)
    print(f"{project.relative(path)}: SPDX 2.3, {len(components(project, args.arch))} components, validated")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("sbom", help=cmd_sbom.__doc__)
    parser.add_argument("arch", help="one of the configured arches (arches/<name>.toml)")
    parser.add_argument("-o", "--output", help="the file to write (default: build/sbom/<arch>.spdx.json)")
    parser.set_defaults(handler=cmd_sbom)
