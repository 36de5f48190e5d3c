"""doit commands mlbuild adjusts (loaded through [tool.doit.plugins.command] in pyproject.toml)."""

from doit.cmd_list import List as DoitList


class List(DoitList):
    """`doit list --all build` also lists build:toolchain and the host tasks.

    They are top-level tasks of their own full name (so `doit build` leaves out hours of
    LLVM), which doit's list would not show under the `build` group.
    """

    @staticmethod
    def _list_filtered(tasks, filter_tasks, include_subtasks):
        listed = DoitList._list_filtered(tasks, filter_tasks, include_subtasks)
        if include_subtasks:
            shown = {task.name for task in listed}
            for group in filter_tasks:
                listed += [task for name, task in sorted(tasks.items())
                           if name.startswith(group + ":") and name not in shown and not task.subtask_of]
        return listed
