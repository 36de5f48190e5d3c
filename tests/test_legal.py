"""What was shipped under which license: mlbuild sbom --format spdx-2.3 (checked by spdx-tools; SPDX 3.0: test_sbom_spdx3.py),
mlbuild legal-info, licenses in check."""

import csv
import hashlib
import io
import json

from conftest import EXTRA_C, HELLO_C, after_settings_line

PATCH = """--- a/hello.c
+++ b/hello.c
@@ -1,3 +1,4 @@
 #include <stdio.h>
 #include "greeting.h"
+/* patched */
 int main(void) { puts(GREETING); return 0; }
"""
COPYING = "MIT License\n\nPermission is hereby granted...\n"


def licensed_hello(project) -> str:
    """hello's source with license texts at three depths, and a patch; returns the tarball's sha256."""
    source = project.new_source("hello", {"hello.c": HELLO_C, "extra.c": EXTRA_C, "COPYING": COPYING,
                                          "docs/LICENSE.txt": "docs license\n", "LICENSES/preferred/MIT": "MIT text\n",
                                          "deep/er/LICENSE": "too deep: not a license of the source\n"}, "hello-1.0")
    project.write("recipes/hello/0001-comment.patch", PATCH)
    project.update_recipe("hello", sources=[source], patches=["0001-comment.patch"])
    return source["sha256"]


def test_sbom_is_valid_spdx_2_3_listing_each_component_with_version_source_sha256_license_and_patches(project):
    sha = licensed_hello(project)
    project.update_recipe("app", license="Apache-2.0 WITH LLVM-exception")
    result = project.cli("sbom", "x86_64", "--format", "spdx-2.3")
    assert result.returncode == 0, result.stderr
    assert after_settings_line(result.stdout) == "build/sbom/x86_64.spdx-2.3.json: SPDX 2.3, 3 components, validated\n"

    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    document = parse_file(str(project.path("build/sbom/x86_64.spdx-2.3.json")))
    assert validate_full_spdx_document(document) == []
    assert document.creation_info.spdx_version == "SPDX-2.3"
    packages = {package.name: package for package in document.packages}
    assert set(packages) == {"mlbuild-system-x86_64", "hello", "extra", "app"}
    hello, extra, app = packages["hello"], packages["extra"], packages["app"]
    assert (hello.version, str(hello.license_declared)) == ("1.0", "MIT")
    assert str(app.license_declared) == "Apache-2.0 WITH LLVM-exception"
    assert [checksum.value for checksum in hello.checksums] == [sha]
    assert [checksum.value for checksum in extra.checksums] == [sha]  # extra is built from hello's source
    patch_sha = hashlib.sha256(PATCH.encode()).hexdigest()
    assert hello.source_info == f"patches applied in order: recipes/hello/0001-comment.patch (sha256 {patch_sha})"
    assert extra.source_info.startswith("the source of recipe hello; patches applied in order: recipes/hello/0001-comment.patch")
    assert app.source_info == "no patches applied"
    assert "file://" in hello.comment  # a local source: said in a comment, no SPDX download location
    assert [(ref.reference_type, ref.locator) for ref in hello.external_references] == [("purl", "pkg:generic/hello@1.0")]
    contained = {(r.spdx_element_id, r.relationship_type.name, r.related_spdx_element_id) for r in document.relationships}
    assert ("SPDXRef-system-x86-64", "CONTAINS", "SPDXRef-package-hello") in contained
    assert ("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-system-x86-64") in contained


def test_sbom_mistakes_are_one_line(project):
    result = project.cli("sbom", "riscv64")
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert "riscv64: not one of the configured arches (x86_64)" in result.stderr
    result = project.cli("sbom", "x86_64", "target_dr=out")  # settings as on doit's command line, checked alike
    assert result.returncode != 0 and "command line: target_dr=: unknown configuration key (did you mean 'target_dir'?)" in result.stderr


def test_legal_info_collects_the_exact_tarballs_patches_and_license_texts_with_a_manifest(project):
    sha = licensed_hello(project)
    result = project.cli("legal-info", "x86_64")
    assert result.returncode == 0, result.stderr
    folder = project.path("build/legal-info/x86_64")
    tarball = folder / "sources/hello-1.0" / next(p.name for p in (folder / "sources/hello-1.0").glob("*.tar.gz"))
    assert hashlib.sha256(tarball.read_bytes()).hexdigest() == sha
    assert (folder / "sources/hello-1.0/0001-comment.patch").read_text() == PATCH
    licenses = folder / "licenses/hello-1.0"
    assert sorted(p.relative_to(licenses).as_posix() for p in licenses.rglob("*") if p.is_file()) == [
        "COPYING", "LICENSES/preferred/MIT", "docs/LICENSE.txt"]
    assert (licenses / "COPYING").read_text() == COPYING
    assert (folder / "licenses/extra-1.0/COPYING").read_text() == COPYING  # extra shares hello's source
    rows = {row["package"]: row for row in csv.DictReader(io.StringIO((folder / "manifest.csv").read_text()))}
    assert set(rows) == {"hello", "extra", "app"}
    assert rows["hello"]["license"] == "MIT" and rows["hello"]["sha256"] == sha
    assert rows["hello"]["patches"] == "0001-comment.patch"
    assert rows["hello"]["license files"] == "COPYING LICENSES/preferred/MIT docs/LICENSE.txt"
    assert rows["extra"]["source archive"] == f"sources/hello-1.0/{tarball.name}"
    assert rows["app"]["license files"] == ""
    assert "warning: app: no license text found" in result.stdout
    assert json.loads((folder / "sbom.spdx.json").read_text())["@context"] == "https://spdx.org/rdf/3.0.1/spdx-context.jsonld"
    assert (folder / "README").exists()
    assert not list(project.path("build/legal-info").glob(".*staging"))


def test_a_recipe_without_a_license_is_an_error_in_check(project):
    data = dict(project.recipes["app"])
    del data["license"]
    project.write_recipe("app", data)
    result = project.cli("check")
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "recipes/app.toml" in result.stderr and "license" in result.stderr, result.stderr
    project.update_recipe("app", license="MIT AND")
    result = project.cli("check")
    assert result.returncode != 0 and "license" in result.stderr and "SPDX" in result.stderr, result.stderr
