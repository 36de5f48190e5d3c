"""build:<recipe>-<arch>: render the recipe's build script and run it in a clean environment."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from functools import cached_property
from pathlib import Path

from ..arches import ARCHES, HOST, host_arch
from ..errors import MlbuildError
from ..graph import build_ancestors, fetch_task
from ..processes import run_in_group, stop_leftover
from .. import remote_compile, sandbox
from ..render import render
from ..state import merge_tree, remove_tree
from ..toolchain import llvm_bin, toolchain_identity
from .base import Step

# Fixed for reproducible output and for ccache hits (kernel and busybox embed them).
SOURCE_DATE_EPOCH = "1672531200"  # 2023-01-01 00:00:00 UTC
BUILD_ENVIRONMENT = {
    "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
    "KBUILD_BUILD_TIMESTAMP": "Sun Jan  1 00:00:00 UTC 2023",
    "KBUILD_BUILD_USER": "mlbuild",
    "KBUILD_BUILD_HOST": "mlbuild",
    "KBUILD_BUILD_VERSION": "1",
    "LC_ALL": "C",
    "TZ": "UTC",
    "TERM": "dumb",
    "PYTHONHASHSEED": "0",  # generators written in Python iterate sets in a fixed order
}
# Every build runs under this umask, whatever the builder's (dodo_support sets it for the
# whole run): outputs, the target tree and the images get 0755/0644, never 0700/0600.
BUILD_UMASK = 0o022


def script_context(recipe, merged, arch: str, config, user_fragments: list[Path], options: dict) -> dict:
    """What build scripts and config fragments see. No absolute project paths: moving the tree changes nothing.

    options: the values of the options the recipe declares (and those alone: a template reading another fails)."""
    facts = host_arch() if arch == HOST else ARCHES[arch]
    return {
        "recipe": recipe,
        "arch": arch,
        "triple": facts.triple,
        "karch": facts.karch,
        "vars": merged.vars,
        "files": [_file_name(name) for name in merged.files] + [path.name for path in user_fragments],
        "options": options,
        "config": {
            "llvm_version": config.llvm_version,
            # What compiles this script: host recipes are always built by the host's LLVM.
            "toolchain": "host" if arch == HOST else config.toolchain,
        },
    }


def option_text(value: bool | str) -> str:
    """An option's value as it is written in the configuration (true, qemu)."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def _file_name(template: str) -> str:
    return Path(template).name.removesuffix(".j2")


