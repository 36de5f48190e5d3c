"""`mlbuild cve <arch> --feed FILE…`: which of the downloaded vulnerability records concern the arch's
system, decided offline, as a VEX document (OpenVEX, the default; SPDX 3.0.1's security profile with
`--format spdx-3.0`, spdx3_vex.py; both when both are asked for) and a readable table.

Each component (the Step protocol's bill_of_materials, as the SBOM reads them) is matched to records
by the names its recipe's [cve] table gives (NVD's CPE vendor:product, OSV's ecosystem and package),
then by version (exports/cve_records.py: per stable branch where the recipe says so). A record that
matches is then:
  fixed         by a patch the recipe applies whose file name or header names the record's id;
  not affected  when every source file the record names is missing from what the build compiled
                (share/mlbuild/<recipe>/compiled-files.txt in the component's output), with that evidence;
  affected      otherwise, with the version that fixes it where the record gives one.
A version past the fix is fixed, one before the bug came in or outside the ranges is not affected.
"""

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlbuild.errors import MlbuildError
from mlbuild.exports import spdx3_vex
from mlbuild.exports.cve_records import Record, Verdict, judge, read_feeds
from mlbuild.exports.materials import components
from mlbuild.exports.spdx3 import write_json

OPENVEX_CONTEXT = "https://openvex.dev/ns/v0.2.0"
SOURCE_SUFFIXES = (".c", ".S", ".s")
HEADER_SUFFIXES = (".h",)
PATCH_HEADER_LIMIT = 64 << 10  # bytes of a patch read for its header


@dataclass(frozen=True)
class Finding:
    record: Record
    component: object  # steps/base.py Component
    status: str  # affected, not_affected, fixed, under_investigation
    reason: str
    fixed_in: str | None = None
    patch: str | None = None  # recipes/<name>/<patch> that fixes it

    @property
    def action(self) -> str | None:
        """What to do about an affected component (the VEX documents' action statement)."""
        if self.status != "affected":
            return None
        name, record = self.component.recipe.name, self.record.id
        if self.fixed_in:
            return (f"Update {name} to {self.fixed_in} or later, or add the fix as a patch of recipes/{name}.toml whose "
                    f"file name or header names {record}")
        return (f"No fixed version is known for this {name}: add the fix as a patch of recipes/{name}.toml whose file "
                f"name or header names {record}")


def compiled_record(component) -> tuple[Path, set[str]] | None:
    """(the list's file, the source paths it holds) of what the component's build compiled, if it recorded that."""
    if component.output is None:
        return None
    listed = component.output / "share" / "mlbuild" / component.recipe.name / "compiled-files.txt"
    try:
        return listed, {line.strip() for line in listed.read_text().splitlines() if line.strip()}
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise MlbuildError(f"{listed}: cannot read the compiled-file list ({error})") from None


def is_compiled(name: str, compiled: set[str]) -> bool:
    """Whether a file a record names is (or may be) part of what was compiled.

    A path: listed. A bare file name (ash.c): some listed path has it. A header: a compiled source
    shares its folder (or the folder above an include/ or inc/ folder), or it is a global one (include/…)."""
    path = PurePosixPath(name)
    if path.suffix in HEADER_SUFFIXES:
        folder = path.parent
        if folder.name in ("include", "inc"):
            folder = folder.parent
        global_header = path.parts[0] == "include" or (path.parts[0] == "arch" and "include" in path.parts[:3])
        if global_header or str(folder) == ".":
            return True
        return any(str(PurePosixPath(item).parent) == str(folder) for item in compiled)
    if len(path.parts) == 1:
        return any(PurePosixPath(item).name == name for item in compiled)
    return name in compiled


def config_note(component, source: str) -> str:
    """For a component that kept its .config beside the list (busybox): CONFIG_<FILE> is not set, when it says so."""
    config = component.output / "share" / "mlbuild" / component.recipe.name / "config"
    symbol = "CONFIG_" + PurePosixPath(source).stem.upper().replace("-", "_")
    try:
        text = config.read_text()
    except (OSError, UnicodeDecodeError):
        return ""
    return f"; {symbol} is not set in its .config" if f"# {symbol} is not set" in text.splitlines() else ""


