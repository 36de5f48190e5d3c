"""mlbuild cve: downloaded OSV and NVD records matched to a system's components offline, per stable branch,
with "not affected: code not compiled" from what the build compiled, as OpenVEX and a table.

The synthetic project stands for the real one: hello is a kernel 6.1.176 (stable branches), app a
busybox 1.36.1; their compiled-file lists are written by hand where a real build writes them. The
records are real ones (tests/data/cve/README.md). tests/test_distribution.py runs it on the real system.
"""

import gzip
import json
import zipfile
from pathlib import Path

import jsonschema
import pytest

from conftest import after_settings_line

from mlbuild.exports import cve_records
from mlbuild.exports.cve_records import Affects, Interval, judge, version_key

DATA = Path(__file__).resolve().parent / "data" / "cve"
FEEDS = [str(DATA / name) for name in ("linux-osv.json", "linux-nvd.json", "userland-nvd.json")]
KERNEL_CVE = {"cpe": ["linux:linux_kernel"], "osv": [{"ecosystem": "Linux", "name": "Kernel"}], "stable_branches": True}
# The rules of the OpenVEX 0.2.0 specification a document must meet (written here from the spec's text).
OPENVEX_RULES = {
    "type": "object",
    "required": ["@context", "@id", "author", "timestamp", "version", "statements"],
    "properties": {
        "@context": {"const": "https://openvex.dev/ns/v0.2.0"},
        "version": {"type": "integer", "minimum": 1},
        "statements": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {
            "type": "object",
            "required": ["vulnerability", "status", "products"],
            "additionalProperties": False,
            "properties": {
                "vulnerability": {"type": "object", "required": ["name"], "additionalProperties": False,
                                  "properties": {"name": {"type": "string"}, "aliases": {"type": "array"}}},
                "products": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["@id"]}},
                "status": {"enum": ["not_affected", "affected", "fixed", "under_investigation"]},
                "status_notes": {"type": "string"}, "impact_statement": {"type": "string"},
                "action_statement": {"type": "string"},
                "justification": {"enum": ["component_not_present", "vulnerable_code_not_present",
                                           "vulnerable_code_not_in_execute_path",
                                           "vulnerable_code_cannot_be_controlled_by_adversary",
                                           "inline_mitigations_already_exist"]},
            },
            "allOf": [
                {"if": {"properties": {"status": {"const": "not_affected"}}},
                 "then": {"oneOf": [{"required": ["justification"], "not": {"required": ["impact_statement"]}},
                                    {"required": ["impact_statement"], "not": {"required": ["justification"]}}]}},
                {"if": {"properties": {"status": {"const": "affected"}}}, "then": {"required": ["action_statement"]}},
            ],
        }},
    },
}
AWK_PATCH = """From: a maintainer
Subject: [PATCH] awk: fix use-after-free in evaluate (CVE-2023-42364)

---
 editors/awk.c | 1 +
diff --git a/editors/awk.c b/editors/awk.c
"""


def kernel_and_busybox(project, compiled_kernel=("kernel/time/posix-cpu-timers.c", "kernel/irq_work.c", "net/unix/af_unix.c"),
                       compiled_busybox=("libbb/xfuncs_printf.c", "shell/ash.c")):
    """hello as a 6.1.176 kernel, app as a busybox 1.36.1 with a patch naming CVE-2023-42364, and the
    compiled-file lists their builds would have written (busybox's .config: awk disabled)."""
    project.update_recipe("hello", version="6.1.176", cve=KERNEL_CVE)
    project.write("recipes/app/0001-awk-fix-use-after-free.patch", AWK_PATCH)
    project.update_recipe("app", version="1.36.1", cve={"cpe": ["busybox:busybox"]}, patches=["0001-awk-fix-use-after-free.patch"])
    project.write("build/out/hello-x86_64/share/mlbuild/hello/compiled-files.txt", "".join(f"{f}\n" for f in compiled_kernel))
    project.write("build/out/app-x86_64/share/mlbuild/app/compiled-files.txt", "".join(f"{f}\n" for f in compiled_busybox))
    project.write("build/out/app-x86_64/share/mlbuild/app/config", "CONFIG_ASH=y\n# CONFIG_AWK is not set\n")


