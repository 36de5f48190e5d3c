"""Run a task that must run (signature.decide says which): into a staging folder, then commit output and stamp.

A task killed at any moment leaves no stamp and its old output, never a mix.
"""

import time
from pathlib import Path

from mlbuild.console import say
from mlbuild.errors import MlbuildError
from mlbuild.engine.host_tools import check_host_tools
from mlbuild.processes import running_task, stop_leftovers
from mlbuild.engine.run_logs import Log
from mlbuild.engine.cache import push_built, restore_or_run
from mlbuild.engine.signature import is_up_to_date
from mlbuild.engine.tree_lock import TreeLock
from mlbuild.trees import keep_unchanged_mtimes, remove_tree, replace_tree


def execute(step) -> str | None:
    """Run the step into a staging folder, then commit output and stamp, in that order.

    Returns "restored" when the artifact cache gave the output, None when it was built (or was up to date)."""
    with running_task(step.name):
        return _execute(step)


def take_tree(project) -> TreeLock:
    """The tree lock, held from now on; when taken just now, the tree made ready for a task to run in it."""
    lock = TreeLock(project.build_dir / ".lock")
    if lock.acquire():
        # Stamps read before the lock may be stale: another run may have built this very task
        # while we waited. Decide again now that nobody else can write them.
        project.stamps.refresh()
        stop_leftovers(sorted({project.build_dir / 'work', project.target_build_dir / 'work'}), lock.previous_holder)
        check_host_tools(project)
    return lock


def staging_folder(step) -> Path:
    """Where a task's run makes its output: beside it (one rename commits it), under a name no task has."""
    return step.output.with_name(f".{step.output.name}.staging")


def _execute(step) -> str | None:
    project = step.project
    lock = take_tree(project)
    if lock.waited and is_up_to_date(step) and step.name not in project.config.rebuild:
        say(f"mlbuild: {step.name} was built by the run this one waited for (pid {lock.previous_holder}): nothing to do")
        return None
    for dep in step.deps:
        if not project.steps[dep].output.exists():
            raise MlbuildError(f"{step.name}: the output of {dep} is missing ({project.relative(project.steps[dep].output)}); run again")
    inputs = step.inputs()
    stamps = project.stamps
    stamps.forget(step.stamp)  # from here on, an interruption leaves the task "not built"
    staging = staging_folder(step)
    try:
        remove_tree(staging)
        staging.mkdir(parents=True)
        log_path = project.log_path(step.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with Log(log_path) as log:
            log(f"# {step.name}: {step.doc}")
            restored = restore_or_run(step, inputs, staging, log)  # the artifact cache's, or built here
            # A restore has checked the tree against the hash its pusher recorded: no need to hash it again.
            restored_from, output_hash = restored[:2] if restored else (None, step.output_hash(staging))
            kept = keep_unchanged_mtimes(staging, step.output)
            log(f"# output hash {output_hash}; {kept} unchanged files keep their time; {time.monotonic() - started:.1f} s")
        replace_tree(staging, step.output)
        stamps.write(step.stamp, inputs, output_hash, step.script, restored_from=restored_from,
                     provenance=restored.provenance if restored else None)
        if restored_from is None:
            push_built(step, inputs, output_hash, time.monotonic() - started)
        return "restored" if restored_from else None
    except BaseException as error:
        if isinstance(error, OSError) and error.filename is None:
            # A write to an open file (log, output) names no path: name the folder.
            error.filename = str(staging if staging.exists() else step.output.parent)
        try:
            remove_tree(staging)  # failed or interrupted: the old output stays, nothing half-made beside it
        except OSError:
            pass  # the error that stopped the task is the one to report
        raise
