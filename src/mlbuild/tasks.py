"""doit task dictionaries generated from the project's steps."""

from doit.exceptions import TaskFailed

from .errors import MlbuildError
from .incremental import execute, is_up_to_date
from .state import remove_tree


def _uptodate(step):
    def check() -> bool:
        try:
            return is_up_to_date(step)
        except MlbuildError:
            return False  # the action reports the error properly
    return check


def _action(step):
    def run():
        try:
            execute(step)
        except MlbuildError as error:
            return TaskFailed(str(error))
    return run


def _clean(step):
    def clean():
        step.project.stamps.forget(step.name)
        remove_tree(step.output)
        if step.work:
            remove_tree(step.work)
        print(f"{step.name}: removed {step.project.relative(step.output)}")
    return clean


def step_task(step) -> dict:
    basename, _, subname = step.name.partition(":")
    return {
        "basename": basename,
        "name": subname,
        "doc": step.doc,
        "actions": [_action(step)],
        "uptodate": [_uptodate(step)],
        "task_dep": step.deps,
        "clean": [_clean(step)],
        "verbosity": 2,
    }


def group_tasks(project, basename: str):
    """doit tasks of one group (fetch, build), with a documented group task first."""
    docs = {"fetch": "download, verify and unpack sources", "build": "build components, targets and images"}
    yield {"basename": basename, "name": None, "doc": docs[basename]}
    for step in project.ordered_steps():
        if step.name.startswith(basename + ":"):
            task = step_task(step)
            del task["basename"]
            yield task
