"""fetch:<recipe>: download (or take from the cache), verify, unpack and patch a source."""

import hashlib
import subprocess
from pathlib import Path

from ..errors import MlbuildError
from ..trees import remove_tree
from ..unpack import unpack
from .base import Step


class FetchStep(Step):
    # An unpacked source is the download cache's tarball plus patches: unpacking it
    # again is cheaper than moving a tree several times the tarball's size.
    artifact = False

    def __init__(self, project, name: str, recipe):
        super().__init__(project, name)
        self.recipe = recipe
        self.doc = f"download and unpack {recipe.name} {recipe.version}"

    @property
    def output(self) -> Path:
        return self.project.build_dir / "src" / self.recipe.name

    def _patches(self) -> list[Path]:
        folder = self.project.recipe_folder(self.recipe.name)
        return [folder / patch for patch in self.recipe.patches]

    def inputs(self) -> dict:
        # Any alternative gives the same release, so the set of checksums is the identity.
        return {
            "recipe.sources": sorted({source.sha256 for source in self.recipe.sources}),
            "recipe.strip_components": [source.strip_components for source in self.recipe.sources],
            **{f"file:{patch.name}": hashlib.sha256(patch.read_bytes()).hexdigest() for patch in self._patches()},
        }

    def run(self, staging: Path, log) -> None:
        config = self.project.config
        from ..download import fetch  # urllib and ssl: loaded when a source is fetched, not on a no-op

        # A line per downloaded file (size, time, rate) on the console too: downloads are the slow part of a fetch.
        archive = fetch(self.recipe, config.download_dir, config.mirrors, log, offline=config.offline,
                        say=lambda line: print(f"mlbuild: {line}", flush=True))
        self.fetched_sha256 = archive.parent.name
        source = next(s for s in self.recipe.sources if s.sha256 == self.fetched_sha256)
        staging.rmdir()
        log(f"unpacking {archive.name}")
        # unpack removes staging itself when it refuses the archive; a failed patch removes it here:
        # no half-unpacked or half-patched tree is ever left behind.
        unpack(archive, staging, source.strip_components, f"fetch:{self.recipe.name}: {archive.name}")
        try:
            for patch in self._patches():
                log(f"applying {patch.name}")
                result = subprocess.run(
                    ["patch", "-p1", "--batch", "--forward", "-d", str(staging), "-i", str(patch)],
                    stdout=log.file, stderr=subprocess.STDOUT,
                )
                if result.returncode != 0:
                    where = self.project.recipe_label(self.recipe.name).removesuffix(".toml")
                    raise MlbuildError(f"fetch:{self.recipe.name}: patch {where}/{patch.name} does not apply")
        except BaseException:
            remove_tree(staging)
            raise

    def output_hash(self, folder: Path) -> str:
        # The tree is a pure function of the tarball and the patches: hashing 1.5 GB of kernel is not needed.
        return hashlib.sha256(f"{self.fetched_sha256} {sorted(self.inputs().items())}".encode()).hexdigest()
