"""build:<recipe>-<arch>: a recipe rendered into a build spec (build_spec.py runs it); its inputs."""

import hashlib
import sys
import tempfile
from functools import cached_property
from pathlib import Path

from mlbuild.model.arches import ARCHES, HOST, host_arch
from mlbuild.steps.build_spec import BuildSpec, run, run_on_terminal
from mlbuild.steps.ccache import ccache_environment
from mlbuild.errors import MlbuildError
from mlbuild.model.graph import build_ancestors, build_task, fetch_task
from mlbuild.model import external
from mlbuild import sandbox
from mlbuild.steps import distcc
from mlbuild.render import render
from mlbuild.engine.run_logs import Log
from mlbuild.reproducible import BUILD_ENVIRONMENT, passed_through, prefix_map_flags
from mlbuild.engine.signature import render_key
from mlbuild.steps.compiler import llvm_bin, toolchain_identity
from mlbuild.steps.base import Step


def script_context(recipe, merged, arch: str, config, fragment_names: list[str], options: dict, toolchain: str) -> dict:
    """What build scripts and config fragments see. No absolute project paths: moving the tree changes nothing.

    options: the values of the options the recipe declares (and those alone: a template reading another fails).
    toolchain: what compiles this script (host recipes and their sysroots: always the host's LLVM)."""
    facts = host_arch() if arch == HOST else ARCHES[arch]
    return {
        "recipe": recipe,
        "arch": arch,
        "triple": facts.triple,
        "karch": facts.karch,
        "vars": merged.vars,
        "files": [_file_name(name) for name in merged.files] + fragment_names,
        "options": options,
        "config": {
            "llvm_version": config.llvm_version,
            "toolchain": toolchain,
        },
        # A host recipe's sysroots: the triple of each arch build:toolchain ships one for.
        "sysroot_triples": [known.triple for known in ARCHES.values()] if recipe.sysroots else [],
    }


