"""Vulnerability records as the user downloaded them (OSV JSON, NVD CVE JSON 2.0), read into one form,
and the decision of a version against the ranges a record gives, per stable branch where a component has them.

OSV: one record, a list of records, an API answer ({"vulns": […]}) or a zip of records (osv.dev's
exports). NVD: the API's or the feeds' 2.0 form, {"vulnerabilities": [{"cve": {…}}]}, gzip-compressed
or not. Commit ranges
(OSV's GIT ranges, the CVE records' git versions) cannot be judged offline without the history: the
version ranges decide, and a record with commit ranges only is "under investigation".
"""

import gzip
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from mlbuild.errors import InputError

# Keys under which OSV records (ecosystem_specific, database_specific) and CVE records list the source files.
FILE_KEYS = ("programFiles", "affected_files", "files", "paths")
# A source file named in a description: "ash.c:6030", "drivers/net/xyz.c", "awk.c evaluate".
FILE_IN_TEXT = re.compile(r"(?<![\w/.-])((?:[\w.+-]+/)*[\w+-]+(?:\.[\w+-]+)*\.[chS])\b")
ZIP_MEMBER_LIMIT = 64 << 20  # bytes of one record file in a zip: more is not a record


@dataclass(frozen=True)
class Interval:
    """Versions from start to end; None: unbounded on that side."""

    start: str | None
    start_inclusive: bool
    end: str | None
    end_inclusive: bool

    def __str__(self) -> str:
        left = "(-inf" if self.start is None else ("[" if self.start_inclusive else "(") + self.start
        right = "+inf)" if self.end is None else self.end + ("]" if self.end_inclusive else ")")
        return f"{left}, {right}"


@dataclass
class Affects:
    """What a record says of one package: ranges, exact versions, and whether it gave commit ranges."""

    intervals: list[Interval] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    commit_ranges: bool = False


@dataclass
class Record:
    id: str
    aliases: list[str]
    description: str
    origin: str  # the feed file (and member) it came from
    files: list[str]  # the source files the record names as affected
    osv: dict[tuple[str, str], Affects] = field(default_factory=dict)  # (ecosystem, name) ->
    cpe: dict[str, Affects] = field(default_factory=dict)  # "vendor:product" ->

    @property
    def ids(self) -> list[str]:
        return [self.id, *self.aliases]


# --- versions ------------------------------------------------------------------------------------

def version_key(version: str) -> tuple:
    """Numbers compare as numbers; letters sort before the end of a version (6.9-rc1 < 6.9); 6.9 == 6.9.0."""
    parts = [(2, int(token)) if token.isdigit() else (0, token) for token in re.findall(r"\d+|[A-Za-z]+", version)]
    while parts and parts[-1] == (2, 0) and len(parts) > 1:
        parts.pop()
    return (*parts, (1, ""))


def branch(version: str) -> tuple[int, ...]:
    """A stable branch: the version's first two numbers (6.1.176 -> (6, 1))."""
    return tuple(int(n) for n in re.findall(r"\d+", version)[:2])


def is_mainline(version: str) -> bool:
    """A release of the main line (6.9, 7.2, 6.9.0), not a stable branch's point release (6.1.83)."""
    numbers = [int(n) for n in re.findall(r"\d+", version)]
    return len(numbers) <= 2 or all(n == 0 for n in numbers[2:])


def contains(interval: Interval, version: str) -> bool:
    key = version_key(version)
    if interval.start is not None:
        start = version_key(interval.start)
        if key < start or (key == start and not interval.start_inclusive):
            return False
    if interval.end is not None:
        end = version_key(interval.end)
        if key > end or (key == end and not interval.end_inclusive):
            return False
    return True


@dataclass(frozen=True)
class Verdict:
    status: str  # affected, fixed, not_affected, under_investigation
    reason: str
    fixed_in: str | None = None


