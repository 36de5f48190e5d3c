"""doit commands mlbuild adjusts (loaded through [tool.doit.plugins.command] in pyproject.toml).

mlbuild's stamps, not doit's database, decide what runs (signature.py): the commands that
read or drop doit's records (`info`, `forget`) are extended to read or drop the stamps too.
Every one of them (run, list, info, forget, clean, ignore, help) says a mistyped task name in one
line with the nearest task, and ends quietly when its reader went away (`doit list | head -1`).
"""

import json
import sys

from doit.cmd_clean import Clean as DoitClean
from doit.cmd_forget import Forget as DoitForget
from doit.cmd_help import Help as DoitHelp
from doit.cmd_ignore import Ignore as DoitIgnore
from doit.cmd_info import Info as DoitInfo
from doit.cmd_list import List as DoitList
from doit.cmd_run import Run as DoitRun
from doit.exceptions import InvalidCommand

from mlbuild.engine.boundary import EXPECTED, no_task, one_line
from mlbuild.frontend.closed_pipe import discard_stdout, flushed, stdout_closed


class _Guarded:
    """A doit command whose mistyped task is one line, not doit's "Invalid parameter", and that a closed pipe ends quietly."""

    def execute(self, params, args):
        try:
            return flushed(super().execute(params, args))
        except InvalidCommand as error:
            names = [task.name for task in getattr(self, "task_list", None) or ()]
            unknown = error.not_found or next((arg for arg in args if arg not in names and "*" not in arg), None)
            if not names or unknown is None:  # not a task name (a loader's option, say): doit's own message
                raise
            print(f"doit: {no_task(unknown, names)}", file=sys.stderr, flush=True)
            return 3  # doit's status for a command line it refuses
        except BrokenPipeError:
            if not stdout_closed():
                raise
            return discard_stdout()


class Run(_Guarded, DoitRun):
    """`doit [run] TASK…`: doit's own."""


class Clean(_Guarded, DoitClean):
    """`doit clean TASK…`: doit's own."""


class Ignore(_Guarded, DoitIgnore):
    """`doit ignore TASK…`: doit's own."""


class Help(_Guarded, DoitHelp):
    """`doit help [COMMAND|TASK]`: doit's own."""


class List(_Guarded, DoitList):
    """`doit list --all build` also lists build:toolchain and the host tasks.

    They are top-level tasks of their own full name (so `doit build` leaves out hours of
    LLVM), which doit's list would not show under the `build` group.
    """

    def _list_all(self, include_subtasks):
        """Plain `doit list`: the groups and the entry points (build:toolchain), not every task that is
        top-level only so that `doit build` leaves it out (the toolchain's parts, other arches' sysroots,
        the other userland's fetch); `doit list --all` lists them all."""
        listed = super()._list_all(include_subtasks)
        project = _project(self)
        if include_subtasks or project is None:
            return listed
        return [task for task in listed
                if ":" not in task.name or project.graph.nodes.get(task.name, {}).get("kind") == "toolchain"]

    @staticmethod
    def _list_filtered(tasks, filter_tasks, include_subtasks):
        listed = DoitList._list_filtered(tasks, filter_tasks, include_subtasks)
        if include_subtasks:
            shown = {task.name for task in listed}
            for group in filter_tasks:
                listed += [task for name, task in sorted(tasks.items())
                           if name.startswith(group + ":") and name not in shown and not task.subtask_of]
        return listed


def _project(command):
    """The project dodo.py loaded (None for a dodo file that is not mlbuild's)."""
    return getattr(command.loader, "namespace", {}).get("project")


class Info(_Guarded, DoitInfo):
    """`doit info TASK`: doit's own, with the reasons in plain words and the task's output, stamp, log and inputs.

    doit would name the uptodate callable (a function repr) as the reason a task runs;
    signature.decide says which input changed, as `mlbuild explain` does."""

    def _execute(self, pos_args, hide_status=False):
        names = [task.name for task in self.task_list]
        if len(pos_args) == 1 and pos_args[0] not in names:  # doit's own would end in a KeyError traceback
            print(f"mlbuild: info: {no_task(pos_args[0], names)}", file=sys.stderr, flush=True)
            return 3
        project = _project(self)
        self._step = project.steps.get(pos_args[0]) if project and len(pos_args) == 1 else None
        status = super()._execute(pos_args, hide_status)
        if self._step is not None:
            self._write_step(project, self._step)
        return status

    def get_reasons(self, reasons):
        if self._step is None or not reasons.get("uptodate_false"):
            return DoitInfo.get_reasons(reasons)
        from mlbuild.engine.signature import decide

        try:
            why = decide(self._step).reasons()
        except EXPECTED as error:  # e.g. a source override that vanished: the run would say the same
            why = [one_line(error)]
        return "\n".join(f" * {line}" for line in why)

    def _write_step(self, project, step) -> None:
        write = self.outstream.write
        stamp = project.stamps.path(step.stamp)
        write(f"\n{'output':11s}: {project.relative(step.output)}\n")
        write(f"{'stamp':11s}: {project.relative(stamp)}{'' if stamp.exists() else ' (none: not built)'}\n")
        write(f"{'log':11s}: {project.relative(project.log_path(step.name))}\n")
        try:
            inputs = step.inputs()
        except EXPECTED as error:
            write(f"{'inputs':11s}: {one_line(error)}\n")
            return
        write(f"\n{'inputs':11s}: (their hash is the signature; `mlbuild explain {step.name}` compares them with the stamp)\n")
        for key, value in inputs.items():
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            write(f" - {key}: {text if len(text) <= 100 else text[:97] + '...'}\n")


class Forget(_Guarded, DoitForget):
    """`doit forget TASK` also drops mlbuild's stamp: the task runs again next time.

    doit's forget only removes doit's record, which decides nothing here. Dependents run
    again only if the task's new output differs (early cutoff)."""

    def _execute(self, forget_sub, forget_disable_default, forget_all):
        project = _project(self)
        if project is not None:
            self.dep_manager = _StampsToo(self.dep_manager, project)
        try:
            return super()._execute(forget_sub, forget_disable_default, forget_all)
        except EXPECTED as error:
            print(f"mlbuild: {one_line(error, 'forget')}", file=sys.stderr, flush=True)
            return 3


class _StampsToo:
    """doit's dependency manager, whose remove() and remove_all() drop mlbuild's stamps as well."""

    def __init__(self, dep_manager, project):
        self._dep_manager = dep_manager
        self._project = project
        self._locked = False

    def __getattr__(self, name):
        return getattr(self._dep_manager, name)

    def _forget(self, names) -> None:
        from mlbuild.engine.tree_lock import TreeLock

        project = self._project
        if not self._locked:  # wait for a build running in this tree: it would write the stamp back
            TreeLock(project.build_dir / ".lock").acquire()
            self._locked = True
        for name in names:
            step = project.steps.get(name)
            if step is not None:
                project.stamps.forget(step.stamp)

    def remove(self, task_name) -> None:
        self._forget([task_name])
        self._dep_manager.remove(task_name)

    def remove_all(self) -> None:
        self._forget(list(self._project.steps))
        self._dep_manager.remove_all()