def report(project, *feeds: str) -> tuple[dict, dict]:
    """Run mlbuild cve x86_64; returns ({id: table row}, {id: VEX statement})."""
    result = project.cli("cve", "x86_64", "--feed", *(feeds or FEEDS))
    assert result.returncode == 0, result.stderr
    lines = after_settings_line(result.stdout).splitlines()
    rows = {line.split()[0]: line for line in lines[1:] if line.startswith("CVE-")}
    assert project.read("build/cve/x86_64.txt").splitlines() == lines[:len(rows) + 1]
    document = json.loads(project.read("build/cve/x86_64.openvex.json"))
    jsonschema.validate(document, OPENVEX_RULES)
    statements = {s["vulnerability"]["name"]: s for s in document["statements"]}
    return rows, statements


def test_each_record_is_judged_per_stable_branch_by_compiled_code_and_by_the_patches_applied(project):
    kernel_and_busybox(project)
    rows, statements = report(project)
    status = {name: s["status"] for name, s in statements.items()}
    assert status == {
        # the kernel 6.1.176: OSV records
        "CVE-2026-64370": "affected",  # fixed on the 6.1 branch only in 6.1.178
        "CVE-2026-64073": "fixed",  # fixed on the 6.1 branch in 6.1.175 (the main line's fix is 7.1)
        "CVE-2026-74417": "not_affected",  # no 6.1 fix, but the radeon driver is not compiled
        # NVD records
        "CVE-2024-26898": "fixed",  # 6.1.83 on the 6.1 branch; by plain order 6.1.176 < 6.9 would be affected
        "CVE-2026-52928": "affected",  # af_unix.c compiled, fixed in 6.1.177
        # busybox 1.36.1
        "CVE-2022-48174": "affected",  # through 1.36.1 (NVD's analysis since 2025), ash.c compiled
        "CVE-2022-30065": "not_affected",  # 1.35.0 only
        "CVE-2023-42363": "affected",  # xfuncs_printf.c is compiled
        "CVE-2023-42364": "fixed",  # the recipe's patch names it
        "CVE-2023-42365": "not_affected",  # awk.c not compiled (awk disabled)
        "CVE-2023-42366": "not_affected",
    }  # CVE-2025-26519 (musl) names no component of this system
    radeon = statements["CVE-2026-74417"]
    assert radeon["impact_statement"].startswith(
        "Vulnerable code not present: drivers/gpu/drm/radeon/radeon_gem.c not compiled in this configuration "
        "(not in hello's compiled-file list, share/mlbuild/hello/compiled-files.txt, 3 files)")
    assert radeon["products"] == [{"@id": "pkg:generic/mlbuild-system-x86_64", "subcomponents": [{"@id": "pkg:generic/hello@6.1.176"}]}]
    assert statements["CVE-2022-48174"]["status_notes"] == "1.36.1 is in (-inf, 1.36.1]"
    assert "CONFIG_AWK is not set" in statements["CVE-2023-42366"]["impact_statement"]
    assert "awk.c not compiled" in statements["CVE-2023-42366"]["impact_statement"]
    timers = statements["CVE-2026-64370"]
    assert timers["status_notes"] == "6.1.176 is in [2.6.12, 6.1.178) on the 6.1 branch"
    assert timers["action_statement"].startswith("Update hello to 6.1.178 or later")
    assert statements["CVE-2026-64073"]["status_notes"] == "fixed in 6.1.175 on the 6.1 branch; this is 6.1.176"
    assert "recipes/app/0001-awk-fix-use-after-free.patch fixes it" in statements["CVE-2023-42364"]["status_notes"]
    assert "fixed by a patch we apply" in rows["CVE-2023-42364"]
    assert "not affected: code not compiled" in rows["CVE-2026-74417"]
    assert rows["CVE-2026-64370"].split()[1:4] == ["hello", "6.1.176", "affected"]


