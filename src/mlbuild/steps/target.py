"""build:target-<arch>: the complete system folder, assembled from each component's own output.

Assembled anew each time, so a component rebuilt with fewer files leaves nothing stale.
"""

import hashlib
import os
from functools import cached_property
from pathlib import Path

from ..arches import ARCHES
from ..errors import MlbuildError
from ..render import render
from ..state import merge_tree
from .base import Step, code_hash

# Folders every system has even when no component installs into them.
SKELETON = ("dev", "proc", "sys", "tmp", "root", "mnt", "etc", "var", "run")
# Modes the system needs beyond the normal 0755/0644 (which the images give every other file).
SKELETON_MODES = {"tmp": 0o1777}


class TargetStep(Step):
    def __init__(self, project, name: str, arch: str):
        super().__init__(project, name)
        self.arch = arch
        self.doc = f"assemble the {arch} system in {project.relative(self.output)}/"

    per_toolchain = True

    @property
    def output(self) -> Path:
        return self.project.target_dir / self.arch

    @cached_property
    def etc_files(self) -> dict[str, str]:
        """templates/target/** rendered; the path below target/ is the path in the system."""
        folder = self.project.templates / "target"
        context = {
            "arch": self.arch,
            "triple": ARCHES[self.arch].triple,
            "console": ARCHES[self.arch].console,
            "versions": self.versions,
        }
        rendered = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                relative = path.relative_to(self.project.templates).as_posix()
                rendered[path.relative_to(folder).as_posix().removesuffix(".j2")] = render(self.project.templates, relative, context)
        return rendered

    @property
    def components(self) -> list:
        return [self.project.steps[dep] for dep in self.deps]

    @cached_property
    def versions(self) -> dict[str, str]:
        return {step.recipe.name: step.recipe.version for step in self.components}

    def inputs(self) -> dict:
        return {
            "arch": self.arch,
            "code": code_hash(__name__),
            **{f"file:{name}": hashlib.sha256(text.encode()).hexdigest() for name, text in self.etc_files.items()},
            **self.dep_inputs(),
        }

    def run(self, staging: Path, log) -> None:
        owners: dict[str, str] = {}
        for step in self.components:
            log(f"adding {step.recipe.name} from {self.project.relative(step.output)}")
            merge_tree(step.output, staging, step.name, owners)
        for name in SKELETON:
            (staging / name).mkdir(exist_ok=True)
        for name, mode in SKELETON_MODES.items():
            os.chmod(staging / name, mode)
        for name, text in self.etc_files.items():
            path = staging / name
            if name in owners:
                raise MlbuildError(f"{self.name}: templates/target/{name} would overwrite a file of {owners[name]}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            # Scripts under etc/init.d are run by init: make them executable.
            os.chmod(path, 0o755 if "/init.d/" in f"/{name}" else 0o644)
        log(f"{len(owners)} files from {len(self.components)} components")

