"""The Step protocol: what every kind of task provides to the engine, the exports and the commands.

A kind of task is one subclass, registered by its graph kind (`class FetchStep(Step, kind="fetch")`).
Nothing outside asks a step which kind it is: the engine asks for its inputs, output and run; `mlbuild
script` for its shell form; the SBOM and legal-info for the components it ships; `mlbuild check` to
render what it renders. A kind that leaves out a member of the protocol is refused when its class is
made, in one line naming the class and what it lacks.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mlbuild.code import code_hash
from mlbuild.errors import MlbuildError
from mlbuild.trees import hash_tree


@dataclass(frozen=True)
class Component:
    """What a step puts into a system, as an SBOM, legal-info and the CVE report describe it."""

    recipe: object  # the recipe built: name, version, license, homepage, summary
    source_recipe: object  # the recipe whose source it is built from (itself, or the one `source =` names)
    source: object | None  # the source alternative in use (models.Source); None when built from a local override
    patches: tuple[Path, ...]  # applied in order
    override: object | None  # the local source override (sources/override.py), or None
    options: tuple[tuple[str, str], ...] = ()  # the recipe's options and the values it is built with
    # Its final Kconfig configuration (recipe `kconfig`), there once the step has run, and the fragments merged into it.
    configuration: Path | None = None
    fragments: tuple[str, ...] = ()  # the fragments' texts, in the order they are merged (a later one wins)
    output: Path | None = None  # the folder the step made (its build records: share/mlbuild/<recipe>/, mlbuild cve)


class Step(ABC):
    """A node of the task graph that produces one output folder."""

    kinds: ClassVar[dict[str, type["Step"]]] = {}  # graph kind -> class, filled as kinds are defined
    kind: ClassVar[str]

    # Built by the target toolchain: kept per toolchain, so results of both live side by side.
    per_toolchain: ClassVar[bool] = False
    # Whether its output is stored in and restored from the artifact cache (by signature).
    artifact: ClassVar[bool] = True
    # Whether its run holds one token of the run's job pool (jobserver.py): a task that computes does;
    # fetch does not (its unpack waits on the disk), so compiles go on while a large source unpacks.
    takes_job: ClassVar[bool] = True
    # The modules whose code does this kind's work; their import closure (code.py) is an input.
    # None: the module that defines the kind. () for kinds whose inputs already hold all that
    # decides the output (a build's rendered script; a source's checksums).
    code_roots: ClassVar[tuple[str, ...] | None] = None

    # Plain values most kinds leave as they are.
    recipe = None  # the recipe it fetches or builds
    override = None  # the local source override it copies (sources/override.py)
    script: str | None = None  # the build script, kept beside the stamp for `mlbuild explain`

    name: str  # the doit task name, e.g. build:musl-arm64
    doc: str  # first line shown by `doit list`

    def __init_subclass__(cls, kind: str | None = None, **keywords):
        super().__init_subclass__(**keywords)
        if kind is None:
            return  # an intermediate class: checked where a kind is named
        # (ABCMeta computes __abstractmethods__ only after this hook: ask each member itself.)
        missing = sorted(name for name in dir(cls) if getattr(getattr(cls, name, None), "__isabstractmethod__", False))
        if missing:
            raise MlbuildError(f"{cls.__module__}.{cls.__qualname__}: a kind of step must implement "
                               f"{', '.join(missing)} (the Step protocol, src/mlbuild/steps/base.py)")
        cls.kind = kind
        Step.kinds[kind] = cls

    def __init__(self, project, name: str, node: dict):
        """node: the task graph's data of this task (kind, arch, recipe, toolchain)."""
        self.project = project
        self.name = name

    # --- what it needs and makes -------------------------------------------------------------

    @property
    def deps(self) -> list[str]:
        return sorted(self.project.graph.predecessors(self.name))

    @property
    @abstractmethod
    def output(self) -> Path:
        """The folder it makes."""

    @property
    def work(self) -> Path | None:
        """A folder kept between runs so an interrupted build resumes (None: none needed)."""
        return None

    @property
    def host_tools(self) -> list[str]:
        """Programs of the build machine this step runs (checked before the build starts)."""
        return []

    @property
    def options(self) -> dict:
        """The recipe options this task reacts to, with their values now."""
        return {}

    @property
    def stamp(self) -> str:
        """The key of this step's stamp (its task name, plus the toolchain where that applies)."""
        return self.name + self.project.toolchain_suffix if self.per_toolchain else self.name

    @property
    def input_name(self) -> str:
        """How dependents' inputs name this step: its task name, whatever toolchain builds the system."""
        return self.name

    # --- what decides it ---------------------------------------------------------------------

    def inputs(self) -> dict:
        """Everything that decides the output, as JSON values; their hash is the signature."""
        return {**self.own_inputs(), **self.code_input(), **self.dep_inputs()}

    @abstractmethod
    def own_inputs(self) -> dict:
        """This kind's own inputs (recipe fields, rendered files, arch…), as JSON values."""

    def code_input(self) -> dict:
        """The hash of the code that does the work (code_roots), derived from its imports."""
        roots = (type(self).__module__,) if self.code_roots is None else self.code_roots
        return {"code": code_hash(*roots)} if roots else {}

    def dep_inputs(self) -> dict:
        """Each dependency's output hash: a dependency rebuilt to the same bytes changes nothing."""
        stamps, steps = self.project.stamps, self.project.steps
        return {f"dep:{steps[dep].input_name}": (stamps.read(steps[dep].stamp) or {}).get("output_hash", "not built") for dep in self.deps}

    def output_hash(self, folder: Path, file_hash=None) -> str:
        """file_hash: the content hashes known already (a restore has verified every file's sha256)."""
        return hash_tree(folder, file_hash=file_hash)

    def known_output_hash(self) -> str | None:
        """The output hash when the inputs alone decide it (a source's identity), else None.

        The up-to-date decision checks the stamp against it: a stamp written by an mlbuild that
        computed it another way would otherwise go on giving dependents a signature no other tree
        has, so their artifact cache entries would never be shared."""
        return None

    def check(self, fresh: bool = False) -> int:
        """Render and validate what it will use now, so errors come before any task runs.

        fresh: render anew rather than trust the render cache (`mlbuild check`). Returns the number of files rendered."""
        return 0

    # --- what it does ------------------------------------------------------------------------

    @abstractmethod
    def run(self, staging: Path, log) -> None:
        """Make the output in staging (the engine commits it, then the stamp)."""

    def restore_modes(self, folder: Path) -> None:
        """After a restore from the artifact cache (which drops set-id bits): set the modes this step's inputs declare."""

    # --- how it is shown outside mlbuild -----------------------------------------------------

    @abstractmethod
    def shell(self, script) -> str:
        """Its part of `mlbuild script`: the same work as plain shell (script: exports/script.py's ShellScript)."""

    @abstractmethod
    def bill_of_materials(self) -> list[Component]:
        """The components it puts into a system (the SBOM and legal-info list them); [] when it ships none itself."""