def patch_naming(component, ids: list[str]) -> str | None:
    """recipes/<name>/<patch> of a patch the component applies whose name or header names one of the ids."""
    wanted = [i.upper() for i in ids]
    for patch in component.patches:
        try:
            text = patch.read_bytes()[:PATCH_HEADER_LIMIT].decode("utf-8", "replace")
        except OSError as error:
            raise MlbuildError(f"{patch}: cannot read: {error.strerror}") from None
        header = text.split("\ndiff ", 1)[0].split("\n--- ", 1)[0].upper()
        if any(i in patch.name.upper() or i in header for i in wanted):
            return f"recipes/{component.source_recipe.name}/{patch.name}"
    return None


def affects_of(record: Record, recipe):
    """What the record says of a recipe's component, by the names its [cve] table gives; None: not about it."""
    names = recipe.cve
    if names is None:
        return None
    for cpe in names.cpe:
        if cpe in record.cpe:
            return record.cpe[cpe]
    for package in names.osv:
        if (package.ecosystem, package.name) in record.osv:
            return record.osv[(package.ecosystem, package.name)]
    return None


def assess(records: list[Record], parts: list) -> list[Finding]:
    findings = []
    for component in parts:
        recipe = component.recipe
        seen: set[str] = set()
        for record in sorted(records, key=lambda r: r.id):
            affects = affects_of(record, recipe)
            if affects is None or record.id in seen:
                continue
            seen.add(record.id)
            findings.append(_finding(record, component, judge(recipe.version, affects, recipe.cve.stable_branches)))
    return findings


def _finding(record: Record, component, verdict: Verdict) -> Finding:
    if verdict.status != "affected":
        return Finding(record, component, verdict.status, verdict.reason, verdict.fixed_in)
    patch = patch_naming(component, record.ids)
    if patch:
        return Finding(record, component, "fixed", f"{patch} fixes it ({verdict.reason})", verdict.fixed_in, patch)
    listed = compiled_record(component)
    named = [name for name in record.files if PurePosixPath(name).suffix in SOURCE_SUFFIXES + HEADER_SUFFIXES]
    if listed and named:
        path, compiled = listed
        if not any(is_compiled(name, compiled) for name in named):
            where = f"share/mlbuild/{component.recipe.name}/compiled-files.txt, {len(compiled)} files"
            notes = "".join(config_note(component, name) for name in named)
            return Finding(record, component, "not_affected",
                           f"{', '.join(named)} not compiled in this configuration (not in {component.recipe.name}'s "
                           f"compiled-file list, {where}){notes}; the version alone: {verdict.reason}", verdict.fixed_in)
    return Finding(record, component, "affected", verdict.reason, verdict.fixed_in)


# --- output --------------------------------------------------------------------------------------

def purl(component) -> str:
    return f"pkg:generic/{component.recipe.name}@{component.recipe.version}"


def vex(findings: list[Finding], arch: str) -> dict:
    """The OpenVEX 0.2.0 document: one statement per record and component."""
    from mlbuild.reproducible import SOURCE_DATE_EPOCH

    statements = [_statement(finding, arch) for finding in findings]
    identity = hashlib.sha256(json.dumps(statements, sort_keys=True).encode()).hexdigest()
    when = datetime.datetime.fromtimestamp(int(SOURCE_DATE_EPOCH), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"@context": OPENVEX_CONTEXT, "@id": f"https://mlbuild.invalid/vex/{arch}-{identity[:32]}", "author": "mlbuild",
            "timestamp": when, "version": 1, "tooling": "mlbuild cve", "statements": statements}


def _statement(finding: Finding, arch: str) -> dict:
    record = finding.record
    vulnerability = {"name": record.id, **({"aliases": record.aliases} if record.aliases else {})}
    statement = {"vulnerability": vulnerability,
                 "products": [{"@id": f"pkg:generic/mlbuild-system-{arch}", "subcomponents": [{"@id": purl(finding.component)}]}],
                 "status": finding.status}
    if finding.status == "not_affected":
        # OpenVEX takes a justification or an impact statement, not both: the statement carries the evidence.
        statement["impact_statement"] = "Vulnerable code not present: " + finding.reason
    elif finding.status == "affected":
        statement["status_notes"] = finding.reason
        statement["action_statement"] = finding.action
    else:
        statement["status_notes"] = finding.reason
    return statement


