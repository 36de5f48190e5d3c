"""`mlbuild graph`: the task graph as DOT/SVG, coloured by what the next build would do, whole or around one task."""

import difflib
import shutil
import subprocess
from pathlib import Path

import networkx as nx

from mlbuild.errors import InputError
from mlbuild.model.graph import to_dot
from mlbuild.engine.plan import AFTER_DEPS, RESTORE, RUN, UP_TO_DATE, next_actions

COLOURS = {UP_TO_DATE: "#c7e9c0", RUN: "#fdae6b", AFTER_DEPS: "#fee6ce", RESTORE: "#9ecae1"}


def selected_graph(project, task: str | None, ancestors: bool, descendants: bool) -> nx.DiGraph:
    """The whole graph, or one task with its ancestors and/or descendants."""
    graph = project.graph
    if task is None:
        return graph
    name = task if ":" in task else f"build:{task}"
    if name not in graph:
        close = difflib.get_close_matches(name, list(graph), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InputError(f"graph: no task {task!r}{hint}; `doit list --all` shows them")
    if not ancestors and not descendants:
        ancestors = descendants = True
    nodes = {name}
    if ancestors:
        nodes |= nx.ancestors(graph, name)
    if descendants:
        nodes |= nx.descendants(graph, name)
    return graph.subgraph(nodes)


def cmd_graph(project, args) -> int:
    """Write the task graph as DOT (and SVG with graphviz), coloured by what the next build would do."""
    graph = selected_graph(project, args.task, args.ancestors, args.descendants)
    actions = next_actions(project, list(graph))
    actions = {name: action for name, action in actions.items() if name in graph}
    colours = {name: COLOURS[action] for name, action in actions.items()}
    output = Path(args.output) if args.output else project.build_dir / "graph.dot"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(to_dot(graph, colours, {label: colour for label, colour in COLOURS.items() if label in actions.values()}))
    # "next build" is what `doit build` would do; the tasks it leaves out (the LLVM toolchain, other
    # arches' parts) are drawn too, and counted apart, so that a no-op does not read as "2 run".
    inside = {name: action for name, action in actions.items() if project.in_default_build(name)}
    counts = {label: sum(1 for action in inside.values() if action == label) for label in COLOURS}
    line = "next build: " + (", ".join(f"{count} {label}" for label, count in counts.items() if count) or "no task")
    outside = sorted(set(actions) - set(inside))
    if outside:
        line += f"; {len(outside)} more drawn, outside `doit build` ({', '.join(outside[:2])}{', …' if len(outside) > 2 else ''})"
    print(line)
    print(f"wrote {project.relative(output)}")
    if shutil.which("dot"):
        svg = output.with_suffix(".svg")
        subprocess.run(["dot", "-Tsvg", str(output), "-o", str(svg)], check=True)
        print(f"wrote {project.relative(svg)}")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("graph", help=cmd_graph.__doc__)
    parser.add_argument("-o", "--output", help="DOT file to write (default: build/graph.dot)")
    parser.add_argument("task", nargs="?", help="only this task and what it needs and/or what needs it")
    parser.add_argument("--ancestors", action="store_true", help="with a task: what it needs (its ancestors)")
    parser.add_argument("--descendants", action="store_true", help="with a task: what needs it (its descendants)")
    parser.set_defaults(handler=cmd_graph)
