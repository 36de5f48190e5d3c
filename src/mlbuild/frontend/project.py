"""A loaded project: configuration, recipes, task graph and one step per task."""

import difflib
import threading
from functools import cached_property
from pathlib import Path

import networkx as nx

from mlbuild.errors import InputError
from mlbuild.model.arches import HOST, load_arches
from mlbuild.model.config import Settings
from mlbuild.model import external
from mlbuild.model.graph import build_graph
from mlbuild.model.recipes import declared_options, load_recipes
from mlbuild.engine.render_cache import RenderCache
from mlbuild.engine.run_logs import RunLogs, new_run_id
from mlbuild.code import code_hash
from mlbuild.engine.signature import tree_key
from mlbuild.sources.override import resolve as resolve_overrides
from mlbuild.engine.stamps import StampStore
from mlbuild.steps.base import Step
from mlbuild.steps.kinds import make_step


class Project:
    def __init__(self, root: Path, command_line: dict[str, str] | None = None, environ=None, local: dict | None = None):
        self.root = root.resolve()
        self.templates = self.root / "templates"
        self.settings = settings = Settings(self.root, command_line, environ, local)
        self.config = settings.config()
        self.build_dir = self.config.build_dir
        # What the target toolchain builds goes to a tree of its own per toolchain:
        # switching toolchains and back rebuilds nothing.
        toolchain = self.config.toolchain
        self.toolchain_suffix = "" if toolchain == "host" else f"@{toolchain}"
        self.target_build_dir = self.build_dir if toolchain == "host" else self.build_dir / f"toolchain-{toolchain}"
        target_dir = self.config.target_dir
        self.target_dir = target_dir if toolchain == "host" else target_dir.with_name(f"{target_dir.name}-{toolchain}")
        # External trees (external.py): their recipes replace ours by name, their templates are found first.
        self.trees = external.trees(self.root, self.config.external)
        self.template_dirs = external.template_dirs(self.trees)
        self.recipe_files = external.recipe_files(self.trees)
        # The arches (arches/<name>.toml, external trees' too), then the configuration's checked against them.
        self.arches = load_arches(external.arch_files(self.trees))
        self.config = self.config.model_copy(update={"arches": settings.arches(self.config, self.arches)})
        self.recipes = load_recipes(self.root, self.template_dirs, self.build_dir / "cache" / "recipes.json", self.recipe_files,
                                    self.arches)
        # The recipes' options, now that they are known: their values, and who declares each.
        self.declared_options = declared_options(self.recipes)
        self.options = settings.options(self.declared_options)
        # Local source overrides: checked now, so a wrong path stops the run before any task.
        self.overrides = resolve_overrides(self.config.override, self.recipes, self.root, self.build_dir)
        labels = {name: label for name, (_, label) in self.recipe_files.items()}
        self.graph: nx.DiGraph = build_graph(self.recipes, self.config, self.options, labels, self.arches)
        self.stamps = StampStore(self.build_dir / "state")
        self._artifact_cache = None  # made when a task first asks (artifact_cache)
        self._artifact_cache_lock = threading.Lock()
        self.steps: dict[str, Step] = {name: make_step(self, name, node) for name, node in self.graph.nodes(data=True)}
        for name in self.config.rebuild:
            if name not in self.steps:
                close = difflib.get_close_matches(name, list(self.steps), n=1)
                raise InputError(f"{settings.where('rebuild')}: rebuild: no task {name!r}" + (f" (did you mean {close[0]}?)" if close else "")
                                 + "; `doit list --all` shows them")

    def settings_line(self) -> str | None:
        """The first line of a run: the settings that differ from their defaults and where each comes from."""
        return self.settings.line(self.config, self.options, self.declared_options)

    def render_all(self) -> None:
        """Render every template now (cached), so a template error stops the run before any task.

        Each target's declared permissions too: two recipes declaring one path is an input error;
        and pass_environment, against the variables each build script gets from mlbuild."""
        for step in self.steps.values():
            step.check()

    @cached_property
    def render_cache(self) -> RenderCache:
        # Per task, the key is everything its templates see (signature.render_key); here, what renders them.
        code = code_hash("mlbuild.steps.build")
        # Each tree's templates by relative names and bytes, in search order: no absolute path in the key.
        key = tree_key(self.templates, code, *(tree_key(folder) for folder in self.template_dirs[:-1]))
        return RenderCache(self.build_dir / "cache" / "render.json", key)

    def recipe_folder(self, name: str) -> Path:
        """recipes/<name>/ of the tree the recipe comes from (its patches)."""
        return self.recipe_files[name][0].parent / name

    def recipe_label(self, name: str) -> str:
        """How messages name a recipe's file: recipes/<name>.toml, or ../my-layer/recipes/<name>.toml."""
        return self.recipe_files[name][1]

    @property
    def artifact_cache(self):
        """The artifact cache of the configuration (engine/cache/), one per loaded project, shared by doit's threads."""
        with self._artifact_cache_lock:
            if self._artifact_cache is None:
                from mlbuild.engine.cache import ArtifactCache  # zstandard and the backends: only when a task runs

                specs = self.config.cache
                if self.config.offline:  # offline opens no network connection: local caches only
                    specs = [spec for spec in specs if spec.removeprefix("ro:").startswith("file://")]
                from mlbuild.sources.transfer import Limits
                from mlbuild.engine.cache.signing import Trust

                self._artifact_cache = ArtifactCache(specs, self.build_dir / "cache" / "artifact-stats.json",
                                                     limits=Limits.of(self.config), trust=Trust.of(self.config, self.root))
            return self._artifact_cache

    def in_default_build(self, name: str) -> bool:
        """Whether `doit build` includes a task: not the LLVM toolchain unless the system is built with it."""
        kind, arch = self.graph.nodes[name]["kind"], self.graph.nodes[name]["arch"]
        if kind == "fetch":  # a source is needed when a build that is needed uses it (`doit fetch` gets nothing else)
            return any(self.in_default_build(user) for user in self.graph.successors(name))
        # A host recipe's sysroots of an arch the system is not built for are the toolchain's alone.
        return self.config.toolchain == "llvm" or (kind != "toolchain" and arch != HOST and arch in self.config.arches)

    def ordered_steps(self):
        return self._ordered_steps

    @cached_property
    def _ordered_steps(self) -> list:
        return [self.steps[name] for name in nx.lexicographical_topological_sort(self.graph)]

    def relative(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            for tree in self.trees[1:]:  # a file of an external tree: named as the configuration names the tree
                if Path(path).is_relative_to(tree.root):
                    return tree.label + str(Path(path).relative_to(tree.root))
            return str(path)

    @cached_property
    def run_logs(self) -> RunLogs:
        """This run's log folder (build/logs/runs/<run id>/), made when its first task starts."""
        return RunLogs(self.build_dir / "logs", new_run_id(), self.config.log_runs)

    def log_path(self, task: str) -> Path:
        """The newest log of a task (a link into the run that wrote it)."""
        return self.run_logs.link(task)

    def new_log(self, task: str) -> Path:
        """A new log for a task that starts now, kept in this run's folder; log_path(task) points at it."""
        return self.run_logs.new(task)
