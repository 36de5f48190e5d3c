"""What the next build would do with each task: nothing, run it, or run it after its dependencies.

Used by `mlbuild graph` (colours) and by the progress display (which tasks
still count towards the ETA). A task whose own inputs are unchanged may still
run once a dependency has run: its dependency's output may come out different
("after deps"); early cutoff can then still skip it.
"""

import networkx as nx

from mlbuild.errors import MlbuildError
from mlbuild.engine.signature import decide

UP_TO_DATE = "up to date"
RUN = "run"
AFTER_DEPS = "run if a dependency's output changes"
RESTORE = "restore from cache"


def next_actions(project, names=None, consult_cache: bool = True) -> dict[str, str]:
    """For each task (all, or names and everything they need): what the next build would do.

    consult_cache: ask the artifact caches whether they hold a task that would run (one
    manifest lookup per such task; the progress display does without)."""
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
            decision = decide(step)
        except MlbuildError:
            decision = None
        # Inputs name a dependency by its input_name (a stage-1 task's lacks its @host).
        dep_tasks = {project.steps[dep].input_name: dep for dep in graph.predecessors(name)}
        if decision is None:
            own = RUN
        elif decision.up_to_date:
            own = UP_TO_DATE
        elif not decision.problems and all(change.key.startswith("dep:") and actions.get(dep_tasks.get(change.key[4:], change.key[4:]), UP_TO_DATE) != UP_TO_DATE
                                           for change in decision.changes):
            # Only dependencies that run first differ (one removed, to be restored, counts as "not built"):
            # whether this task runs depends on what they produce.
            own = AFTER_DEPS
        else:
            own = RUN
        # Only a task whose dependencies are all up to date has inputs known now (their output hashes).
        if own == RUN and consult_cache \
                and all(actions[dep] == UP_TO_DATE for dep in graph.predecessors(name)) and _restorable(step):
            own = RESTORE
        if own == UP_TO_DATE and any(actions[dep] != UP_TO_DATE for dep in graph.predecessors(name)):
            own = AFTER_DEPS
        actions[name] = own
    return actions


def _restorable(step) -> bool:
    """Whether a configured artifact cache holds this task's output for its current inputs, and the restore would
    take it: an entry whose signature it would refuse is a build (ArtifactCache.holder checks it as the restore does)."""
    if not step.artifact or not step.project.config.cache:
        return False
    try:
        return step.project.artifact_cache.holder(step.inputs()) is not None
    except MlbuildError:
        return False
