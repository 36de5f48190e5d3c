"""External trees (`external`): folders outside the project with their own recipes/, arches/, templates/ and fragments/.

Like Buildroot's BR2_EXTERNAL or a Yocto layer. Named in the configuration relative to the
project, several allowed; a later tree wins over an earlier one and over the project:

- recipes: a recipe of the same name replaces the project's entirely (its patches are in
  its own tree's recipes/<name>/);
- arches: arches/<name>.toml adds an arch, or replaces the project's of the same name;
- templates: searched before the project's (jinja's loader path), the last tree first;
- fragments: fragments/<recipe>.config and <recipe>-<arch>.config apply like the project's,
  before them (the project's own, which menuconfig writes, come last and win).

Messages name files by their place relative to the project (`../my-layer/recipes/foo.toml`);
signatures never see a tree's absolute path, so a copy of project and trees elsewhere
rebuilds nothing.
"""

import re
from dataclasses import dataclass
from pathlib import Path

# Every tree's folder of config fragments (the project's too): fragments/<recipe>.config, fragments/<recipe>-<arch>.config.
FRAGMENTS = "fragments"
ARCHES_DIR = "arches"  # every tree's folder of arch files: arches/<name>.toml

from mlbuild.errors import InputError


@dataclass(frozen=True)
class Tree:
    root: Path  # absolute
    label: str  # how messages name its files: "" for the project, "../my-layer/" for an external tree

    @property
    def name(self) -> str:
        """A short name for files taken from it (fragments in $FILES): its folder's, in safe characters."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.root.name) or "external"


def trees(project_root: Path, external: list[str]) -> list[Tree]:
    """The project, then each external tree in configuration order; a missing folder is one line."""
    found = [Tree(project_root, "")]
    for value in external:
        root = (project_root / value).resolve()
        if not root.is_dir():
            what = "a file, not a folder" if root.exists() else "no such folder"
            raise InputError(f"configuration: external: {value}: {what} ({root}); "
                             "expected a folder with recipes/, arches/, templates/ or fragments/, relative to the project")
        if not any((root / part).is_dir() for part in ("recipes", ARCHES_DIR, "templates", FRAGMENTS)):
            raise InputError(f"configuration: external: {value}: expected recipes/, arches/, templates/ or fragments/ in it ({root})")
        found.append(Tree(root, value.rstrip("/") + "/"))
    return found


def recipe_files(all_trees: list[Tree]) -> dict[str, tuple[Path, str]]:
    """{recipe name: (its file, its label)}; a later tree's file of the same name replaces an earlier one's."""
    files = {}
    for tree in all_trees:
        for path in sorted((tree.root / "recipes").glob("*.toml")):
            files[path.stem] = (path, f"{tree.label}recipes/{path.name}")
    return dict(sorted(files.items()))


def arch_files(all_trees: list[Tree]) -> dict[str, tuple[Path, str]]:
    """{arch name: (its file, its label)}; a later tree's file of the same name replaces an earlier one's."""
    files = {}
    for tree in all_trees:
        for path in sorted((tree.root / ARCHES_DIR).glob("*.toml")):
            files[path.stem] = (path, f"{tree.label}{ARCHES_DIR}/{path.name}")
    return files


def template_dirs(all_trees: list[Tree]) -> tuple[Path, ...]:
    """jinja's search path: the last external tree's templates/ first, the project's last."""
    externals = [tree.root / "templates" for tree in reversed(all_trees[1:]) if (tree.root / "templates").is_dir()]
    return (*externals, all_trees[0].root / "templates")


def fragments(all_trees: list[Tree], recipe: str, arch: str) -> list[tuple[str, Path]]:
    """(name in $FILES, path) of the external trees' fragments for recipe on arch, in tree order.

    Named <tree>.<file>: a tree's linux.config and the project's own can both apply."""
    found, used = [], set()
    for tree in all_trees[1:]:
        for suffix in ("", f"-{arch}"):
            path = tree.root / FRAGMENTS / f"{recipe}{suffix}.config"
            if path.is_file():
                name = f"{tree.name}.{path.name}"
                while name in used:  # two trees in folders of the same name
                    name = f"_{name}"
                used.add(name)
                found.append((name, path))
    return found