class BuildStep(Step):
    def __init__(self, project, name: str, recipe, arch: str):
        super().__init__(project, name)
        self.recipe = recipe
        self.arch = arch
        self.options = {name: project.options[name] for name in recipe.options}
        shown = ", ".join(f"{name}={option_text(value)}" for name, value in self.options.items())
        self.doc = f"build {recipe.name} {recipe.version} for {arch}" + (f" ({shown})" if shown else "")

    @property
    def is_host(self) -> bool:
        return self.arch == HOST

    @property
    def slug(self) -> str:
        return f"{self.recipe.name}-{self.arch}"

    @property
    def per_toolchain(self) -> bool:
        return not self.is_host

    @property
    def host_tools(self) -> list[str]:
        return ["bash", "ccache", *self.recipe.tools]

    @property
    def tree(self) -> Path:
        return self.project.build_dir if self.is_host else self.project.target_build_dir

    @property
    def output(self) -> Path:
        return self.tree / "out" / self.slug

    @property
    def work(self) -> Path:
        return self.tree / "work" / self.slug

    @cached_property
    def merged(self):
        """The recipe's depends, files and vars for this arch."""
        return self.recipe.for_arch(self.arch)

    @cached_property
    def context(self) -> dict:
        return script_context(self.recipe, self.merged, self.arch, self.project.config, self.user_fragments, self.options)

    @cached_property
    def user_fragments(self) -> list[Path]:
        """The user's own config fragments: those named in the configuration, then
        fragments/<recipe>.config and fragments/<recipe>-<arch>.config if present
        (where `doit menuconfig:<recipe>-<arch>` saves changes)."""
        root = self.project.root
        named = [root / name for name in self.project.config.fragments.get(self.recipe.name, [])]
        for path in named:
            if not path.is_file():
                raise MlbuildError(f"configuration: fragments.{self.recipe.name}: no file {self.project.relative(path)}")
        found = [root / "fragments" / f"{self.recipe.name}{suffix}.config" for suffix in ("", f"-{self.arch}")]
        return named + [path for path in found if path.is_file()]

    @cached_property
    def script(self) -> str:
        return render(self.project.templates, f"build/{self.recipe.build}.sh.j2", self.context, for_shell=True)

    @cached_property
    def files(self) -> dict[str, str]:
        """Config files for $FILES: rendered recipe files, then the user's own fragments as they are."""
        rendered = {
            _file_name(name): render(self.project.templates, name, self.context)
            for name in self.merged.files
        }
        for path in self.user_fragments:
            rendered[path.name] = self._read_fragment(path)
        return rendered

    def _read_fragment(self, path: Path) -> str:
        """A user's fragment as it is; a file that cannot be read or is not text is one line naming it."""
        try:
            return path.read_text()
        except UnicodeDecodeError as error:
            raise MlbuildError(f"{self.project.relative(path)}: not UTF-8 text (byte {error.start})") from None
        except OSError as error:
            raise MlbuildError(f"{self.project.relative(path)}: cannot read: {error.strerror}") from None

    @cached_property
    def _recipe_fields(self) -> dict:
        # Sources and patches are the fetch task's inputs; vars, files and depends come merged
        # for the arch; menuconfig only adds a task. Fields left at their defaults are left
        # out, so a new recipe field (with a default) rebuilds nothing.
        not_here = self.recipe.DOC_FIELDS | {"sources", "source", "patches", "arch", "arches", "files", "vars", "depends", "menuconfig", "tools"}
        return self.recipe.model_dump(mode="json", exclude=not_here, exclude_defaults=True)

    def inputs(self) -> dict:
        recipe = self._recipe_fields
        merged = self.merged
        return {
            **{f"recipe:{key}": value for key, value in recipe.items()},
            "recipe:vars": merged.vars,
            "recipe:depends": merged.depends,
            "arch": self.arch,
            "environment": BUILD_ENVIRONMENT,
            **self.rendered_hashes,
            "toolchain": toolchain_identity(self.project.config, self.is_host),
            **self.dep_inputs(),
        }

    @cached_property
    def rendered_hashes(self) -> dict:
        """Hashes of the script and config files, from the render cache when nothing they depend on changed."""
        fragments = b"\0".join(path.name.encode() + b"\0" + path.read_bytes() for path in self.user_fragments)
        options = json.dumps(self.options, sort_keys=True).encode()  # what the script may read besides the recipe
        key = hashlib.sha256(self.recipe.model_dump_json().encode() + self.arch.encode() + b"\0" + fragments + b"\0" + options).hexdigest()
        hashes = self.project.render_cache.get(self.name, key)
        if hashes is None:
            hashes = {
                "script": hashlib.sha256(self.script.encode()).hexdigest(),
                **{f"file:{name}": hashlib.sha256(text.encode()).hexdigest() for name, text in self.files.items()},
            }
            self.project.render_cache.put(self.name, key, hashes)
        return hashes

    def run(self, staging: Path, log) -> None:
        script, environment = self.prepare(staging)
        log(f"# running {self.project.relative(script)} (log of the commands follows)")
        _run_script(script, self.work, environment, log, self.name, self._sandbox_prefix(staging, environment))
        log(_ccache_summary(Path(environment["CCACHE_STATSLOG"]), environment))

    def _sandbox_prefix(self, staging: Path, environment: dict) -> list[str]:
        """bwrap's command line when build scripts run sandboxed (sandbox.py), else nothing.

        Declared: the source (read-only), the work folder with the dependencies' outputs in its sysroot,
        the output and the ccache (writable); mlbuild's Python and the toolchain (read-only)."""
        config = self.project.config
        if not sandbox.enabled(config):
            return []
        ccache = Path(environment["CCACHE_DIR"])
        ccache.mkdir(parents=True, exist_ok=True)
        return sandbox.command_prefix(
            hidden=[self.project.root, config.build_dir, config.target_dir, config.toolchain_dir, config.download_dir],
            readable=[Path(environment["SRC"]), Path(environment["PYTHONPATH"]), Path(sys.prefix), Path(environment["LLVM_BIN"]).parent],
            writable=[self.work, staging, ccache],
            # distcc and a ccache remote storage talk to other machines.
            network=bool(getattr(config, "distcc_hosts", "") or getattr(config, "ccache_remote_storage", "")),
        )

    def run_action(self, action: str) -> int:
        """Run the script with MLBUILD_ACTION=action (menuconfig, configure) on the caller's terminal.

        Nothing is committed: such a run never makes the task up to date."""
        with tempfile.TemporaryDirectory(dir=self.project.build_dir) as staging:
            script, environment = self.prepare(Path(staging))
            environment.update(MLBUILD_ACTION=action, TERM=os.environ.get("TERM", "xterm"))
            for name in ("LINES", "COLUMNS"):
                if name in os.environ:
                    environment[name] = os.environ[name]
            return subprocess.run(["bash", "-eu", "-o", "pipefail", str(script)], cwd=self.work, env=environment).returncode

    def prepare(self, staging: Path) -> tuple[Path, dict]:
        """Write the script, the config files and the sysroot into the work folder; the script's environment."""
        work = self.work
        work.mkdir(parents=True, exist_ok=True)
        stop_leftover(work)
        files = work / "files"
        remove_tree(files)
        files.mkdir()
        for name, text in self.files.items():
            (files / name).write_text(text)
        sysroot = work / "sysroot"
        self._assemble_sysroot(sysroot)
        script = work / "build.sh"
        script.write_text(self.script)
        stats_log = work / "ccache-stats.log"
        stats_log.unlink(missing_ok=True)
        return script, self._environment(staging, sysroot, files, stats_log)

    def _assemble_sysroot(self, sysroot: Path) -> None:
        """The union of the outputs of every build task this one depends on.

        Copies, not hard links: a script writing into $SYSROOT must not change a dependency's output."""
        remove_tree(sysroot)
        sysroot.mkdir()
        owners: dict[str, str] = {}
        for dep in build_ancestors(self.project.graph, self.name):
            merge_tree(self.project.steps[dep].output, sysroot, dep, owners)

    def _environment(self, staging: Path, sysroot: Path, files: Path, stats_log: Path) -> dict:
        config = self.project.config
        tools = llvm_bin(config, self.is_host)
        package_root = Path(__file__).resolve().parents[2]
        return {
            **BUILD_ENVIRONMENT,
            "PATH": f"{tools}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.work),
            "SRC": str(self.project.steps[fetch_task(self.recipe)].output),
            "WORK": str(self.work),
            "OUT": str(staging),
            "SYSROOT": str(sysroot),
            "FILES": str(files),
            "JOBS": str(remote_compile.jobs(config)),  # more with distcc hosts
            "LLVM_BIN": str(tools),
            "MLBUILD_PYTHON": sys.executable,
            "MLBUILD_TASK": self.name,
            "PREFIX_MAP_FLAGS": prefix_map_flags(self.recipe.name, self.project.steps[fetch_task(self.recipe)].output,
                                                 self.work, sysroot),
            "PYTHONPATH": str(package_root),
            **ccache_environment(self.project),
            "CCACHE_STATSLOG": str(stats_log),
        }


