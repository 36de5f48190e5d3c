"""The user's post-build and post-image scripts (like Buildroot's BR2_ROOTFS_POST_BUILD_SCRIPT / POST_IMAGE_SCRIPT).

A hook is an executable file of the project, run from the project folder with the folder
it works on as $1 and this environment (docs/usage.md, "Customise your system"):

    ARCH, TRIPLE        the target's arch and triple
    TARGET_DIR          the system tree (post-build: being assembled, it becomes target/<arch>/)
    IMAGES_DIR          the images folder (post-image: being written, it becomes build/images/<arch>/)
    BUILD_DIR           the build folder (build/)
    PROJECT_DIR         the project
    IMAGE_PROFILE       runtime or full
    SOURCE_DATE_EPOCH   the fixed time of the build, for reproducible outputs
    MLBUILD_HOOK        post-build or post-image

Its content and mode are part of the task's signature: editing a hook reruns that task and
what follows. Its output goes to the task's log; a failure is one line naming the hook and the log.

Under `sandbox = on` (or auto where bubblewrap runs) a hook runs in the build scripts' sandbox
(mlbuild/sandbox.py): no network, / and the project, build and target folders read-only, and
writable only the folder it works on ($1) and a private /tmp. A hook is the project's code, but
what it does stays inside the tree it was given, as a build script's does.
"""

import os
from pathlib import Path

from mlbuild import sandbox
from mlbuild.errors import InputError, MlbuildError
from mlbuild.processes import run_in_group
from mlbuild.trees import hash_file

KEYS = {"post-build": "post_build", "post-image": "post_image"}


def scripts(project, kind: str) -> list[Path]:
    """The hooks of one kind, checked: each exists, is a file and is executable."""
    found = []
    for relative in getattr(project.config, KEYS[kind]):
        path = project.root / relative
        where = f"pyproject.toml [tool.mlbuild] {KEYS[kind]}: {relative}"
        if not path.is_file():
            raise InputError(f"{where}: expected a script file, found {'a folder' if path.is_dir() else 'nothing'}")
        if not os.access(path, os.X_OK):
            raise InputError(f"{where}: not executable (chmod +x {relative})")
        found.append(path)
    return found


def inputs(project, kind: str) -> dict:
    """The hooks' part of a signature: their order, content and mode."""
    return {f"hook:{kind}:{index}:{project.relative(path)}": f"{os.stat(path).st_mode & 0o7777:o} {hash_file(path)}"
            for index, path in enumerate(scripts(project, kind))}


def environment(project, kind: str, values: dict) -> dict:
    """What a hook sees besides PATH and HOME (the caller's): the fixed part and the step's values."""
    return {
        "LC_ALL": "C",
        "TZ": "UTC",
        "BUILD_DIR": str(project.build_dir),
        "PROJECT_DIR": str(project.root),
        "MLBUILD_HOOK": kind,
        **values,
    }


def run(project, kind: str, folder: Path, values: dict, task: str, log) -> None:
    """Run every hook of a kind on folder, in order; the first failure stops the task."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
            **environment(project, kind, values)}
    found = scripts(project, kind)
    prefix = _sandbox_prefix(project, folder, values) if found else []
    where = f" in the sandbox (no network; writable only {project.relative(folder)})" if prefix else ""
    for path in found:
        relative = project.relative(path)
        log(f"{kind} hook {relative}{where}")
        log.file.flush()
        status = run_in_group([*prefix, str(path), str(folder)], task, project.root, base, log.file)
        if status != 0:
            raise MlbuildError(f"{task}: {kind} hook {relative} failed (exit status {status}){where}; log: {log.path}")


def _sandbox_prefix(project, folder: Path, values: dict) -> list[str]:
    """bwrap's command line for a hook working on folder, or nothing when hooks run unsandboxed (sandbox = off)."""
    if not sandbox.enabled(project.config):
        return []
    # / is read-only in the sandbox already; these are bound again because the sandbox's private /tmp
    # would hide them when they live there. Only the folder the hook works on is writable.
    readable = [path for path in (project.root, project.build_dir, Path(values["TARGET_DIR"])) if path.is_dir()]
    return sandbox.command_prefix(hidden=[], readable=readable, writable=[folder], network=False)


def post_build_values(step, target_dir: Path) -> dict:
    """The post-build hooks' values of a target step assembling target_dir."""
    return _values(step, target_dir, step.project.target_build_dir / "images" / step.arch)


def post_image_values(step, images_dir: Path) -> dict:
    """The post-image hooks' values of an images step writing images_dir."""
    return _values(step, step.project.steps[step.deps[0]].output, images_dir)


def _values(step, target_dir: Path, images_dir: Path) -> dict:
    from mlbuild.system.image_profile import resolve
    from mlbuild.reproducible import SOURCE_DATE_EPOCH

    return {"ARCH": step.arch, "TRIPLE": step.project.arches[step.arch].triple, "TARGET_DIR": str(target_dir), "IMAGES_DIR": str(images_dir),
            "IMAGE_PROFILE": resolve(step.project, step.arch), "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}


def post_build(step, staging: Path, log) -> None:
    """The post-build hooks of a target step, on its staging folder (TARGET_DIR)."""
    run(step.project, "post-build", staging, post_build_values(step, staging), step.name, log)


def post_image(step, staging: Path, log) -> None:
    """The post-image hooks of an images step, on its staging folder (IMAGES_DIR)."""
    run(step.project, "post-image", staging, post_image_values(step, staging), step.name, log)
