"""The SPDX 3.0.1 JSON-LD SBOM of an arch's system (`mlbuild sbom`'s default format), and the element ids
other documents (a VEX statement of `mlbuild cve`) refer to.

Made with spdx-python-model, the SPDX project's bindings generated from the 3.0.1 model (each property's
type and the required ones are checked as the graph is made and encoded), then checked against the
official SPDX 3.0.1 JSON schema (spdx-json-schema-3.0.1.json beside this file) before anything is written.

Per component of the target:
  the built package (software_Package): name, version, homepage, summary, its declared license
      (hasDeclaredLicense → a simplelicensing_LicenseExpression), the package URL of its source when it
      is built from its own recipe's source; patchedBy each patch applied;
  its source (software_Package, primaryPurpose source): the download location and sha256 of the tarball
      in use, the package URLs of every source alternative (pkg:generic, pkg:github, pkg:deb); it
      generates the built package;
  each patch (software_File, primaryPurpose patch): its sha256;
  its build (build_Build): hasInput the source and the patches, hasOutput the package; the recipe's
      options as parameters; with `kconfig` in the recipe, the final .config's sha256 as the build's
      configSourceDigest and, as parameters, each symbol the configuration fragments set with the value
      it got in that file (the options chosen over the base configuration).
The system (software_Package, primaryPurpose operatingSystem) contains every built package; a
software_Sbom (type build) holds them all, and the SpdxDocument names it as its root.

Element ids are IRIs under NAMESPACE made of names, versions and the arch only: the same component has the
same id in every run, so another document can point at it (`package_id`).
"""

import datetime
import hashlib
import io
import json
import urllib.parse
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from mlbuild.errors import MlbuildError
from mlbuild.exports import materials
from mlbuild.kconfig_check import SET, UNSET, read_symbols

SPEC_VERSION = "3.0.1"
CONTEXT = "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
SCHEMA = Path(__file__).with_name("spdx-json-schema-3.0.1.json")
NAMESPACE = "https://mlbuild.invalid/spdx/"


def id_part(text: str) -> str:
    """A name or version as one segment of an element id (an IRI)."""
    return urllib.parse.quote(text, safe="+.~_-")


def package_id(arch: str, name: str, version: str) -> str:
    """The spdxId of a component's built package in the arch's SBOM: made of its name, version and the arch
    only, so it is the same in every run. A VEX statement names it as the product (`mlbuild cve`)."""
    return f"{NAMESPACE}{id_part(arch)}/package/{id_part(name)}@{id_part(version)}"


def component_id(component, arch: str) -> str:
    """The spdxId of a Component (steps/base.py) in the arch's SBOM: `package_id` of its recipe."""
    return package_id(arch, component.recipe.name, component.recipe.version)


def package_ids(components: list, arch: str) -> list[str]:
    """The spdxId of each component's package in the arch's SBOM, in order: `component_id`, with + appended to a
    second component of one recipe (a kind of step outside mlbuild may add one) so that each has its own."""
    ids: list[str] = []
    for component in components:
        element_id = component_id(component, arch)
        while element_id in ids:
            element_id += "+"
        ids.append(element_id)
    return ids


def system_id(arch: str) -> str:
    """The spdxId of the arch's system (the image) in its SBOM: it contains every component's package."""
    return f"{NAMESPACE}{id_part(arch)}/system"


def source_id(component) -> str:
    """The spdxId of the source a component is built from (the same in every arch's SBOM)."""
    recipe = component.source_recipe
    own = f"{NAMESPACE}source/{id_part(recipe.name)}@{id_part(recipe.version)}"
    return own + "/local-override" if component.override else own


def _build_id(arch: str, name: str, version: str) -> str:
    return f"{NAMESPACE}{id_part(arch)}/build/{id_part(name)}@{id_part(version)}"


def _license_id(expression: str) -> str:
    return f"{NAMESPACE}license/{urllib.parse.quote(expression, safe='+.-')}"