def prefix_map_flags(name: str, source: Path, work: Path, sysroot: Path) -> str:
    """clang flags that write fixed paths instead of this checkout's into objects (debug info, __FILE__).

    For every compile (the templates add $PREFIX_MAP_FLAGS to CC, HOSTCC, KCFLAGS and CMake's
    flags): two checkouts in different folders then give the same objects, with or without
    ccache. clang applies the longest matching prefix, so the sysroot inside the work folder
    maps to / whatever the order. Only folders that are the same on every run of the task:
    the kernel's make redoes its configuration when HOSTCC changes.
    """
    return " ".join(f"-ffile-prefix-map={path}={fixed}" for path, fixed in (
        (source, f"/usr/src/{name}"), (work, f"/usr/obj/{name}"), (sysroot, ""),
    ))


def ccache_environment(project) -> dict:
    """ccache for every build: one cache, paths relative to the project (hits in another checkout too)."""
    return {
        "CCACHE_DIR": str(project.config.ccache_dir),
        "CCACHE_BASEDIR": str(project.root),
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_COMPILERCHECK": "content",
        **remote_compile.environment(project.config),
    }


def _run_script(script: Path, cwd: Path, environment: dict, log, task: str, prefix: list[str] = ()) -> None:
    """bash -eu -o pipefail (behind prefix: the sandbox) in its own process group, killed with everything it started on interrupt."""
    status = run_in_group([*prefix, "bash", "-eu", "-o", "pipefail", str(script)], task, cwd, environment, log.file, cwd / ".pgid")
    if status != 0:
        tail = "\n".join(log.tail(25))
        sandboxed = " in the sandbox (no network; only its source, work and output folders)" if prefix else ""
        raise MlbuildError(f"{task}: build script failed (exit status {status}){sandboxed}; log: {log.path}\n{tail}")


def _ccache_summary(stats_log: Path, environment: dict) -> str:
    if not stats_log.exists():
        return "# ccache: no compilations"
    result = subprocess.run(["ccache", "--show-log-stats", "-v"], env=environment, capture_output=True, text=True)
    counts = {}
    for line in result.stdout.splitlines():
        words = line.split()
        for key in ("Hits:", "Misses:"):
            if line.strip().startswith(key) and len(words) >= 2 and words[1].isdigit():
                counts.setdefault(key[:-1].lower(), words[1])
    return f"# ccache: {counts.get('hits', '?')} hits, {counts.get('misses', '?')} misses"
