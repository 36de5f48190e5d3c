"""The task graph: fetch per recipe, build per recipe × arch, the per-arch target and images."""

import networkx as nx

from mlbuild.model.arches import HOST, Arches
from mlbuild.errors import InputError
from mlbuild.model.models import Config, Recipe

# Recipe names that would clash with the aggregate tasks' names.
RESERVED = {"target", "images", "disk", "toolchain"}


def fetch_task(recipe: Recipe) -> str:
    return f"fetch:{recipe.source or recipe.name}"


def build_task(recipe_name: str, arch: str) -> str:
    return f"build:{recipe_name}-{arch}"


def stage1_task(recipe_name: str, arch: str, config: Config) -> str:
    """A target recipe built by the host's LLVM (stage 1) for a host recipe's sysroots: the very task of
    toolchain = "host" (same stamp, same output), named with @host while the system uses another toolchain."""
    task = build_task(recipe_name, arch)
    return task if config.toolchain == "host" else f"{task}@host"


TOOLCHAIN_TASK = "build:toolchain"


def target_task(arch: str) -> str:
    return f"build:target-{arch}"


def images_task(arch: str) -> str:
    return f"build:images-{arch}"


def disk_task(arch: str) -> str:
    return f"build:disk-{arch}"


def check_cycles(recipes: dict[str, Recipe], arches: Arches) -> None:
    """A dependency cycle is an input error that shows the cycle: a -> b -> a."""
    graph = nx.DiGraph()
    for recipe in recipes.values():
        for arch in (arch for arch in arches if recipe.built_for(arch)):
            for dep in recipe.depends_for(arch):
                graph.add_edge(recipe.name, dep)
        for dep in recipe.sysroots:
            graph.add_edge(recipe.name, dep)
    if nx.is_directed_acyclic_graph(graph):  # fast; find_cycle is slow on large graphs
        return
    cycle = nx.find_cycle(graph)
    names = [edge[0] for edge in cycle] + [cycle[0][0]]
    raise InputError(f"recipes: dependency cycle: {' -> '.join(names)}")


def build_graph(recipes: dict[str, Recipe], config: Config, options: dict, labels: dict[str, str] | None,
                arches: Arches) -> nx.DiGraph:
    """Nodes are doit task names with attributes kind, recipe, arch and (build tasks) toolchain; edges point to dependents.

    options: the values of the recipes' options, which `when` reads.
    labels: how messages name each recipe's file (an external tree's recipes are elsewhere).
    arches: every known arch (a host recipe's sysroots are built for each); config.arches are built.
    The graph's own attribute machine_arch is the build machine's arch (build_ancestors)."""
    labels = labels or {}
    for name in recipes:
        if name in RESERVED:
            raise InputError(f"{labels.get(name, f'recipes/{name}.toml')}: name: {name!r} is reserved for an aggregate task")
    check_cycles(recipes, arches)
    graph = nx.DiGraph(machine_arch=arches.machine_arch())
    for recipe in recipes.values():
        if recipe.sources:
            graph.add_node(f"fetch:{recipe.name}", kind="fetch", recipe=recipe.name, arch=None)
    _add_host_recipes(graph, recipes, config, options, labels, arches)
    for arch in config.arches:
        target = target_task(arch)
        graph.add_node(target, kind="target", recipe=None, arch=arch)
        graph.add_node(images_task(arch), kind="images", recipe=None, arch=arch)
        graph.add_edge(target, images_task(arch))
        for recipe in recipes.values():
            if not recipe.build or recipe.host or not recipe.built_for(arch) or not enabled(recipe, options):
                continue
            for dep in recipe.depends_for(arch):
                if not enabled(recipes[dep], options):
                    label = labels.get(recipe.name, f"recipes/{recipe.name}.toml")
                    raise InputError(f"{label}: depends: {dep!r} is off ({off_because(recipes[dep], options)})")
            task = build_task(recipe.name, arch)
            graph.add_node(task, kind="build", recipe=recipe.name, arch=arch, toolchain=config.toolchain)
            graph.add_edge(fetch_task(recipe), task)
            if config.toolchain == "llvm":
                if TOOLCHAIN_TASK not in graph:
                    raise InputError("configuration: toolchain: 'llvm' needs a host recipe (host = true) that builds it")
                graph.add_edge(TOOLCHAIN_TASK, task)
            for dep in recipe.depends_for(arch):
                graph.add_edge(build_task(dep, arch), task)
            if recipe.target:
                graph.add_edge(task, target)
        # A disk image a UEFI machine boots: for an arch that says how (arches/<arch>.toml: firmware) whose
        # system has a kernel (a recipe of the target declares one for it).
        kernels = [recipe for recipe in recipes.values() if recipe.target and not recipe.host and recipe.built_for(arch)
                   and enabled(recipe, options) and recipe.kernel_for(arch)]
        if arches[arch].firmware is not None and kernels:
            graph.add_node(disk_task(arch), kind="disk", recipe=None, arch=arch)
            graph.add_edge(images_task(arch), disk_task(arch))
            graph.add_edge(target, disk_task(arch))
    return graph


def enabled(recipe: Recipe, options: dict) -> bool:
    """Whether the recipe exists with these option values (its `when`: a switch on, or a choice made)."""
    if recipe.condition is None:
        return True
    name, value = recipe.condition
    return options[name] if value is None else options[name] == value


