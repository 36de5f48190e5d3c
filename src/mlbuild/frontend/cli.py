"""The `mlbuild` command: what doit has no verb for (check, graph, explain, stats, size, script, …)."""

import argparse
import difflib
import re
import sys
from pathlib import Path

from mlbuild.engine.boundary import EXPECTED, no_task, one_line
from mlbuild.errors import InputError, MlbuildError
from mlbuild.reporting import graph_view, size, stats_report
from mlbuild.exports import cve, legal_info, sbom, script
from mlbuild.sources import mirror
from mlbuild.engine.cache import commands as cache_commands
from mlbuild.engine.signature import decide, is_up_to_date
from mlbuild.frontend import new_recipe, rebuild, settings_commands, write_image
from mlbuild.frontend.closed_pipe import quiet_when_the_reader_goes, stdout_closed
from mlbuild.frontend.check import cmd_check
from mlbuild.frontend.project import Project
from mlbuild.engine.tree_lock import TreeLock
from mlbuild.steps.build import option_text


# Commands whose answer depends on what would be built: their first line names the settings that differ
# from the defaults and where each comes from, as a doit run's does (model/config.py, Settings.line).
SHOWS_SETTINGS = frozenset({"explain", "graph", "size", "sbom", "cve"})


def find_root(start: Path) -> Path:
    for folder in [start, *start.parents]:
        if (folder / "recipes").is_dir() and (folder / "templates").is_dir():
            return folder
    raise InputError(f"{start}: not inside an mlbuild project (no recipes/ and templates/ found)")


def cmd_explain(project: Project, args) -> int:
    """Say whether a task would run and why."""
    name = args.task if ":" in args.task else f"build:{args.task}"
    step = project.steps.get(name)
    if step is None:
        raise InputError(f"explain: {no_task(name, project.steps, typed=args.task)}")
    if args.diff:
        return _explain_diff(project, step)
    pending = [dep for dep in _ancestors(project, name) if not is_up_to_date(project.steps[dep])]
    why = decide(step).reasons()
    if not why and not pending:
        stamp = project.stamps.read(step.stamp)
        origin = f", restored from {stamp['restored_from']}" if stamp.get("restored_from") else ""
        if origin and stamp.get("provenance"):
            from mlbuild.engine.cache.signing import describe_provenance

            origin += describe_provenance(stamp["provenance"])
        print(f"{name} is up to date (signature {stamp['signature'][:12]}, output {project.relative(step.output)}{origin})")
        _print_options(project, step)
        return 0
    print(f"{name} would run:" if why else f"{name} is up to date, but may run after its dependencies:")
    for line in why:
        print(f"  - {line}")
    if pending:
        print("  dependencies that run first (if their output changes, so does this task's input):")
        for dep in pending:
            print(f"  - {dep}: {'; '.join(decide(project.steps[dep]).reasons()) or 'up to date'}")
    _print_options(project, step)
    return 0


def _explain_diff(project: Project, step) -> int:
    """--diff: the task built again aside and compared with its output; 0 when the same, 1 when files differ."""
    from mlbuild.engine.output_diff import build_again_and_compare

    print(f"{step.name}: building it again aside to compare with {project.relative(step.output)} "
          f"(log: {project.relative(project.log_path('diff:' + step.name))})", flush=True)
    differing = build_again_and_compare(step)
    for line in differing or ["same"]:
        print(line)
    if differing:
        print(f"{step.name}: its inputs did not change, its output did: the build reads something its signature "
              "does not cover (the time, the machine, an undeclared file)")
    return 1 if differing else 0


def cmd_unpack(project: Project, args) -> int:
    """Unpack and patch a recipe's source into build/src/ without building (the build does it when it needs it)."""
    from mlbuild.engine.execution import execute
    from mlbuild.model.graph import fetch_task
    from mlbuild.engine.run_logs import Log

    for name in args.recipes:
        recipe = project.recipes.get(name)
        if recipe is None:
            close = difflib.get_close_matches(name, list(project.recipes), n=1)
            raise InputError(f"unpack: no recipe {name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        step = project.steps[fetch_task(recipe)]
        if not is_up_to_date(step):
            execute(step)  # download and verify first, under the tree lock, as `doit fetch:<name>` would
        TreeLock(project.build_dir / ".lock").acquire()
        with Log(project.new_log(f"unpack:{step.recipe.name}")) as log:
            print(f"{step.name}: {project.relative(step.ensure_source(log))}")
    return 0


def _print_options(project: Project, step) -> None:
    """The options a build task reacts to (its recipe declares them), with their values now."""
    if step.options and step.recipe:
        shown = ", ".join(f"{name}={option_text(value)}" for name, value in step.options.items())
        print(f"  options it reacts to (recipes/{step.recipe.name}.toml): {shown}")


def _ancestors(project: Project, name: str) -> list[str]:
    import networkx as nx

    return list(nx.topological_sort(project.graph.subgraph(nx.ancestors(project.graph, name))))


@quiet_when_the_reader_goes  # `mlbuild explain X | head -1`: no traceback when head has read its line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlbuild", description=__doc__)
    parser.add_argument("-C", "--directory", default=".", help="the project folder (default: found from the current one)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help=cmd_check.__doc__)
    for module in (graph_view, stats_report, size, script, sbom, cve, legal_info, mirror, new_recipe, write_image):
        module.add_parser(commands)  # each sets its handler
    explain = commands.add_parser("explain", help=cmd_explain.__doc__)
    explain.add_argument("task", help="a task name, e.g. build:musl-arm64")
    explain.add_argument("--diff", action="store_true",
                         help="build the up-to-date task again aside (nothing committed) and list the output files that "
                              "differ: a sign that something undeclared reached the build; exit 1 when some do")
    cache_commands.add_parser(commands)
    unpack = commands.add_parser("unpack", help=cmd_unpack.__doc__)
    unpack.add_argument("recipes", nargs="+", help="recipe names, e.g. linux (clang unpacks llvm-project, its source)")
    rebuild.add_parser(commands)
    settings_commands.add_parsers(commands)
    # key=value settings, as on doit's command line (`mlbuild size arm64 target_llvm=0`); `mlbuild set`'s to keep.
    argv = sys.argv[1:] if argv is None else argv
    settings = dict(item.split("=", 1) for item in argv if re.match(r"^[a-z_][a-z0-9_]*=", item))
    args = parser.parse_args([item for item in argv if not re.match(r"^[a-z_][a-z0-9_]*=", item)])
    args.settings = settings  # for a command that loads the project again (mlbuild new, after writing a recipe)
    handlers = {"check": cmd_check, "explain": cmd_explain, "cache": cache_commands.run, "unpack": cmd_unpack}
    try:
        root = find_root(Path(args.directory).resolve())
        if getattr(args, "before_project", False):  # set, unset: they check the project with the file they write
            return args.handler(root, args, settings)
        project = Project(root, settings)
        if args.command in SHOWS_SETTINGS:
            line = project.settings_line()
            if line:
                print(line, flush=True)
        return (getattr(args, "handler", None) or handlers[args.command])(project, args)
    except EXPECTED as error:
        if isinstance(error, BrokenPipeError) and stdout_closed():
            raise  # the reader of our output went away: quiet_when_the_reader_goes ends the command
        print(f"mlbuild: {one_line(error, None if isinstance(error, MlbuildError) else args.command)}", file=sys.stderr)
        return error.exit_status if isinstance(error, MlbuildError) else 1
    except KeyboardInterrupt:
        print(f"mlbuild: {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