def judge(version: str, affects: Affects, stable_branches: bool) -> Verdict:
    """Whether a version is in the ranges. With stable_branches, the ranges that end on the version's own
    branch decide (6.1.176 against the 6.1 branch's fix, 6.1.83); without one, those that end on the main
    line or not at all (a fix on 6.6 says nothing of 6.1)."""
    key = version_key(version)
    if any(version_key(exact) == key for exact in affects.versions):
        return Verdict("affected", f"{version} is listed as affected")
    considered = affects.intervals
    where = ""
    if stable_branches:
        own = [i for i in considered if i.end is not None and branch(i.end) == branch(version)]
        where = ".".join(map(str, branch(version)))
        if own:
            considered, where = own, f" on the {where} branch"
        else:
            considered = [i for i in considered if i.end is None or is_mainline(i.end)]
            where = f" (no fix on the {where} branch; the main line's)"
    for interval in considered:
        if contains(interval, version):
            fix = interval.end if interval.end is not None and not interval.end_inclusive else None
            return Verdict("affected", f"{version} is in {interval}{where}", fix)
    passed = [i for i in considered if i.end is not None and version_key(i.end) <= key
              and (i.start is None or version_key(i.start) <= key)]
    if passed:
        fix = max((i.end for i in passed), key=version_key)
        return Verdict("fixed", f"fixed in {fix}{where}; this is {version}", fix)
    if considered and all(i.start is not None and version_key(i.start) > key for i in considered):
        first = min((i.start for i in considered), key=version_key)
        return Verdict("not_affected", f"{version} predates the affected versions (from {first})")
    if considered or affects.versions:
        listed = ", ".join([str(i) for i in considered] + affects.versions)
        return Verdict("not_affected", f"{version} is outside the affected versions ({listed})")
    if affects.intervals:
        return Verdict("under_investigation", f"the record gives no range that ends on the {'.'.join(map(str, branch(version)))} "
                                              "branch or the main line")
    if affects.commit_ranges:
        return Verdict("under_investigation", "the record gives commit ranges only, which cannot be judged offline")
    return Verdict("affected", "the record gives no versions: every version counts as affected")


# --- reading feeds -------------------------------------------------------------------------------

def read_feeds(paths: list[Path]) -> list[Record]:
    records: list[Record] = []
    for path in paths:
        records += read_feed(path)
    return records


def read_feed(path: Path) -> list[Record]:
    """One file: JSON, gzip-compressed JSON (NVD's feeds: nvdcve-2.0-2026.json.gz) or a zip of JSON files."""
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        data = json.loads(raw)
    except (OSError, EOFError) as error:  # gzip's: a damaged or truncated file
        raise InputError(f"{path}: not gzip-compressed JSON ({error})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not JSON ({error})") from None
    return parse(data, str(path))


def _read_zip(path: Path) -> list[Record]:
    records = []
    try:
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.infolist(), key=lambda m: m.filename):
                if member.is_dir() or not member.filename.endswith(".json"):
                    continue
                if member.file_size > ZIP_MEMBER_LIMIT:
                    raise InputError(f"{path}: {member.filename}: {member.file_size} bytes, more than a record holds")
                try:
                    data = json.loads(archive.read(member))
                except (ValueError, UnicodeDecodeError) as error:
                    raise InputError(f"{path}: {member.filename}: not JSON ({error})") from None
                records += parse(data, f"{path}:{member.filename}")
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{path}: cannot read the zip: {error}") from None
    return records


def parse(data, origin: str) -> list[Record]:
    """Records of one JSON document, whichever of the known forms it has."""
    if isinstance(data, list):
        return [record for index, item in enumerate(data) for record in parse(item, f"{origin}[{index}]")]
    if not isinstance(data, dict):
        raise InputError(f"{origin}: expected an OSV record or NVD CVE JSON 2.0, got a JSON {type(data).__name__}")
    if "vulnerabilities" in data:
        items = data["vulnerabilities"]
        if not isinstance(items, list):
            raise InputError(f"{origin}: vulnerabilities: expected a list (NVD CVE JSON 2.0)")
        return [_nvd(item.get("cve") if isinstance(item, dict) else None, f"{origin}: vulnerabilities[{index}]")
                for index, item in enumerate(items)]
    if "cve" in data and isinstance(data["cve"], dict):
        return [_nvd(data["cve"], origin)]
    if "vulns" in data:
        return parse(data["vulns"], f"{origin}: vulns")
    if "id" in data and ("affected" in data or "schema_version" in data or "modified" in data):
        return [_osv(data, origin)]
    raise InputError(f"{origin}: neither an OSV record (id, affected) nor NVD CVE JSON 2.0 (vulnerabilities[].cve)")


def _text(value, origin: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"{origin}: {name}: expected a non-empty string")
    return value


