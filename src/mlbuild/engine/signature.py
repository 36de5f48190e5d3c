"""What makes a task run again: its inputs, their signature, and the one decision that carries its reasons.

Every kind of step declares its inputs in one place, its `inputs()` method (a
dict of JSON values: recipe fields, arch, the hashes of the rendered script and
files, the toolchain, the code that does the work, each dependency's output
hash). From that one dict come:

- the signature (signature_of), kept in the task's stamp and used as the
  artifact cache's key;
- the up-to-date decision and its reasons (decide), which doit's uptodate
  check, `mlbuild explain`, `mlbuild graph` and the host tool check all ask;
- the render cache's key (render_key): rendering is skipped only while the
  whole template context that produced the script is unchanged.

Timestamps never decide.
"""

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

ENGINE_FORMAT = "1"  # bump when the meaning of inputs changes: everything rebuilds


def signature_of(inputs: dict) -> str:
    payload = json.dumps({"format": ENGINE_FORMAT, "inputs": inputs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def tree_key(folder: Path, *extra: str) -> str:
    """Hash of every file's name and bytes below folder (the templates), and of extra texts."""
    digest = hashlib.sha256("\0".join(extra).encode())
    files = [Path(top, name) for top, _, names in os.walk(folder, followlinks=True) for name in names]
    for path in sorted(files):
        digest.update(f"{path.relative_to(folder)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def render_key(context: dict, fragments: list[Path]) -> str:
    """The render cache's key of one task: everything its templates see, and the user's fragments.

    Made from the context itself, not from a list of the keys it holds: a value added to
    the context can never be missed here."""
    payload = json.dumps(context, sort_keys=True, default=_jsonable).encode()
    for path in fragments:
        payload += b"\0" + path.name.encode() + b"\0" + path.read_bytes()
    return hashlib.sha256(payload).hexdigest()


def _jsonable(value):
    if hasattr(value, "model_dump"):  # a pydantic model (the recipe)
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON: {type(value).__name__}")


@dataclass(frozen=True)
class Change:
    key: str  # the input's name, e.g. recipe:vars, file:static.config, dep:build:musl-arm64
    old: object  # None: a new input
    new: object  # None: an input that is gone


@dataclass(frozen=True)
class Decision:
    """Whether a task is up to date, and if not, every reason why not."""

    step: object
    problems: list[str] = field(default_factory=list)  # not about one input: no stamp, missing output, engine version
    changes: list[Change] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return not self.problems and not self.changes

    def reasons(self) -> list[str]:
        """The reasons in plain words; empty when it is up to date."""
        described = (_describe(change, self.step) for change in self.changes)
        return self.problems + [text for text in described if text is not None]


def decide(step) -> Decision:
    """The one up-to-date decision: its stamp's inputs equal its current inputs, and its output exists."""
    stamp = step.project.stamps.read(step.stamp)
    if stamp is None:
        return Decision(step, ["it has not been built yet (or its last build did not finish)"])
    problems = []
    if stamp.get("format") != ENGINE_FORMAT:
        problems.append("it was built by another version of mlbuild's engine")
    if not step.output.exists():
        problems.append(f"its output {step.project.relative(step.output)} is missing")
    old, new = stamp["inputs"], step.inputs()
    if old == new:  # the common case, and cheaper than comparing key by key
        known = step.known_output_hash()
        if known is not None and stamp.get("output_hash") != known:
            problems.append("its stamp's output hash was computed by an older mlbuild: it runs again to give the current one")
        return Decision(step, problems)
    changes = [Change(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return Decision(step, problems, changes)


def is_up_to_date(step) -> bool:
    return decide(step).up_to_date


def _describe(change: Change, step) -> str | None:
    key, old, new = change.key, change.old, change.new
    kind, _, what = key.partition(":")
    nouns = {"file": "config file", "dep": "dependency", "recipe": "recipe field"}
    override = getattr(step, "override", None)
    if key == "override":
        if old is None:
            return f"its source is now the local override {override.text} (no download, no patches)"
        if new is None:
            return "its source override is gone: the release tarball and patches again"
        return f"its source override {override.text} changed"
    if override is not None and key.startswith(("recipe.", "file:")):
        return None  # the tarball's and patches' inputs come and go with the override: said once, above
    if kind == "dep" and new != "not built":
        source = getattr(step.project.steps.get(what), "override", None)
        if source is not None:
            return f"its source override {source.text} changed ({what} has a new output)"
    if old is None:
        return f"new {nouns.get(kind, 'input')} {what or key}"
    if new is None:
        return f"{nouns.get(kind, 'input')} {what or key} is gone"
    if kind == "dep":
        if new == "not built":
            return f"dependency {what} is not built yet"
        return f"dependency {what} has a new output"
    if kind == "recipe":
        return f"recipe field {what} changed: {_short(old)} -> {_short(new)}"
    if kind == "file":
        return f"file {what} changed"
    if kind == "script":
        old_script = step.project.stamps.read_text(step.stamp)
        diff = difflib.unified_diff(old_script.splitlines(), step.script.splitlines(), lineterm="", n=0)
        changed = [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        return "its build script changed: " + " | ".join(changed[:6]) + (" | …" if len(changed) > 6 else "")
    if kind == "source":
        return f"its source changed: {_short(old)} -> {_short(new)}"
    if kind == "toolchain":
        return f"the toolchain changed: {old} -> {new}"
    return f"{key} changed: {_short(old)} -> {_short(new)}"


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
