"""`mlbuild rebuild TASK…`: run tasks again though their stamp is current and the artifact cache holds them.

It is a doit run of the tasks and of the default tasks that need them, with rebuild=TASK,…
(a key for one run only, model/config.py): the named tasks are not up to date whatever their
stamp says (frontend/tasks.py) and are not restored from the cache (engine/cache/); every
other task, their dependents included, runs only if its signature says so. Being doit's own
run, it takes the tree lock, shows the live panel or plain lines and ends with the summary.
"""

import difflib
import os
import sys

import networkx as nx

from mlbuild.errors import InputError
from mlbuild.frontend.dodo_support import default_tasks
from mlbuild.frontend.project import Project
from mlbuild.model.config import COMMAND_LINE


def add_parser(commands) -> None:
    parser = commands.add_parser("rebuild", help=cmd_rebuild.__doc__)
    parser.add_argument("tasks", nargs="+", help="task names, e.g. build:busybox-x86_64 (build: may be left out)")
    parser.add_argument("-n", "--process", type=int, metavar="N", help="N tasks at a time, as doit -n N")
    parser.set_defaults(handler=cmd_rebuild)


def cmd_rebuild(project: Project, args) -> int:
    """Build tasks again, not restored from the artifact cache, then their dependents as their signatures decide."""
    names = []
    for given in args.tasks:
        name = given if ":" in given else f"build:{given}"
        if name not in project.steps:
            close = difflib.get_close_matches(name, list(project.steps), n=1)
            raise InputError(f"rebuild: no task {given!r}" + (f" (did you mean {close[0]}?)" if close else "")
                             + "; `doit list --all` shows them")
        names.append(name)
    if not (project.root / "dodo.py").is_file():
        raise InputError(f"rebuild: {project.root}/dodo.py: not found (the file doit runs mlbuild's tasks from)")
    needing = set().union(*(nx.descendants(project.graph, name) for name in names))
    targets = list(dict.fromkeys(names + [task for task in default_tasks(project) if task in needing]))
    settings = project.settings
    passed = [f"{key}={value}" for key, value in settings.values.items() if settings.origins[key] == COMMAND_LINE and key != "rebuild"]
    rebuilt = list(dict.fromkeys(project.config.rebuild + names))
    argv = ["run", *(["-n", str(args.process)] if args.process else []), *targets, *passed, f"rebuild={','.join(rebuilt)}"]
    print(f"rebuild: doit {' '.join(argv[1:])}", flush=True)  # the same run, typed as doit
    return _run_doit(project, argv)


def _run_doit(project: Project, argv: list[str]) -> int:
    """doit's run in this process, as the `doit` command would start it in the project's folder."""
    from doit.doit_cmd import DoitMain

    os.chdir(project.root)  # doit reads dodo.py and pyproject.toml ([tool.doit]) from here
    sys.argv = ["doit", *argv]  # what the reporter and the offline check read doit's options from
    return DoitMain().run(argv)
