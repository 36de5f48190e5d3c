"""offline = true: before any task runs, every source the selected tasks need is in the download cache.

Otherwise the run stops at once with a short list: a line saying how many are missing, one
line per missing source (recipe, file name, the start of its sha256), then how to get them. With everything cached, fetch tasks take the cache only
(download.fetch(offline=True)): no network connection is ever opened.
"""

from pathlib import Path

import networkx as nx

from mlbuild.sources.download import HOW_TO_GET, missing_name
from mlbuild.errors import MlbuildError
from mlbuild.engine.signature import is_up_to_date

# doit commands that run no task: they must work offline whatever is missing.
NOT_RUNNING = {"list", "info", "clean", "forget", "ignore", "dumpdb", "help", "strace", "tabcompletion", "reset-dep", "auto"}
GROUPS = {"build", "fetch"}
SHA256_SHOWN = 12  # hex digits of each missing source's sha256 in the list: enough to tell them apart


def selected_tasks(project, argv: list[str]) -> list[str] | None:
    """The tasks doit's command line selects (graph nodes), or None when it runs no task."""
    words = [word for word in argv if not word.startswith("-") and "=" not in word]
    if any(word in NOT_RUNNING for word in words):
        return None
    chosen, named = [], False
    for word in words:  # doit's `run` command and option values (`-n 2`) name no task
        base, _, rest = word.partition(":")
        if word in GROUPS:
            chosen += [name for name in project.graph if name.startswith(word + ":") and project.in_default_build(name)]
        elif word in project.graph:
            chosen.append(word)
        elif base in ("run", "boottest") and (rest or base == "boottest"):
            chosen += [f"build:images-{arch}" for arch in ([rest] if rest else project.config.arches)
                       if f"build:images-{arch}" in project.graph]
        elif base == "menuconfig" and f"build:{rest}" in project.graph:
            chosen.append(f"build:{rest}")
        else:
            continue
        named = True
    if not named:  # doit's default tasks
        chosen = [f"build:{kind}-{arch}" for arch in project.config.arches for kind in ("target", "images")]
    return chosen


def check(project, tasks: list[str]) -> None:
    """Every source that the fetch tasks still to run for these tasks need is cached; else the list of those missing."""
    needed = set(tasks)
    for task in tasks:
        needed |= nx.ancestors(project.graph, task)
    fetches = [project.steps[name] for name in sorted(needed) if name.startswith("fetch:")]
    cache = project.config.download_dir
    missing = [step.recipe for step in fetches
               if not any(_cached(cache, source.sha256) for source in step.recipe.sources) and not is_up_to_date(step)]
    if missing:
        count = f"{len(missing)} source tarball{'s' if len(missing) > 1 else ''}"
        # The first alternative of each: a fetch on a connected machine tries the others, and any name will do
        # in the download cache (it is looked up by sha256).
        rows = [(recipe.name, missing_name(recipe.sources[0]), recipe.sources[0].sha256[:SHA256_SHOWN]) for recipe in missing]
        widths = [max(len(row[column]) for row in rows) for column in (0, 1)]
        listed = "".join(f"\n  {name:<{widths[0]}}  {file:<{widths[1]}}  sha256 {sha}…" for name, file, sha in rows)
        raise MlbuildError(f"offline: {count} the build needs {'are' if len(missing) > 1 else 'is'} not in the download cache "
                           f"{cache}:{listed}\n{HOW_TO_GET[0].upper()}{HOW_TO_GET[1:]}")


def _cached(cache: Path, sha256: str) -> bool:
    """An entry is there (the fetch task verifies its sha256 before using it)."""
    folder = cache / sha256
    try:
        return folder.is_dir() and any(path.is_file() for path in folder.iterdir())
    except OSError:
        return False