STATUS_WORDS = {"affected": "affected", "not_affected": "not affected", "fixed": "fixed",
                "under_investigation": "under investigation"}


def table(findings: list[Finding]) -> str:
    """The readable report: one line per record and component."""
    rows = [("vulnerability", "component", "status", "why")]
    for finding in findings:
        component = finding.component.recipe
        status = STATUS_WORDS[finding.status]
        if finding.status == "not_affected" and "not compiled" in finding.reason:
            status = "not affected: code not compiled"
        elif finding.patch:
            status = "fixed by a patch we apply"
        rows.append((finding.record.id, f"{component.name} {component.version}", status, finding.reason))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "".join(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}\n" for row in rows)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


# --format: (what the summary line calls it, the file's suffix after <arch>.)
FORMATS = {"openvex": ("OpenVEX", "openvex.json"), "spdx-3.0": ("SPDX 3.0.1, validated", "vex.spdx.json")}


def cmd_cve(project, args) -> int:
    """Match downloaded vulnerability records (OSV, NVD CVE JSON 2.0) to an arch's system, offline: a VEX document (OpenVEX or SPDX 3.0) and a table."""
    parts = components(project, args.arch)
    feeds = [Path(feed) for feed in args.feed]
    formats = list(dict.fromkeys(args.format or ["openvex"]))
    records = read_feeds(feeds)
    findings = assess(records, parts)
    folder = Path(args.output).resolve() if args.output else project.build_dir / "cve"
    paths = {format: folder / f"{args.arch}.{FORMATS[format][1]}" for format in formats}
    table_path = folder / f"{args.arch}.txt"
    report = table(findings)
    # Every document is made (and the SPDX one checked) before any is written: a refused one leaves nothing half done.
    documents = {}
    if findings:
        if "openvex" in paths:
            documents["openvex"] = vex(findings, args.arch)
        if "spdx-3.0" in paths:
            documents["spdx-3.0"] = spdx3_vex.checked(findings, parts, args.arch)
    for format, path in paths.items():
        if format in documents:
            write_json(path, documents[format])
        else:
            path.unlink(missing_ok=True)  # no statement, no VEX document (OpenVEX has no empty one), not an older one
    _write(table_path, report)
    print(report, end="")
    for component in parts:
        if component.recipe.cve is not None and component.output is not None and not component.output.is_dir():
            print(f"{component.recipe.name}: not built ({project.relative(component.output)}/ is missing): "
                  "its records are judged by version and patches only")
    counts = {status: sum(1 for f in findings if f.status == status) for status in STATUS_WORDS}
    unmatched = len({r.id for r in records} - {f.record.id for f in findings})
    said = ", ".join(f"{n} {STATUS_WORDS[s]}" for s, n in counts.items() if n)
    written = ", ".join(f"{project.relative(paths[format])} ({FORMATS[format][0]})" for format in documents)
    written += " and " if written else ""
    print(f"{written}{project.relative(table_path)}: {len(records)} records read, {len(findings)} statements"
          f"{': ' + said if said else ''}; {unmatched} records name no component of the {args.arch} system")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("cve", help=cmd_cve.__doc__)
    parser.add_argument("arch", help="one of the configured arches (arches/<name>.toml)")
    parser.add_argument("--feed", action="extend", nargs="+", required=True, metavar="FILE",
                        help="a file of vulnerability records: OSV JSON (a record, a list, a zip of records) or NVD CVE JSON 2.0; repeat for more")
    parser.add_argument("--format", action="append", choices=list(FORMATS),
                        help="the VEX document: openvex (<arch>.openvex.json, the default) or spdx-3.0 (<arch>.vex.spdx.json, "
                             "SPDX 3.0.1 security profile naming the packages of `mlbuild sbom <arch>`); give it twice for both")
    parser.add_argument("-o", "--output", help="the folder to write the VEX document and <arch>.txt into (default: build/cve/)")
    parser.set_defaults(handler=cmd_cve)
