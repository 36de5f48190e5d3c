"""One run of a build script, resolved: the typed object between deciding what to build and running it.

steps/build.py turns a recipe into a BuildSpec (the rendered script, its files,
the outputs that make its sysroot, its environment, the sandbox around it);
this module puts a spec into its work folder and runs it. `mlbuild script`
writes the same spec out as plain shell. Nothing here knows about recipes.
"""

import os
import sys
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlbuild.steps.ccache import ccache_summary
from mlbuild.errors import MlbuildError
from mlbuild import jobserver
from mlbuild.processes import run_in_group, stop_leftover
from mlbuild.trees import merge_tree, remove_tree


@dataclass(frozen=True)
class BuildSpec:
    task: str
    script: str  # the rendered build script (bash -eu -o pipefail runs it)
    files: dict[str, str]  # name -> text, written to $FILES
    sysroot_parts: tuple[tuple[str, Path], ...]  # (task, output folder), merged into $SYSROOT in this order
    work: Path  # kept between runs: an interrupted build resumes there
    environment: dict[str, str]  # everything the script sees, nothing inherited
    sandbox: tuple[str, ...] = ()  # the command in front of bash (bwrap's), or nothing

    @property
    def script_path(self) -> Path:
        return self.work / "build.sh"

    @property
    def files_dir(self) -> Path:
        return self.work / "files"

    @property
    def sysroot(self) -> Path:
        return self.work / "sysroot"

    @property
    def stats_log(self) -> Path:
        return self.work / "ccache-stats.log"


def write_into_work(spec: BuildSpec) -> Path:
    """Write the script, the files and the sysroot into the work folder (stopping what a killed run left there); the script's path."""
    spec.work.mkdir(parents=True, exist_ok=True)
    stop_leftover(spec.work)
    remove_tree(spec.files_dir)
    spec.files_dir.mkdir()
    for name, text in spec.files.items():
        (spec.files_dir / name).write_text(text)
    # Copies, not hard links: a script writing into $SYSROOT must not change a dependency's output.
    remove_tree(spec.sysroot)
    spec.sysroot.mkdir()
    owners: dict[str, str] = {}
    for task, output in spec.sysroot_parts:
        merge_tree(output, spec.sysroot, task, owners)
    spec.script_path.write_text(spec.script)
    spec.stats_log.unlink(missing_ok=True)
    return spec.script_path


def run(spec: BuildSpec, log, describe_path=str) -> None:
    """Run the spec's script in its own process group (killed with everything it started on interrupt)."""
    script = write_into_work(spec)
    where = " in the sandbox (bubblewrap: no network; only its source, work and output folders)" if spec.sandbox else ""
    log(f"# running {describe_path(script)}{where} (log of the commands follows)")
    command = [*spec.sandbox, "bash", "-eu", "-o", "pipefail", str(script)]
    # In a run, make joins the run's one job pool (jobserver.py); the fds pass through bwrap as they are.
    pool = jobserver.current()
    environment = {**spec.environment, **jobserver.script_environment(pool, spec.environment.get("MLBUILD_PYTHON", sys.executable))}
    status = run_in_group(command, spec.task, spec.work, environment, log.file, spec.work / ".pgid",
                          pass_fds=pool.fds if pool else ())
    if status != 0:
        tail = "\n".join(log.tail(25))
        sandboxed = " in the sandbox (no network; only its source, work and output folders)" if spec.sandbox else ""
        raise MlbuildError(f"{spec.task}: build script failed (exit status {status}){sandboxed}; log: {log.path}\n{tail}")
    log(ccache_summary(spec.stats_log, spec.environment))


def run_on_terminal(spec: BuildSpec, action: str, action_environment: dict[str, str] | None = None) -> int:
    """Run the script with MLBUILD_ACTION=action (menuconfig, configure) on the caller's terminal; its exit status.

    action_environment: what the action's part of the script reads (menuconfig: where to leave .config)."""
    script = write_into_work(spec)
    environment = {**spec.environment, **(action_environment or {}), "MLBUILD_ACTION": action, "TERM": os.environ.get("TERM", "xterm")}
    for name in ("LINES", "COLUMNS"):
        if name in os.environ:
            environment[name] = os.environ[name]
    return subprocess.run(["bash", "-eu", "-o", "pipefail", str(script)], cwd=spec.work, env=environment).returncode
