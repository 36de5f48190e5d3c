"""What of the target tree goes into the images: `runtime` (what runs) or `full` (the whole sysroot).

target/<arch>/ is always the complete sysroot (headers and static libraries included: it is
what a compiler inside, or a chroot build, needs). A system without a compiler runs none of
that, so the runtime profile leaves out of the images what only a compiler or the boot loader
reads: headers, static libraries and objects, libtool/pkg-config/CMake files, linker maps
(System.map), manuals, the build records of share/mlbuild/ (what mlbuild cve reads on the build
machine), and the kernel image itself (QEMU is handed it with -kernel).
"""

import os
import shutil
from fnmatch import fnmatchcase
from pathlib import Path

PROFILES = ("runtime", "full")
# Left out of a runtime image: folders (with all they hold) and file name patterns.
DEVELOPMENT_FOLDERS = ("include", "lib/pkgconfig", "lib/cmake", "share/pkgconfig", "share/aclocal",
                       "share/man", "share/doc", "share/info", "share/mlbuild")
DEVELOPMENT_FILES = ("*.a", "*.o", "*.la", "*.map", "*.prl")


def resolve(project, arch: str) -> str:
    """The profile the configuration asks for; auto is full when a recipe in the arch's target
    needs the whole tree (image_profile = "full": a compiler inside the system)."""
    if project.config.image_profile != "auto":
        return project.config.image_profile
    from mlbuild.model.graph import target_task

    graph = project.graph
    components = [graph.nodes[task]["recipe"] for task in graph.predecessors(target_task(arch))]
    return "full" if any(project.recipes[name].image_profile == "full" for name in components) else "runtime"


def inputs(step) -> dict:
    """An images step's profile (this module's rules are in the images' code: steps/images.py imports it)."""
    profile = resolve(step.project, step.arch)
    if profile == "full":
        return {}  # as before profiles existed: the same signature, nothing repacked
    return {"image_profile": profile, "kernels": sorted(kernels(step))}


def kernels(step) -> set[str]:
    """The kernel images the target's recipes install (QEMU boots them with -kernel; the image need not hold them)."""
    target = step.project.steps[step.deps[0]]
    return {kernel for component in target.components if (kernel := component.recipe.kernel_for(step.arch))}


def _work(step) -> Path:
    return step.project.target_build_dir / "work" / f"images-{step.arch}-runtime"


def prepare(step, log) -> Path:
    """The tree the images pack: the target itself, or for the runtime profile a runtime tree made of it."""
    if resolve(step.project, step.arch) == "full":
        return step.root
    from mlbuild.trees import remove_tree

    tree = _work(step)
    remove_tree(tree)
    tree.parent.mkdir(parents=True, exist_ok=True)
    kept, dropped = runtime_tree(step.root, tree, kernels(step))
    log(f"image profile runtime: {kept} files packed, {dropped} left out (headers, static libraries, maps, kernel image)")
    return tree


def finish(step, packed: Path) -> None:
    """Remove the runtime tree prepare made, if it made one (hard links: it would keep an old target's files alive)."""
    from mlbuild.trees import remove_tree

    if packed != step.root:
        remove_tree(packed)


def left_out(relative: str, is_dir: bool, kernels: set[str]) -> bool:
    """Whether a path of the target stays out of a runtime image."""
    if relative in kernels:
        return True
    parts = relative.split("/")
    # include/ anywhere (usr/include, usr/lib/clang/<v>/include) and the other development folders, with or without usr/.
    if "include" in parts[:-1] or (is_dir and parts[-1] == "include"):
        return True
    bare = relative.removeprefix("usr/")
    if any(bare == folder or bare.startswith(folder + "/") for folder in DEVELOPMENT_FOLDERS):
        return True
    return not is_dir and any(fnmatchcase(parts[-1], pattern) for pattern in DEVELOPMENT_FILES)


def runtime_tree(target: Path, destination: Path, kernels: set[str]) -> tuple[int, int]:
    """Hard-link (or copy) what runs from target into destination; returns (files kept, files left out).

    A folder that only held what is left out is left out too; a folder that was empty stays
    (/proc, /dev, /tmp are mount points).
    """
    kept = dropped = 0
    destination.mkdir()
    shutil.copymode(target, destination)
    for folder, dirs, files in os.walk(target):
        relative_folder = Path(folder).relative_to(target)
        links = [name for name in dirs if Path(folder, name).is_symlink()]  # a link to a folder is a file here
        entered = []
        for name in sorted(set(dirs) - set(links)):
            relative = (relative_folder / name).as_posix()
            if left_out(relative, True, kernels):
                dropped += sum(len(names) for _, _, names in os.walk(Path(folder, name)))
                continue
            (destination / relative).mkdir()
            shutil.copymode(Path(folder, name), destination / relative)
            entered.append(name)
        dirs[:] = entered
        for name in sorted(files + links):
            relative = (relative_folder / name).as_posix()
            if left_out(relative, False, kernels):
                dropped += 1
                continue
            _link_or_copy(Path(folder, name), destination / relative)
            kept += 1
    _remove_emptied(target, destination)
    return kept, dropped


def _link_or_copy(source: Path, destination: Path) -> None:
    if source.is_symlink():
        destination.symlink_to(os.readlink(source))
        return
    try:
        os.link(source, destination)
    except OSError:  # another filesystem, or links not allowed: a copy does as well
        shutil.copy2(source, destination)


def _remove_emptied(target: Path, destination: Path) -> None:
    """Remove folders of destination that are empty only because what they held was left out."""
    for folder, dirs, files in os.walk(destination, topdown=False):
        path = Path(folder)
        if path == destination or any(path.iterdir()):
            continue
        if any((target / path.relative_to(destination)).iterdir()):
            path.rmdir()
