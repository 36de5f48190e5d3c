"""What every kind of task provides to the incremental engine."""

from pathlib import Path

from mlbuild.trees import hash_tree


class Step:
    """A node of the task graph that produces one output folder."""

    name: str  # the doit task name, e.g. build:musl-arm64
    doc: str  # first line shown by `doit list`

    # Built by the target toolchain: kept per toolchain, so results of both live side by side.
    per_toolchain = False

    # Whether its output is stored in and restored from the artifact cache (by signature).
    artifact = True

    def __init__(self, project, name: str):
        self.project = project
        self.name = name

    @property
    def stamp(self) -> str:
        """The key of this step's stamp (its task name, plus the toolchain where that applies)."""
        return self.name + self.project.toolchain_suffix if self.per_toolchain else self.name

    @property
    def deps(self) -> list[str]:
        return sorted(self.project.graph.predecessors(self.name))

    @property
    def output(self) -> Path:
        raise NotImplementedError

    @property
    def work(self) -> Path | None:
        """A folder kept between runs so an interrupted build resumes (None: none needed)."""
        return None

    @property
    def host_tools(self) -> list[str]:
        """Programs of the build machine this step runs (checked before the build starts)."""
        return []

    def inputs(self) -> dict:
        """Everything that decides the output, as JSON values; their hash is the signature."""
        raise NotImplementedError

    @property
    def input_name(self) -> str:
        """How dependents' inputs name this step: its task name, whatever toolchain builds the system."""
        return self.name

    def dep_inputs(self) -> dict:
        """Each dependency's output hash: a dependency rebuilt to the same bytes changes nothing."""
        stamps, steps = self.project.stamps, self.project.steps
        return {f"dep:{steps[dep].input_name}": (stamps.read(steps[dep].stamp) or {}).get("output_hash", "not built") for dep in self.deps}

    def run(self, staging: Path, log) -> None:
        raise NotImplementedError

    def output_hash(self, folder: Path, file_hash=None) -> str:
        """file_hash: the content hashes known already (a restore has verified every file's sha256)."""
        return hash_tree(folder, file_hash=file_hash)

    def known_output_hash(self) -> str | None:
        """The output hash when the inputs alone decide it (a source's identity), else None.

        The up-to-date decision checks the stamp against it: a stamp written by an mlbuild that
        computed it another way would otherwise go on giving dependents a signature no other tree
        has, so their artifact cache entries would never be shared."""
        return None

    def restore_modes(self, folder: Path) -> None:
        """After a restore from the artifact cache (which drops set-id bits): set the modes this step's inputs declare."""
