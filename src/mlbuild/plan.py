"""What the next build would do with each task: nothing, run it, or run it after its dependencies.

Used by `mlbuild graph` (colours) and by the progress display (which tasks
still count towards the ETA). A task whose own inputs are unchanged may still
run once a dependency has run: its dependency's output may come out different
("after deps"); early cutoff can then still skip it.
"""

import networkx as nx

from .errors import MlbuildError
from .signature import is_up_to_date

UP_TO_DATE = "up to date"
RUN = "run"
AFTER_DEPS = "run if a dependency's output changes"
RESTORE = "restore from cache"


def next_actions(project, names=None) -> dict[str, str]:
    """For each task (all, or names and everything they need): what the next build would do."""
    graph = project.graph
    if names is not None:
        wanted = set(names)
        for name in names:
            wanted |= nx.ancestors(graph, name)
        graph = graph.subgraph(wanted)
    actions: dict[str, str] = {}
    for name in nx.topological_sort(graph):
        step = project.steps[name]
        try:
            own = UP_TO_DATE if is_up_to_date(step) else RUN
        except MlbuildError:
            own = RUN
        if own == RUN and _restorable(step):
            own = RESTORE
        if own == UP_TO_DATE and any(actions[dep] != UP_TO_DATE for dep in graph.predecessors(name)):
            own = AFTER_DEPS
        actions[name] = own
    return actions


def _restorable(step) -> bool:
    """Whether a cache holds this task's output for its current inputs (when a cache is configured)."""
    check = getattr(step.project, "restorable", None)  # provided by the artifact cache, where there is one
    try:
        return bool(check and check(step))
    except MlbuildError:
        return False
