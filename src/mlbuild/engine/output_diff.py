"""`mlbuild explain --diff TASK`: an up-to-date task built again aside, and compared with its output file by file.

Its inputs have not changed (or the task would not be up to date), so a build again that gives
other files shows that something its signature does not cover reached the build: the time, the
machine, a file it read without declaring it. The files that differ say where to look.

The run is the task's own (`step.run`) into the staging folder a real run uses (a path inside an
output is then the same), under the tree lock and the build umask, without the artifact cache;
nothing is committed: the stamp and the output stay as they were, the staging folder is removed.
"""

import os
import stat
from pathlib import Path

from mlbuild.engine.execution import staging_folder, take_tree
from mlbuild.engine.run_logs import Log
from mlbuild.engine.signature import decide
from mlbuild.errors import InputError, MlbuildError
from mlbuild.processes import running_task
from mlbuild.reproducible import BUILD_UMASK
from mlbuild.trees import hash_file, remove_tree, walk_relative


def build_again_and_compare(step) -> list[str]:
    """The files in which a build again of step differs from its output ([] when none), one line each."""
    project = step.project
    _check_up_to_date(step)
    take_tree(project)
    _check_up_to_date(step)  # again: the stamps were read anew, a run we waited for may have changed them
    staging = staging_folder(step)
    umask = os.umask(BUILD_UMASK)
    try:
        remove_tree(staging)
        staging.mkdir(parents=True)
        with running_task(step.name), Log(project.new_log(f"diff:{step.name}")) as log:
            log(f"# {step.name}: built again to compare with {project.relative(step.output)} (mlbuild explain --diff); "
                "nothing is committed")
            step.run(staging, log)
        return differences(step.output, staging)
    finally:
        os.umask(umask)
        try:
            remove_tree(staging)
        except OSError:
            pass  # what stopped the comparison (or its answer) is what to report


def _check_up_to_date(step) -> None:
    """Only an up-to-date task's output is what its inputs give: otherwise the comparison would say nothing."""
    project = step.project
    if not step.output.exists():
        raise InputError(f"explain --diff: {step.name} has no output yet ({project.relative(step.output)}); "
                         f"build it first (`doit {step.name}`)")
    for dep in step.deps:
        if not project.steps[dep].output.exists():
            raise MlbuildError(f"explain --diff: the output of {dep} is missing ({project.relative(project.steps[dep].output)}); "
                               f"build it first (`doit {dep}`)")
    # Its own inputs, the dependencies' outputs among them, as they are now: a dependency that would
    # run next time does not matter, its output is still the one this task was built from.
    why = decide(step).reasons()
    if why:
        raise InputError(f"explain --diff: {step.name} is not up to date ({why[0]}); build it first (`doit {step.name}`): "
                         "--diff compares a build again with an output of the same inputs")


def differences(output: Path, again: Path) -> list[str]:
    """One line per file that differs between the two trees (content, mode, kind or link target), by path."""
    old, new = _entries(output), _entries(again)
    lines = []
    for name in sorted(old.keys() | new.keys(), key=lambda name: name.split("/")):
        if name not in old:
            lines.append(f"only in the new build: {name}")
        elif name not in new:
            lines.append(f"only in the output: {name}")
        elif old[name] != new[name]:
            lines.append(f"differs: {name} ({_how(old[name], new[name])})")
    return lines


def _entries(root: Path) -> dict[str, tuple]:
    """{relative name: (kind, mode, content)}: a file's sha256, a link's target, a folder's nothing."""
    entries = {}
    base = str(root)
    for relative in walk_relative(base):
        path = os.path.join(base, relative)
        info = os.lstat(path)
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            entries[relative] = ("link", None, os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            entries[relative] = ("folder", mode, None)
        elif stat.S_ISREG(info.st_mode):
            entries[relative] = ("file", mode, hash_file(Path(path)))
        else:
            raise MlbuildError(f"{path}: expected a file, folder or symbolic link in a task's output")
    return entries


def _how(old: tuple, new: tuple) -> str:
    (old_kind, old_mode, old_content), (new_kind, new_mode, new_content) = old, new
    if old_kind != new_kind:
        return f"a {old_kind} in the output, a {new_kind} in the new build"
    how = []
    if old_content != new_content:
        how.append(f"link target {old_content} -> {new_content}" if old_kind == "link" else "content")
    if old_mode != new_mode:
        how.append(f"mode {old_mode:04o} -> {new_mode:04o}")
    return ", ".join(how)