def off_because(recipe: Recipe, options: dict) -> str:
    """Why an existing recipe is off, in the words of its `when`."""
    name, value = recipe.condition
    return f"{name} = false" if value is None else f"it needs {name}={value}, {name} is {options[name]}"


def _add_host_recipes(graph: nx.DiGraph, recipes: dict[str, Recipe], config: Config, options: dict, labels: dict,
                      arches: Arches) -> None:
    """Host recipes: build:<name>-host each, gathered by build:toolchain into toolchain/.

    A host recipe's sysroots are built by stage 1 for every arch: it depends on the build machine's arch's,
    and build:toolchain on all of them (it ships each arch's as a sysroot)."""
    for recipe in recipes.values():
        if recipe.build and recipe.host:
            task = build_task(recipe.name, HOST)
            graph.add_node(task, kind="build", recipe=recipe.name, arch=HOST, toolchain="host")
            graph.add_edge(fetch_task(recipe), task)
            for dep in recipe.depends:
                graph.add_edge(build_task(dep, HOST), task)
            graph.add_node(TOOLCHAIN_TASK, kind="toolchain", recipe=None, arch=None)
            graph.add_edge(task, TOOLCHAIN_TASK)
            machine = graph.graph["machine_arch"]
            if recipe.sysroots and machine not in arches:
                raise InputError(f"{labels.get(recipe.name, f'recipes/{recipe.name}.toml')}: sysroots: the build machine's arch "
                                 f"{machine!r} is none of {', '.join(arches)}, so stage 1 cannot build it a sysroot to link against")
            for arch in arches:
                parts = [_add_stage1(graph, recipes, name, arch, config, options, labels) for name in recipe.sysroots]
                if arch == machine:
                    for part in parts:
                        graph.add_edge(part, task)
                for part in _with_ancestors(graph, parts):
                    graph.add_edge(part, TOOLCHAIN_TASK)


def _add_stage1(graph: nx.DiGraph, recipes: dict[str, Recipe], name: str, arch: str, config: Config, options: dict, labels: dict) -> str:
    """The stage-1 build of a target recipe for arch and of what it depends on; its task name."""
    recipe = recipes[name]
    task = stage1_task(name, arch, config)
    if task in graph:
        return task
    if not enabled(recipe, options):
        raise InputError(f"{labels.get(name, f'recipes/{name}.toml')}: a host recipe's sysroots need {name!r}, which is off ({off_because(recipe, options)})")
    if not recipe.built_for(arch):
        raise InputError(f"{labels.get(name, f'recipes/{name}.toml')}: arches: a host recipe's sysroots need {name!r} for {arch}")
    graph.add_node(task, kind="build", recipe=name, arch=arch, toolchain="host")
    graph.add_edge(fetch_task(recipe), task)
    for dep in recipe.depends_for(arch):
        graph.add_edge(_add_stage1(graph, recipes, dep, arch, config, options, labels), task)
    return task


def _with_ancestors(graph: nx.DiGraph, tasks: list[str]) -> list[str]:
    """The tasks and the build tasks they depend on, directly or not."""
    found = set(tasks)
    for task in tasks:
        found |= {node for node in nx.ancestors(graph, task) if graph.nodes[node]["kind"] == "build"}
    return sorted(found)


def build_ancestors(graph: nx.DiGraph, task: str) -> list[str]:
    """The build tasks of the same arch and toolchain a task depends on, directly or not, in dependency order.

    A host task's are its host dependencies and the build machine's arch's stage-1 builds (its sysroot);
    a task of mlbuild's toolchain does not see the stage-1 builds that toolchain itself needed."""
    data = graph.nodes[task]
    arches = {HOST, graph.graph["machine_arch"]} if data["arch"] == HOST else {data["arch"]}
    ancestors = graph.subgraph(nx.ancestors(graph, task))
    return [node for node in nx.topological_sort(ancestors)
            if graph.nodes[node]["kind"] == "build" and graph.nodes[node]["arch"] in arches
            and graph.nodes[node]["toolchain"] == data["toolchain"]]


def to_dot(graph: nx.DiGraph, colours: dict[str, str] | None = None, legend: dict[str, str] | None = None) -> str:
    """DOT text of the graph; colours fills nodes ({task: colour}), legend explains them ({label: colour})."""
    shapes = {"fetch": "note", "build": "box", "target": "box3d", "images": "cylinder", "toolchain": "box3d"}
    lines = ["digraph mlbuild {", "  rankdir=LR;", "  node [fontname=Helvetica];"]
    for node, data in graph.nodes(data=True):
        fill = f', style=filled, fillcolor="{colours[node]}"' if colours and node in colours else ""
        lines.append(f'  "{node}" [shape={shapes.get(data["kind"], "ellipse")}{fill}];')  # a new kind: the default shape
    if legend:
        lines.append('  subgraph cluster_legend { label="next build"; fontname=Helvetica;')
        for label, colour in legend.items():
            lines.append(f'    "{label}" [shape=plaintext, style=filled, fillcolor="{colour}"];')
        lines.append("  }")
    for source, target in graph.edges:
        lines.append(f'  "{source}" -> "{target}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