def _files(*places) -> list[str]:
    found: list[str] = []
    for place in places:
        if not isinstance(place, dict):
            continue
        for key in FILE_KEYS:
            value = place.get(key)
            if isinstance(value, list):
                found += [item for item in value if isinstance(item, str) and item not in found]
    return found


def files_in_text(text: str) -> list[str]:
    """Source file names a description mentions (NVD's busybox and driver records name them so)."""
    return list(dict.fromkeys(match.group(1) for match in FILE_IN_TEXT.finditer(text)))


def _osv(data: dict, origin: str) -> Record:
    record_id = _text(data.get("id"), origin, "id")
    origin = f"{origin} ({record_id})"
    aliases = [alias for alias in data.get("aliases") or [] if isinstance(alias, str)]
    description = data.get("summary") or data.get("details") or ""
    files = _files(data.get("database_specific"))
    record = Record(record_id, aliases, description if isinstance(description, str) else "", origin, files)
    for index, affected in enumerate(data.get("affected") or []):
        where = f"{origin}: affected[{index}]"
        if not isinstance(affected, dict):
            raise InputError(f"{where}: expected an object")
        package = affected.get("package") or {}
        if not isinstance(package, dict) or not package.get("name"):
            continue  # a record for a git repository only: no package to match
        key = (str(package.get("ecosystem", "")), str(package["name"]))
        affects = record.osv.setdefault(key, Affects())
        for name in _files(affected.get("ecosystem_specific"), affected.get("database_specific")):
            if name not in record.files:
                record.files.append(name)
        affects.versions += [v for v in affected.get("versions") or [] if isinstance(v, str)]
        for number, given in enumerate(affected.get("ranges") or []):
            if not isinstance(given, dict) or not isinstance(given.get("events"), list):
                raise InputError(f"{where}: ranges[{number}]: expected an object with events")
            if given.get("type") == "GIT":
                affects.commit_ranges = True
                continue
            affects.intervals += _events(given["events"], f"{where}: ranges[{number}]")
    if not record.files:
        record.files = files_in_text(data.get("details") or "") if isinstance(data.get("details"), str) else []
    return record


def _events(events: list, where: str) -> list[Interval]:
    """OSV's events in order: introduced opens a range, fixed (exclusive) or last_affected (inclusive) closes it."""
    intervals, start, open_ = [], None, False
    for event in events:
        if not isinstance(event, dict):
            raise InputError(f"{where}: events: expected objects such as {{\"introduced\": \"1.0\"}}")
        if "introduced" in event:
            start, open_ = (None if event["introduced"] == "0" else str(event["introduced"])), True
        elif "fixed" in event or "last_affected" in event:
            if open_:
                inclusive = "last_affected" in event
                intervals.append(Interval(start, True, str(event["last_affected" if inclusive else "fixed"]), inclusive))
            open_ = False
    if open_:
        intervals.append(Interval(start, True, None, False))
    return intervals


def _nvd(cve, origin: str) -> Record:
    if not isinstance(cve, dict):
        raise InputError(f"{origin}: expected a cve object (NVD CVE JSON 2.0)")
    record_id = _text(cve.get("id"), origin, "cve.id")
    origin = f"{origin} ({record_id})"
    description = next((d.get("value", "") for d in cve.get("descriptions") or []
                        if isinstance(d, dict) and d.get("lang") == "en"), "")
    record = Record(record_id, [], description, origin, files_in_text(description))
    for configuration in cve.get("configurations") or []:
        for node in (configuration or {}).get("nodes") or []:
            if not isinstance(node, dict) or node.get("negate"):
                continue
            for match in node.get("cpeMatch") or []:
                if not isinstance(match, dict) or not match.get("vulnerable"):
                    continue  # a platform it runs on, not the vulnerable product
                parts = str(match.get("criteria", "")).split(":")
                if len(parts) < 6 or parts[:2] != ["cpe", "2.3"]:
                    raise InputError(f"{origin}: cpeMatch criteria {match.get('criteria')!r}: expected a CPE 2.3 name")
                affects = record.cpe.setdefault(f"{parts[3]}:{parts[4]}", Affects())
                version = parts[5]
                if version not in ("*", "-"):
                    affects.versions.append(version)
                    continue
                start = match.get("versionStartIncluding") or match.get("versionStartExcluding")
                end = match.get("versionEndExcluding") or match.get("versionEndIncluding")
                affects.intervals.append(Interval(start, "versionStartExcluding" not in match, end,
                                                  "versionEndIncluding" in match))
    return record
