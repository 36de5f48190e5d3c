"""Decide whether a task must run, run it atomically, and say why it ran.

A task is up to date iff its stamp's signature equals the signature of its
current inputs and its output exists. Timestamps never decide.
"""

import difflib
import json
import time

from .errors import MlbuildError
from . import state
from .host_tools import check_host_tools
from .processes import running_task, stop_leftovers
from .artifacts import push_built, restore_or_run
from .state import TreeLock, remove_tree, replace_tree


def is_up_to_date(step) -> bool:
    stamp = step.project.stamps.read(step.stamp)
    if stamp is None or not step.output.exists():
        return False
    # Comparing the inputs themselves is the same test as comparing their hashes, and cheaper.
    return stamp.get("format") == state.ENGINE_FORMAT and stamp["inputs"] == step.inputs()


def reasons(step) -> list[str]:
    """Why the task would run, in plain words; empty when it is up to date."""
    stamp = step.project.stamps.read(step.stamp)
    if stamp is None:
        return ["it has not been built yet (or its last build did not finish)"]
    found = []
    if stamp.get("format") != state.ENGINE_FORMAT:
        found.append("it was built by another version of mlbuild's engine")
    if not step.output.exists():
        found.append(f"its output {step.project.relative(step.output)} is missing")
    old, new = stamp["inputs"], step.inputs()
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            found.append(_describe_change(key, old.get(key), new.get(key), stamp, step))
    return found


def _describe_change(key: str, old, new, stamp: dict, step) -> str:
    kind, _, what = key.partition(":")
    nouns = {"file": "config file", "dep": "dependency", "recipe": "recipe field"}
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


class Log:
    """A task's log file: call it with a line; subprocesses write to .file."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "w")

    def __call__(self, line: str) -> None:
        self.file.write(line.rstrip("\n") + "\n")
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def tail(self, lines: int = 20) -> list[str]:
        return self.path.read_text(errors="replace").splitlines()[-lines:]


def execute(step) -> None:
    """Run the step into a staging folder, then commit output and stamp, in that order."""
    with running_task(step.name):
        _execute(step)


def _execute(step) -> None:
    project = step.project
    lock = TreeLock(project.build_dir / ".lock")
    if lock.acquire():
        # Stamps read before the lock may be stale: another run may have built this very task
        # while we waited. Decide again now that nobody else can write them.
        project.stamps.refresh()
        stop_leftovers(sorted({project.build_dir / 'work', project.target_build_dir / 'work'}), lock.previous_holder)
        check_host_tools(project)
        if lock.waited and is_up_to_date(step):
            print(f"mlbuild: {step.name} was built by the run this one waited for (pid {lock.previous_holder}): nothing to do", flush=True)
            return
    for dep in step.deps:
        if not project.steps[dep].output.exists():
            raise MlbuildError(f"{step.name}: the output of {dep} is missing ({project.relative(project.steps[dep].output)}); run again")
    inputs = step.inputs()
    stamps = project.stamps
    stamps.forget(step.stamp)  # from here on, an interruption leaves the task "not built"
    staging = step.output.with_name(f".{step.output.name}.staging")
    try:
        remove_tree(staging)
        staging.mkdir(parents=True)
        log_path = project.log_path(step.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with Log(log_path) as log:
            log(f"# {step.name}: {step.doc}")
            restored_from = restore_or_run(step, inputs, staging, log)  # the artifact cache's, or built here
            output_hash = step.output_hash(staging)
            log(f"# output hash {output_hash}; {time.monotonic() - started:.1f} s")
        replace_tree(staging, step.output)
        stamps.write(step.stamp, inputs, output_hash, getattr(step, "script", None), restored_from=restored_from)
        if restored_from is None:
            push_built(step, inputs, output_hash, time.monotonic() - started)
    except OSError as error:
        if error.filename is None:  # a write to an open file (log, output) names no path: name the folder
            error.filename = str(staging if staging.exists() else step.output.parent)
        raise