def test_a_record_whose_file_is_compiled_or_without_a_compiled_list_stays_affected(project):
    kernel_and_busybox(project, compiled_kernel=("drivers/gpu/drm/radeon/radeon_gem.c",))
    _, statements = report(project)
    assert statements["CVE-2026-74417"]["status"] == "affected"
    assert "no fix on the 6.1 branch" in statements["CVE-2026-74417"]["status_notes"]
    project.path("build/out/hello-x86_64/share/mlbuild/hello/compiled-files.txt").unlink()
    _, statements = report(project)
    assert statements["CVE-2026-74417"]["status"] == "affected"  # no list, no evidence: never "not compiled"
    project.path("build/out/hello-x86_64/share").rename(project.path("build/share-aside"))
    project.path("build/out/hello-x86_64").rmdir()
    result = project.cli("cve", "x86_64", "--feed", *FEEDS)
    assert "hello: not built (build/out/hello-x86_64/ is missing): its records are judged by version and patches only\n" in result.stdout


def test_osv_zip_exports_and_the_summary_line(project, tmp_path):
    kernel_and_busybox(project)
    export = tmp_path / "Linux.zip"
    with zipfile.ZipFile(export, "w") as archive:
        for record in json.loads((DATA / "linux-osv.json").read_text()):
            archive.writestr(f"{record['id']}.json", json.dumps(record))
    nvd = tmp_path / "nvdcve-2.0-userland.json.gz"  # NVD's feeds come gzip-compressed
    nvd.write_bytes(gzip.compress((DATA / "userland-nvd.json").read_bytes()))
    result = project.cli("cve", "x86_64", "--feed", str(export), str(nvd))
    assert result.returncode == 0, result.stderr
    assert after_settings_line(result.stdout).splitlines()[-1] == (
        "build/cve/x86_64.openvex.json (OpenVEX) and build/cve/x86_64.txt: 10 records read, 9 statements: "
        "3 affected, 4 not affected, 2 fixed; 1 records name no component of the x86_64 system")


@pytest.mark.parametrize("content, expected", [
    ("{", "not JSON"),
    ('{"foo": 1}', "neither an OSV record (id, affected) nor NVD CVE JSON 2.0 (vulnerabilities[].cve)"),
    ('{"vulnerabilities": [{"cve": {"id": "CVE-1", "configurations": [{"nodes": [{"cpeMatch": [{"vulnerable": true, "criteria": "busybox"}]}]}]}}]}',
     "vulnerabilities[0] (CVE-1): cpeMatch criteria 'busybox': expected a CPE 2.3 name"),
    ('{"id": "OSV-1", "affected": [{"package": {"ecosystem": "Linux", "name": "Kernel"}, "ranges": [{"type": "ECOSYSTEM"}]}]}',
     "(OSV-1): affected[0]: ranges[0]: expected an object with events"),
])
def test_a_bad_feed_is_one_line_naming_the_file(project, tmp_path, content, expected):
    feed = tmp_path / "feed.json"
    feed.write_text(content)
    result = project.cli("cve", "x86_64", "--feed", str(feed))
    assert result.returncode == 2
    assert result.stderr.startswith(f"mlbuild: {feed}") and expected in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_cve_table_of_a_recipe_is_validated(project):
    project.update_recipe("hello", cve={"cpe": ["Linux Kernel"]})
    result = project.cli("check")
    assert result.returncode == 2
    assert result.stderr == ("mlbuild: recipes/hello.toml: cve.cpe[0]: expected VENDOR:PRODUCT as CPE 2.3 names them, "
                             "such as \"linux:linux_kernel\", got 'Linux Kernel'\n")