@dataclass
class Sbom:
    """The document's JSON-LD data and what the command tells of it."""

    data: dict
    components: int
    unrecorded: list[str] = field(default_factory=list)  # components whose configuration is not built yet


def configuration_parameters(component) -> list[tuple[str, str]]:
    """(symbol, value in the final .config) of each symbol the component's configuration fragments set, in the
    order they first appear; 'n' for a symbol the final configuration does not set."""
    final = {name: value for name, (value, _) in read_symbols(component.configuration).items()}
    requested: dict[str, None] = {}
    for text in component.fragments:
        for line in text.splitlines():
            if match := SET.match(line.strip()) or UNSET.match(line.strip()):
                requested.setdefault(match.group(1))
    return [(name, final.get(name, "n")) for name in requested]


def document(project, arch: str) -> Sbom:
    """The arch's SBOM as SPDX 3.0.1 JSON-LD data (not yet checked against the schema: `problems`)."""
    graph = _Graph()
    system = graph.add(graph.made(
        graph.spdx.software_Package, _id=system_id(arch), name=f"mlbuild-system-{arch}",
        software_primaryPurpose=graph.spdx.software_SoftwarePurpose.operatingSystem,
        comment=f"the {arch} system built by mlbuild (target/{arch}/ and build/images/{arch}/)"))
    listed = materials.components(project, arch)
    unrecorded: list[str] = []
    contained = [graph.component(project, arch, component, package, unrecorded)
                 for component, package in zip(listed, package_ids(listed, arch))]
    graph.relate(system._id, "contains", system._id, contained)
    return Sbom(graph.data(arch, system._id), len(listed), unrecorded)


class Elements:
    """The elements of one SPDX 3.0.1 document as the bindings hold them, made and related, all created by
    mlbuild (the agent and tool of its creation info; the time is SOURCE_DATE_EPOCH's)."""

    def __init__(self):
        from spdx_python_model import v3_0_1 as spdx

        from mlbuild.reproducible import SOURCE_DATE_EPOCH

        self.spdx = spdx
        created = datetime.datetime.fromtimestamp(int(SOURCE_DATE_EPOCH), datetime.timezone.utc)
        self.creation = spdx.CreationInfo(specVersion=SPEC_VERSION, created=created)
        self.agent = spdx.SoftwareAgent(_id=f"{NAMESPACE}agent/mlbuild", name="mlbuild", creationInfo=self.creation)
        self.tool = spdx.Tool(_id=f"{NAMESPACE}tool/mlbuild", name="mlbuild", creationInfo=self.creation)
        self.creation.createdBy.append(self.agent)
        self.creation.createdUsing.append(self.tool)
        self.elements: dict[str, object] = {}

    def made(self, kind, **properties):
        """An object of the model; the bindings refuse None for a property, so one left out is not given."""
        if issubclass(kind, self.spdx.Element):
            properties["creationInfo"] = self.creation
        return kind(**{name: value for name, value in properties.items() if value is not None and value != []})

    def add(self, element):
        """The element in the document: the one already there under its id (a source or patch two components share)."""
        return self.elements.setdefault(element._id, element)

    def unused(self, element_id: str) -> str:
        """element_id, or with + appended while taken (a second component of one recipe: a kind of step outside mlbuild may add one)."""
        while element_id in self.elements:
            element_id += "+"
        return element_id

    def relate(self, owner: str, relation: str, source: str, targets: list[str], comment: str | None = None):
        # Its id: the element of the arch it belongs to and the relation, one of each per owner.
        self.add(self.made(self.spdx.Relationship, _id=f"{owner}/{relation}", from_=source, to=targets,
                           relationshipType=getattr(self.spdx.RelationshipType, relation), comment=comment))

    def sha256(self, value: str):
        return self.spdx.Hash(algorithm=self.spdx.HashAlgorithm.sha256, hashValue=value)


