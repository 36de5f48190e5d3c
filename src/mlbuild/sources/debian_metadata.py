"""What Debian knows about a source package, in a recipe's words: upstream version, summary, homepage, SPDX license.

For `mlbuild new NAME debian:PACKAGE=VERSION` (frontend/new_recipe.py). Each answer is None when
Debian does not say, or says it in a way that cannot be carried over faithfully (a license that
is not an SPDX expression): the recipe then gets a placeholder to fill in, never a guess.
"""

import re
import subprocess

# Debian's repacking marks on an upstream version (a tarball with files removed): 1.2.13.dfsg, 0.8.9+dfsg, 2.0+ds1.
_REPACK = re.compile(r"[.+~](dfsg|ds|repack)[0-9]*$")


def upstream_version(debian_version: str) -> str:
    """1:1.2.13.dfsg-1 → 1.2.13: no epoch, no Debian revision, no repacking mark."""
    version = debian_version.split(":", 1)[-1]
    if "-" in version:
        version = version.rsplit("-", 1)[0]
    return _REPACK.sub("", version)


def summary(record: dict) -> tuple[str, str] | None:
    """(one line about the package, which binary package said it), from the machine's apt lists (`apt-cache show`)."""
    for binary in [name.strip() for name in record.get("Binary", "").split(",") if name.strip()][:3]:
        try:
            result = subprocess.run(["apt-cache", "show", "--no-all-versions", binary], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = re.search(r"^Description(?:-en)?: (.+)$", result.stdout, re.M)
        if result.returncode == 0 and found:
            # "compression library - runtime": what the package is, not which of its binary packages this is.
            line = re.sub(r"\s+-\s+(runtime|shared librar(y|ies)|development files?|headers)\b.*$", "", found[1].strip(), flags=re.I)
            return line[:1].upper() + line[1:], binary
    return None


# DEP-5 short names (https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/#license-short-name)
# whose SPDX name differs; the GNU licenses get -only / -or-later from their version and "+".
_DEP5_TO_SPDX = {"expat": "MIT", "public-domain": None, "bsd-2-clause": "BSD-2-Clause", "bsd-3-clause": "BSD-3-Clause",
                 "bsd-4-clause": "BSD-4-Clause", "zlib": "Zlib", "isc": "ISC", "apache-2.0": "Apache-2.0",
                 "mpl-2.0": "MPL-2.0", "cc0-1.0": "CC0-1.0", "mit": "MIT", "0bsd": "0BSD", "bsl-1.0": "BSL-1.0"}
_GNU = re.compile(r"^(A?GPL|LGPL|GFDL)-([0-9]+)(\.[0-9]+)?(\+)?$", re.I)


def license_of(copyright_text: str | None) -> tuple[str | None, str | None]:
    """(the SPDX expression, Debian's words) of the `Files: *` paragraph of a machine-readable debian/copyright.

    The expression is None when a name has no faithful SPDX equivalent (public-domain, an
    unknown or custom name): the recipe asks the user instead."""
    if not copyright_text:
        return None, None
    for paragraph in re.split(r"\n\s*\n", copyright_text):
        files = re.search(r"^Files:\s*(.+)$", paragraph, re.M)
        found = re.search(r"^License:\s*(.+)$", paragraph, re.M)
        if files and found and files[1].split()[0] == "*":
            words = found[1].strip()
            return _spdx(words), words
    return None, None


def _spdx(words: str) -> str | None:
    out = []
    for token in words.replace(",", " ").split():
        lower = token.lower()
        if lower in ("or", "and", "with"):
            out.append(lower.upper())
        elif lower in _DEP5_TO_SPDX:
            if _DEP5_TO_SPDX[lower] is None:
                return None
            out.append(_DEP5_TO_SPDX[lower])
        elif gnu := _GNU.match(token):
            family, major, minor, later = gnu.groups()
            out.append(f"{family.upper()}-{major}{minor or '.0'}-{'or-later' if later else 'only'}")
        else:
            out.append(token)
    expression = " ".join(out)
    from spdx_tools.common.spdx_licensing import spdx_licensing  # the SPDX list, as mlbuild sbom checks it

    try:
        return expression if not spdx_licensing.validate(expression).errors else None
    except Exception:  # the expression parser's own errors: not an SPDX expression
        return None