def test_versions_compare_by_number_and_branches_decide_only_where_the_recipe_says_so():
    assert version_key("6.1.176") > version_key("6.1.83") > version_key("6.1")
    assert version_key("6.9") == version_key("6.9.0") and version_key("6.9-rc1") < version_key("6.9")
    # CVE-2026-64073: fixed on 6.1 in 6.1.175, on 6.6 in 6.6.142, in the main line in 7.1.
    affects = Affects([Interval("5.16", True, end, False) for end in ("6.1.175", "6.6.142", "7.1")])
    assert judge("6.1.176", affects, stable_branches=True).status == "fixed"
    assert judge("6.1.174", affects, stable_branches=True).fixed_in == "6.1.175"
    assert judge("6.6.100", affects, stable_branches=True).fixed_in == "6.6.142"
    assert judge("6.8.1", affects, stable_branches=True).status == "affected"  # no 6.8 fix: the main line's 7.1
    assert judge("7.1.3", affects, stable_branches=True).status == "fixed"
    assert judge("5.15.100", affects, stable_branches=True).status == "not_affected"  # before 5.16
    # Plain version order, as for a component without stable branches: 6.1.176 < 6.6.142.
    assert judge("6.1.176", affects, stable_branches=False).status == "affected"
    only_commits = Affects(commit_ranges=True)
    assert judge("6.1.176", only_commits, stable_branches=True).reason == "the record gives commit ranges only, which cannot be judged offline"
    other_branch = Affects([Interval("5.15.100", True, "5.15.120", False)], commit_ranges=True)  # a 5.15 backport's bug
    assert judge("6.1.176", other_branch, stable_branches=True).reason == (
        "the record gives no range that ends on the 6.1 branch or the main line")


def test_files_named_in_descriptions():
    assert cve_records.files_in_text("a stack overflow in ash.c:6030 in busybox") == ["ash.c"]
    assert cve_records.files_in_text("in the awk.c copyvar function and drivers/net/xyz.c") == ["awk.c", "drivers/net/xyz.c"]
    assert cve_records.files_in_text("BusyBox v.1.36.1 allows") == []


def test_the_compiled_file_list_holds_what_the_archives_link_not_stale_objects(tmp_path):
    """mlbuild/compiled_files.py on archives made by the real llvm-ar, as Kbuild makes them: thin ones
    nested and flattened (the kernel's built-in.a, vmlinux.a), a plain one (busybox's lib.a)."""
    import subprocess
    import sys

    source, build = tmp_path / "src", tmp_path / "build"
    for name in ("init/main.c", "drivers/net/xyz.c", "arch/x86/entry.S", "lib/string.c", "editors/awk.c",
                 "drivers/gpu/old.c", "arch/x86/boot/header.S"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("/* source */\n")
    for name in ("init/main.o", "drivers/net/xyz.o", "arch/x86/entry.o", "lib/string.o", "editors/awk.o",
                 "drivers/gpu/old.o",  # an object of an older configuration: in no archive any more
                 "usr/gen.o", "arch/x86/boot/header.o"):
        (build / name).parent.mkdir(parents=True, exist_ok=True)
        (build / name).write_bytes(b"\x7fELF object " + name.encode())
    (build / "usr/gen.c").write_text("/* generated */\n")

    def ar(*args):
        subprocess.run(["llvm-ar", *args], cwd=build, check=True)
    ar("cDPrST", "drivers/built-in.a", "drivers/net/xyz.o")
    ar("cDPrST", "vmlinux.a", "init/main.o", "drivers/built-in.a", "arch/x86/entry.o", "usr/gen.o")
    ar("cDPrST", "lib/lib.a", "lib/string.o")
    ar("rcS", "editors/lib.a", "editors/awk.o")  # busybox's: a plain archive, member names only (S: these fake objects have no symbols)
    result = subprocess.run([sys.executable, "-m", "mlbuild.compiled_files", str(source), str(build),
                             "vmlinux.a", "lib/lib.a", "**/editors/lib.a", "--folder", "arch/x86/boot", "arch/x86/realmode"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["arch/x86/boot/header.S", "arch/x86/entry.S", "drivers/net/xyz.c",
                                          "editors/awk.c", "init/main.c", "lib/string.c", "usr/gen.c"]
    missing = subprocess.run([sys.executable, "-m", "mlbuild.compiled_files", str(source), str(build), "vmlinux.a", "nothing/lib.a"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr == f"mlbuild: the compiled-file list: {build}/nothing/lib.a: no such file (the build made no nothing/lib.a)\n"
