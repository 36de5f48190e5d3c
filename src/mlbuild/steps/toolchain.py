"""build:toolchain: the LLVM built from source (host recipes), gathered into toolchain/,
with a sysroot per target arch (<triple>/: the host recipes' sysroots, built by stage 1)."""

from pathlib import Path

from mlbuild.model.arches import HOST
from mlbuild.trees import check_no_link_on_the_way, merge_tree
from mlbuild.steps.base import Step


class ToolchainStep(Step, kind="toolchain"):
    def __init__(self, project, name: str, node: dict):
        super().__init__(project, name, node)
        self.doc = f"gather the LLVM toolchain built from source in {project.relative(self.output)}/"

    @property
    def output(self) -> Path:
        return self.project.config.toolchain_dir

    def own_inputs(self) -> dict:
        return {}  # its code and its dependencies' outputs (Step.inputs)

    def bill_of_materials(self) -> list:
        return []  # the toolchain is not part of a system

    def shell(self, script) -> str:
        staging = self.output.with_name(f".{self.output.name}.staging")
        out = [f"rm -rf {script.path(staging)}\nmkdir -p {script.path(staging)}\n"]
        for dep in self.deps:
            arch = self.project.steps[dep].arch
            destination = staging if arch == HOST else staging / self.project.arches[arch].triple
            out.append(f"mkdir -p {script.path(destination)}\n{script.COPY} {script.path(self.project.steps[dep].output)}/. {script.path(destination)}/\n")
        out.append(f"rm -rf {script.path(self.output)}\nmv {script.path(staging)} {script.path(self.output)}\n")
        return "".join(out)

    def run(self, staging: Path, log) -> None:
        owners: dict[Path, dict[str, str]] = {}  # per folder: which task brought each path
        for dep in self.deps:
            arch = self.project.steps[dep].arch
            # A host recipe's output is the toolchain itself; a stage-1 build goes into its arch's sysroot.
            destination = staging if arch == HOST else staging / self.project.arches[arch].triple
            log(f"adding {dep}" + ("" if arch == HOST else f" to {destination.name}/"))
            if arch != HOST:  # a host recipe's link there must not take the sysroot elsewhere
                check_no_link_on_the_way(staging, destination.name, dep, owners.setdefault(staging, {}), itself=True)
            destination.mkdir(exist_ok=True)
            merge_tree(self.project.steps[dep].output, destination, dep, owners.setdefault(destination, {}))