class _Graph(Elements):
    """The elements of an arch's SBOM."""

    def component(self, project, arch: str, component, package: str, unrecorded: list[str]) -> str:
        """Add a component's package (its id: `package_ids`), source, patches, license and build; returns the package's id."""
        spdx, recipe = self.spdx, component.recipe
        purls = materials.package_urls(component)
        self.add(self.made(
            spdx.software_Package, _id=package, name=recipe.name, software_packageVersion=recipe.version,
            software_homePage=recipe.homepage, summary=recipe.summary,
            # Its source's package URL when it is that source's own recipe (linux-headers is not linux).
            software_packageUrl=purls[0] if purls and component.source_recipe is recipe else None))
        expression = str(materials.license_expression(recipe))
        license_id = self.add(self.made(spdx.simplelicensing_LicenseExpression, _id=_license_id(expression),
                                        simplelicensing_licenseExpression=expression))._id
        self.relate(package, "hasDeclaredLicense", package, [license_id])
        source = self.add(self.source(component, purls))._id
        self.relate(package, "generates", source, [package])
        patches = [self.add(self.made(
            spdx.software_File, _id=f"{source}/patch/{id_part(Path(name).name)}", name=name,
            software_primaryPurpose=spdx.software_SoftwarePurpose.patch, verifiedUsing=[self.sha256(digest)]))._id
            for name, digest in materials.patches(component)]
        if patches:
            self.relate(package, "patchedBy", package, patches, comment="applied in this order")
        build = self.unused(_build_id(arch, recipe.name, recipe.version))
        self.add(self.build(project, component, build, unrecorded))
        self.relate(build, "hasInput", build, [source, *patches])
        self.relate(build, "hasOutput", build, [package])
        return package

    def source(self, component, purls: list[str]):
        """The source a component is built from: its release tarball (where from, sha256), or a local override."""
        spdx, recipe = self.spdx, component.source_recipe
        common = dict(_id=source_id(component), name=recipe.name, software_packageVersion=recipe.version,
                      software_primaryPurpose=spdx.software_SoftwarePurpose.source)
        if component.override:
            return self.made(spdx.software_Package, **common,
                             comment=f"a local source override ({component.override.text}), not its release tarball")
        location = materials.download_location(component.source)
        local = location.startswith("file:")  # a local mirror: its path means nothing elsewhere, said in a comment
        return self.made(
            spdx.software_Package, **common, software_downloadLocation=None if local else location,
            comment=f"source from {location} (a local file)" if local else None,
            verifiedUsing=[self.sha256(component.source.sha256)], software_packageUrl=purls[0] if purls else None,
            externalIdentifier=[self.made(spdx.ExternalIdentifier, identifier=other,
                                          externalIdentifierType=spdx.ExternalIdentifierType.packageUrl)
                                for other in purls[1:]])

    def build(self, project, component, build_id: str, unrecorded: list[str]):
        """How a component was built: its recipe's options and, with `kconfig`, its final configuration."""
        spdx, recipe, configuration = self.spdx, component.recipe, component.configuration
        parameters, digest = list(component.options), []
        if configuration is not None and configuration.is_file():
            digest = [self.sha256(hashlib.sha256(configuration.read_bytes()).hexdigest())]
            parameters += configuration_parameters(component)
        elif configuration is not None:
            unrecorded.append(f"{recipe.name}: its configuration is not recorded: "
                              f"{project.relative(configuration)} is not there (build it first)")
        return self.made(
            spdx.build_Build, _id=build_id, build_buildType=f"{NAMESPACE}build-type/{recipe.build or 'step'}",
            build_configSourceDigest=digest,
            build_parameter=[spdx.DictionaryEntry(key=key, value=value) for key, value in parameters],
            comment="its configuration was not built yet" if configuration is not None and not digest else None)

    def data(self, arch: str, root: str) -> dict:
        """The JSON-LD data: the elements, an Sbom (type build) of them rooted at the system, the document."""
        spdx, made = self.spdx, self.made
        everything = [self.agent, self.tool, *self.elements.values()]
        ids = [element._id for element in everything]
        # The document's own id tells its content apart (as SPDX 2.3's namespace did).
        identity = content_identity(spdx, everything)
        bom = made(spdx.software_Sbom, _id=f"{NAMESPACE}{id_part(arch)}/sbom-{identity}", name=f"mlbuild-system-{arch}",
                   software_sbomType=[spdx.software_SbomType.build], rootElement=[root], element=ids)
        profiles = spdx.ProfileIdentifierType
        spdx_document = made(
            spdx.SpdxDocument, _id=f"{NAMESPACE}{id_part(arch)}/document-{identity}", name=f"mlbuild-system-{arch}",
            rootElement=[bom._id], element=[*ids, bom._id],
            profileConformance=[profiles.core, profiles.software, profiles.simpleLicensing, profiles.build])
        return serialize(spdx, [spdx_document, bom, *everything])