def option_text(value: bool | str) -> str:
    """An option's value as it is written in the configuration (true, qemu)."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def _file_name(template: str) -> str:
    return Path(template).name.removesuffix(".j2")


class BuildStep(Step):
    def __init__(self, project, name: str, recipe, arch: str, toolchain: str):
        super().__init__(project, name)
        self.recipe = recipe
        self.arch = arch
        self.toolchain = toolchain  # host: the host's LLVM (stage 1); llvm: mlbuild's own (build:toolchain)
        self.options = {name: project.options[name] for name in recipe.options}
        shown = ", ".join(f"{name}={option_text(value)}" for name, value in self.options.items())
        self.doc = f"build {recipe.name} {recipe.version} for {arch}" + (f" ({shown})" if shown else "")
        if toolchain != project.config.toolchain:  # a sysroot of build:toolchain, while the system uses that toolchain
            self.doc += ", by the host's LLVM (stage 1) for build:toolchain"

    @property
    def slug(self) -> str:
        return f"{self.recipe.name}-{self.arch}"

    @property
    def input_name(self) -> str:
        """A stage-1 task (build:<recipe>-<arch>@host) is the host toolchain's task of that name: same inputs…"""
        return build_task(self.recipe.name, self.arch)

    @property
    def stamp(self) -> str:
        """…same stamp (and output): switching toolchains rebuilds none of them."""
        return self.input_name + ("" if self.toolchain == "host" else f"@{self.toolchain}")

    @property
    def host_tools(self) -> list[str]:
        return ["bash", "ccache", *self.recipe.tools]

    @property
    def tree(self) -> Path:
        return self.project.build_dir if self.toolchain == "host" else self.project.target_build_dir

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
        return script_context(self.recipe, self.merged, self.arch, self.project.config,
                              [name for name, _ in self.fragment_files], self.options, self.toolchain)

    @cached_property
    def fragment_files(self) -> list[tuple[str, Path]]:
        """(name in $FILES, path) of the user's own config fragments, applied in this order: the external
        trees' fragments/ (external.py), those named in the configuration, then fragments/<recipe>.config
        and fragments/<recipe>-<arch>.config if present (where `doit menuconfig:<recipe>-<arch>` saves changes)."""
        root = self.project.root
        named = [root / name for name in self.project.config.fragments.get(self.recipe.name, [])]
        for path in named:
            if not path.is_file():
                raise MlbuildError(f"configuration: fragments.{self.recipe.name}: no file {self.project.relative(path)}")
        found = [root / "fragments" / f"{self.recipe.name}{suffix}.config" for suffix in ("", f"-{self.arch}")]
        own = [(path.name, path) for path in named + [path for path in found if path.is_file()]]
        return external.fragments(self.project.trees, self.recipe.name, self.arch) + own

    @property
    def user_fragments(self) -> list[Path]:
        return [path for _, path in self.fragment_files]

    @cached_property
    def script(self) -> str:
        return render(self.project.template_dirs, f"build/{self.recipe.build}.sh.j2", self.context, for_shell=True)

    @cached_property
    def files(self) -> dict[str, str]:
        """Config files for $FILES: rendered recipe files, then the user's own fragments as they are."""
        rendered = {
            _file_name(name): render(self.project.template_dirs, name, self.context)
            for name in self.merged.files
        }
        for name, path in self.fragment_files:
            rendered[name] = self._read_fragment(path)
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
        # for the arch; menuconfig only adds a task; permissions are applied by the target and
        # the images, never by the build. Fields left at their defaults are left out, so a new
        # recipe field (with a default) rebuilds nothing.
        not_here = self.recipe.DOC_FIELDS | {"sources", "source", "patches", "arch", "arches", "files", "vars", "depends",
                                             "menuconfig", "tools", "permissions"}
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
            "toolchain": toolchain_identity(self.project.config, self.toolchain),
            **self.dep_inputs(),
        }

    @cached_property
    def rendered_hashes(self) -> dict:
        """Hashes of the script and config files, from the render cache when nothing they depend on changed."""
        key = render_key(self.context, self.user_fragments)
        hashes = self.project.render_cache.get(self.name, key)
        if hashes is None:
            hashes = {
                "script": hashlib.sha256(self.script.encode()).hexdigest(),
                **{f"file:{name}": hashlib.sha256(text.encode()).hexdigest() for name, text in self.files.items()},
            }
            self.project.render_cache.put(self.name, key, hashes)
        return hashes

    @property
    def source(self):
        """The fetch step of the source this recipe builds (its own, or the recipe it takes it from)."""
        return self.project.steps[fetch_task(self.recipe)]

    def run(self, staging: Path, log) -> None:
        self.source.ensure_source(log)  # a lazy fetch leaves the unpack to the first build that needs it
        run(self.spec(staging), log, self.project.relative)

    def run_action(self, action: str) -> int:
        """Run the script with MLBUILD_ACTION=action (menuconfig) on the caller's terminal.

        Nothing is committed: such a run never makes the task up to date."""
        with Log(self.project.new_log(f"unpack:{self.source.recipe.name}")) as log:
            self.source.ensure_source(log)
        with tempfile.TemporaryDirectory(dir=self.project.build_dir) as staging:
            return run_on_terminal(self.spec(Path(staging)), action)

    def spec(self, staging: Path) -> BuildSpec:
        """This task's build script run, resolved, with its output going to staging."""
        environment = self._environment(staging)
        return BuildSpec(
            task=self.name,
            script=self.script,
            files=self.files,
            sysroot_parts=tuple((dep, self.project.steps[dep].output) for dep in build_ancestors(self.project.graph, self.name)),
            work=self.work,
            environment=environment,
            sandbox=tuple(self._sandbox_prefix(staging, environment)),
        )

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

    def _environment(self, staging: Path) -> dict:
        config = self.project.config
        tools = llvm_bin(config, self.toolchain)
        package_root = Path(__file__).resolve().parents[2]
        source = self.source.output
        work = self.work
        return {
            **passed_through(config.pass_environment),  # first: what mlbuild sets below wins
            **BUILD_ENVIRONMENT,
            "PATH": f"{tools}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(work),
            "SRC": str(source),
            "WORK": str(work),
            "OUT": str(staging),
            "SYSROOT": str(work / "sysroot"),
            "FILES": str(work / "files"),
            "JOBS": str(distcc.jobs(config)),  # more with distcc hosts
            "LLVM_BIN": str(tools),
            "MLBUILD_PYTHON": sys.executable,
            "MLBUILD_TASK": self.name,
            "PREFIX_MAP_FLAGS": prefix_map_flags(self.recipe.name, source, work, work / "sysroot"),
            "PYTHONPATH": str(package_root),
            **ccache_environment(self.project),
            "CCACHE_STATSLOG": str(work / "ccache-stats.log"),
        }
