"""What the SBOMs (spdx3.py, spdx2.py), legal-info and a vulnerability report say of an arch's system:
its components (what the target's steps ship) and, of each, its source's download location and
package URLs, its patches and its license expression.
"""

import hashlib
import re
import urllib.parse

from mlbuild.credentials import redact
from mlbuild.errors import InputError
from mlbuild.model.graph import target_task

# A GitHub release asset or tag archive: owner, repository, and the tag (the package URL's version).
GITHUB = re.compile(r"^https://github\.com/(?P<owner>[^/]+)/(?P<name>[^/]+)/"
                    r"(?:releases/download/(?P<release>[^/]+)/|archive/(?:refs/tags/)?(?P<archive>.+?)\.(?:tar\.\w+|tgz|zip)$)")


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


def package_url(recipe, source) -> str:
    """The package URL (purl) of one source alternative of a recipe: pkg:deb/debian/… for Debian's archive,
    pkg:github/… for a GitHub release or tag, else pkg:generic/<name>@<version> with its download_url."""
    from packageurl import PackageURL

    if source.debian:
        package, _, version = source.debian.partition("=")
        return PackageURL(type="deb", namespace="debian", name=package, version=version,
                          qualifiers={"arch": "source"}).to_string()
    if match := GITHUB.match(source.url):
        return PackageURL(type="github", namespace=match["owner"], name=match["name"],
                          version=match["release"] or match["archive"]).to_string()
    # A local file (a mirror, a test's tarball) says nothing to anyone else: name and version only.
    qualifiers = {} if source.url.startswith("file:") else {"download_url": redact(source.url)}
    return PackageURL(type="generic", name=recipe.name, version=recipe.version, qualifiers=qualifiers).to_string()


def package_urls(component) -> list[str]:
    """The package URLs of a component's source: the alternative in use first, then the others; [] for a local override."""
    if component.override:
        return []
    recipe = component.source_recipe
    alternatives = [component.source] + [source for source in recipe.sources if source is not component.source]
    return list(dict.fromkeys(package_url(recipe, source) for source in alternatives))


def patches(component) -> list[tuple[str, str]]:
    """(recipes/<name>/<patch>, sha256) of each patch applied to a component's source, in order."""
    return [(f"recipes/{component.source_recipe.name}/{patch.name}", hashlib.sha256(patch.read_bytes()).hexdigest())
            for patch in component.patches]


def license_expression(recipe):
    """The recipe's license as a parsed SPDX expression; one that is not SPDX is one line naming the recipe."""
    from spdx_tools.common.spdx_licensing import spdx_licensing

    try:
        return spdx_licensing.parse(recipe.license)
    except Exception as error:
        raise InputError(f"recipes/{recipe.name}.toml: license: {recipe.license!r} is not an SPDX expression ({error})") from None


