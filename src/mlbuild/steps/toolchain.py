"""build:toolchain: the LLVM built from source (host recipes), gathered into toolchain/."""

from pathlib import Path

from ..trees import merge_tree
from ..signature import code_hash
from .base import Step


class ToolchainStep(Step):
    def __init__(self, project, name: str):
        super().__init__(project, name)
        self.doc = f"gather the LLVM toolchain built from source in {project.relative(self.output)}/"

    @property
    def output(self) -> Path:
        return self.project.config.toolchain_dir

    def inputs(self) -> dict:
        return {"code": code_hash(__name__), **self.dep_inputs()}

    def run(self, staging: Path, log) -> None:
        owners: dict[str, str] = {}
        for dep in self.deps:
            log(f"adding {dep}")
            merge_tree(self.project.steps[dep].output, staging, dep, owners)