def content_identity(spdx, objects) -> str:
    """A hash of the objects' JSON-LD: a document's own id tells its content apart (as SPDX 2.3's namespace did)."""
    return hashlib.sha256(json.dumps(serialize(spdx, objects), sort_keys=True).encode()).hexdigest()[:32]


def serialize(spdx, objects, what: str = "sbom") -> dict:
    """The JSON-LD data of the objects; a property the model requires and lacks is one line, not a traceback."""
    objects_set = spdx.SHACLObjectSet()
    for element in objects:
        objects_set.add(element)
    try:
        return spdx.JSONLDSerializer().serialize_data(objects_set, force_at_graph=True)
    except (ValueError, TypeError) as error:
        raise MlbuildError(f"{what}: the SPDX 3.0.1 model refuses the document: {error}") from None


@cache
def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def problems(data: dict) -> list[str]:
    """What the official SPDX 3.0.1 JSON schema finds wrong in the data: 'path: message' each, [] when it is valid."""
    found = [leaf for error in _validator().iter_errors(data) for leaf in _leaves(error)]
    # An element's "unevaluated properties" follow from its class not matching: said only when nothing else is.
    specific = [error for error in found if error.validator != "unevaluatedProperties"] or found
    return [f"{error.json_path}{_element(data, error)}: {_shortened(error.message)}" for error in specific]


def _element(data: dict, error) -> str:
    """' (type id)' of the @graph element an error is in, to find it by."""
    path = list(error.absolute_path)
    if len(path) < 2 or path[0] != "@graph" or not isinstance(path[1], int):
        return ""
    element = data["@graph"][path[1]]
    return f" ({element.get('type')} {element.get('spdxId', element.get('@id'))})" if isinstance(element, dict) else ""


def _leaves(error):
    """The errors that say what is wrong: the schema tries every class for an element (anyOf), and each class
    but the element's own answers 'Not a <class>'; the one that matters is under its own."""
    if error.validator == "const" and str(error.validator_value).startswith("Not a "):
        return []
    leaves = [leaf for inner in error.context or [] for leaf in _leaves(inner)]
    return leaves or [error]


def _shortened(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[:limit] + "…"


def write(project, arch: str, path: Path) -> Sbom:
    """Validate the arch's SBOM and write it as JSON-LD (atomically); nothing is written if it does not validate."""
    made = document(project, arch)
    found = problems(made.data)
    if found:
        raise MlbuildError(f"sbom {arch}: the SPDX 3.0.1 document does not validate against its JSON schema: {found[0]}")
    write_json(path, made.data)
    return made


def write_json(path: Path, data: dict) -> None:
    """Write a document beside its place and rename it there: a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    buffer = io.StringIO()
    json.dump(data, buffer, indent=2)
    partial.write_text(buffer.getvalue() + "\n")
    partial.replace(path)
