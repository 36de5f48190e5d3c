"""A cache entry's manifest read as a whole: one pydantic model checks it before anything is opened.

A manifest comes from a cache anyone with write access may have damaged. It is read into
Manifest (hex digests, relative names that stay inside the output, integer modes, sizes
>= 0, every folder listed), and anything else is an EntryError with a one-line reason,
never a ValueError or AttributeError. Its own module: building the model costs a few
milliseconds, paid by a run that reads a manifest, not by a no-op that imports the cache.
The entries stay plain dicts (TypedDicts): what a restore reads per file costs no more
than before.
"""

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator
from typing_extensions import TypedDict

from mlbuild.engine.cache.entry import FORMAT, EntryError

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Mode = Annotated[int, Field(ge=0, le=0o7777)]
NAME_MAX, PATH_MAX = 255, 4096
_STRICT = ConfigDict(extra="forbid", strict=True)


# Entries are TypedDicts, not models: a restore of 20,000 files reads them as plain dicts, without an object each.
class FileEntry(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    kind: Literal["file"]
    mode: Mode
    size: Annotated[int, Field(ge=0)]
    sha256: Hex64


class DirEntry(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    kind: Literal["dir"]
    mode: Mode


class LinkEntry(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    kind: Literal["link"]
    target: Annotated[str, Field(min_length=1, max_length=PATH_MAX - 1)]  # where it may point: unpack's checks


Entry = Annotated[FileEntry | DirEntry | LinkEntry, Field(discriminator="kind")]


class Manifest(BaseModel):
    """A cache entry's manifest, as archive.make_manifest writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format: Literal[1]
    signature: Hex64
    task: str = Field(max_length=512)
    recipe: str | None
    version: str | None
    output_hash: Hex64
    archive: str
    archive_sha256: Hex64
    archive_size: int = Field(ge=0)
    size: int = Field(ge=0)
    build_seconds: float = Field(ge=0)
    created: int
    entries: dict[str, Entry]

    @field_validator("entries")
    @classmethod
    def _names_inside(cls, entries):
        unsafe = _first_unsafe(list(entries))
        if unsafe:
            raise ValueError(f"{unsafe[0]!r}: {unsafe[1]}")
        for name in entries:
            parent = name.rpartition("/")[0]
            if parent and entries.get(parent, {}).get("kind") != "dir":
                raise ValueError(f"{name!r}: its folder {parent!r} is not listed as a folder")
        return entries

    @model_validator(mode="after")
    def _consistent(self):
        if self.archive != f"{self.archive_sha256}.tar.zst":
            raise ValueError(f"archive: expected <archive_sha256>.tar.zst, got {self.archive[:80]!r}")
        files = sum(entry["size"] for entry in self.entries.values() if entry["kind"] == "file")
        if files != self.size:
            raise ValueError(f"size: expected the sum of its files' sizes ({files}), got {self.size}")
        return self


# A part that is empty, "." or "..", between two boundaries: a slash, or the NUL between two names (or at the ends).
_BAD_PART = re.compile(rb"[\0/]\.{0,2}[\0/]")


def _first_unsafe(names: list[str]) -> tuple[str, str] | None:
    """The first name that could leave the output, and why; None if every one is a plain relative path.

    All names are checked at once, as one text (a restore reads every name of the tree: 20,000 for a
    toolchain); only a manifest that fails is gone through name by name, for the message."""
    try:
        joined = "\0".join(names).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        joined = None
    if (joined is not None and joined.count(b"\0") == len(names) - 1  # no name holds a NUL
            and _BAD_PART.search(b"\0" + joined + b"\0") is None
            and max(map(len, joined.replace(b"\0", b"/").split(b"/"))) <= NAME_MAX
            and max(map(len, names), default=0) < PATH_MAX // 4):  # 4 bytes a character at most
        return None
    for name in names:
        problem = _unsafe_name(name)
        if problem:
            return name, problem
    return None


def _unsafe_name(name: str) -> str | None:
    """Why an entry's name could leave the output or is no file name; None if it is a plain relative path."""
    try:
        encoded = name.encode("utf-8", "surrogateescape")  # a name that was not UTF-8 on disk comes back escaped
    except UnicodeEncodeError:
        return "not a file name"
    if len(encoded) >= PATH_MAX:
        return f"longer than a path may be ({PATH_MAX} bytes)"
    if len(encoded) > NAME_MAX and max(map(len, encoded.split(b"/"))) > NAME_MAX:
        return f"a part is longer than a name may be ({NAME_MAX} bytes)"
    if b"\0" in encoded:
        return "holds a NUL byte"
    if encoded[:1] in (b"/", b""):
        return "expected a relative path"
    # Substring tests of "/name/", not a regular expression: a restore checks every name of the tree.
    wrapped = b"/" + encoded + b"/"
    if b"//" in wrapped or b"/./" in wrapped or b"/../" in wrapped:
        return "expected a path without empty, '.' or '..' parts"
    return None


def _problem(error: ValidationError) -> str:
    """A manifest's first problem in one line: entries['bin/x'].mode: Input should be a valid integer, got '755'."""
    first = error.errors()[0]
    loc, where = list(first["loc"]), ""
    if loc[:1] == ["entries"] and len(loc) > 1:
        where, loc = f"entries[{loc[1]!r}]", [part for part in loc[2:] if part not in ("file", "dir", "link")]
    where += "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    if first["type"].endswith("_type") or first["type"].startswith(("string_", "literal_", "greater", "less")):
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        message += f", got {shown[:80]}"
    more = len(error.errors()) - 1
    return f"{where.lstrip('.') or 'the manifest'}: {message}" + (f" (and {more} more problems)" if more else "")


def parse_manifest(data: bytes, signature: str | None) -> Manifest:
    """The manifest, checked as a whole: readable, of our format, well-formed, and (when given) made for this signature."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:  # RecursionError: a manifest of 100,000 nested lists
        raise EntryError(f"its manifest is not readable ({str(error)[:200]})") from None
    if not isinstance(document, dict):
        raise EntryError(f"its manifest is not readable (a JSON {type(document).__name__}, expected an object)")
    if document.get("format") != FORMAT:
        raise EntryError(f"its manifest has format {repr(document.get('format'))[:20]}, expected {FORMAT}")
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as error:
        raise EntryError(f"its manifest is malformed: {_problem(error)}") from None
    if signature is not None and manifest.signature != signature:
        raise EntryError(f"its manifest names signature {manifest.signature[:12]}…, not this task's {signature[:12]}…")
    return manifest
