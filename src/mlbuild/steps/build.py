"""build:<recipe>-<arch>: a recipe rendered into a build spec (build_spec.py runs it); its inputs."""

import hashlib
import json
import shlex
import sys
import tempfile
from functools import cached_property
from pathlib import Path

from mlbuild.model.arches import HOST
from mlbuild.steps.build_spec import BuildSpec, run, run_on_terminal
from mlbuild.steps.ccache import ccache_environment
from mlbuild.credentials import redact
from mlbuild.errors import MlbuildError
from mlbuild.model.graph import build_ancestors, build_task, fetch_task
from mlbuild.model import external
from mlbuild.model.external import FRAGMENTS
from mlbuild import sandbox
from mlbuild.steps import distcc
from mlbuild.render import render
from mlbuild.engine.run_logs import Log
from mlbuild.reproducible import BUILD_ENVIRONMENT, passed_through, prefix_map_flags
from mlbuild.engine.signature import render_key
from mlbuild.steps.compiler import llvm_bin, toolchain_identity
from mlbuild.steps.base import Component, Step


def script_context(recipe, merged, arch: str, config, fragment_names: list[str], options: dict, toolchain: str,
                   versions: dict[str, str], arches) -> dict:
    """What build scripts and config fragments see. No absolute project paths: moving the tree changes nothing.

    options: the values of the options the recipe declares (and those alone: a template reading another fails).
    toolchain: what compiles this script (host recipes and their sysroots: always the host's LLVM).
    versions: {recipe: version} of every recipe. arches: the known arches (model/arches.py)."""
    facts = arches.host() if arch == HOST else arches[arch]
    return {
        "recipe": recipe,
        "arch": arch,
        "triple": facts.triple,
        # The kernel's ARCH=, its source folder arch/<kernel_srcarch>/ and the image it builds there (arches/<arch>.toml).
        "karch": facts.kernel.arch,
        "kernel_srcarch": facts.kernel.srcarch,
        "kernel_image": facts.kernel.image,
        # The kernel's built-in command line for booting disk.img through firmware (arches/<arch>.toml: firmware).
        "firmware_cmdline": getattr(facts, "firmware", None) and facts.firmware_cmdline or "",
        "vars": merged.vars,
        "files": [_file_name(name) for name in merged.files] + fragment_names,
        "options": options,
        "config": {
            "host_llvm_version": config.host_llvm_version,  # the host's LLVM (model/host.toml)
            "toolchain": toolchain,
        },
        # Every recipe's version: a template needing another component's (the resource directory of the
        # clang that llvm-project builds: /usr/lib/clang/<its major>) takes it from that recipe, never from a copy.
        "versions": versions,
        # A host recipe's sysroots: the triple of each arch build:toolchain ships one for.
        "sysroot_triples": [known.triple for known in arches.values()] if recipe.sysroots else [],
        # ... and their LLVM back ends, each once (X86, AArch64, RISCV).
        "sysroot_llvm_targets": list(dict.fromkeys(known.llvm_target for known in arches.values())) if recipe.sysroots else [],
    }


def option_text(value: bool | str) -> str:
    """An option's value as it is written in the configuration (true, qemu)."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def _file_name(template: str) -> str:
    return Path(template).name.removesuffix(".j2")


class BuildStep(Step, kind="build"):
    # The rendered script and files, the environment and the toolchain are its inputs: the Python
    # around them only runs the script, so editing mlbuild does not rebuild every component.
    code_roots = ()

    def __init__(self, project, name: str, node: dict):
        super().__init__(project, name, node)
        recipe = self.recipe = project.recipes[node["recipe"]]
        self.arch = arch = node["arch"]
        self.toolchain = toolchain = node["toolchain"]  # host: the host's LLVM (stage 1); llvm: mlbuild's own (build:toolchain)
        shown = ", ".join(f"{name}={option_text(value)}" for name, value in self.options.items())
        self.doc = f"build {recipe.name} {recipe.version} for {arch}" + (f" ({shown})" if shown else "")
        if toolchain != project.config.toolchain:  # a sysroot of build:toolchain, while the system uses that toolchain
            self.doc += ", by the host's LLVM (stage 1) for build:toolchain"

    @cached_property
    def options(self) -> dict:
        return {name: self.project.options[name] for name in self.recipe.options}

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
                              [name for name, _ in self.fragment_files], self.options, self.toolchain,
                              {name: recipe.version for name, recipe in self.project.recipes.items()}, self.project.arches)

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
        found = [root / FRAGMENTS / f"{self.recipe.name}.config", self.own_fragment]
        own = [(path.name, path) for path in named + [path for path in found if path.is_file()]]
        return external.fragments(self.project.trees, self.recipe.name, self.arch) + own

    @property
    def own_fragment(self) -> Path:
        """fragments/<recipe>-<arch>.config: this task's own fragment, applied last (menuconfig saves its changes there)."""
        return self.project.root / FRAGMENTS / f"{self.slug}.config"

    @property
    def user_fragments(self) -> list[Path]:
        return [path for _, path in self.fragment_files]

    @property
    def about(self) -> str:
        """How a template's error names what it was rendered for: the task and the recipe's file."""
        return f"{self.name} ({self.project.recipe_label(self.recipe.name)})"

    @cached_property
    def script(self) -> str:
        return render(self.project.template_dirs, f"build/{self.recipe.build}.sh.j2", self.context, for_shell=True,
                      about=self.about)

    @cached_property
    def files(self) -> dict[str, str]:
        """Config files for $FILES: rendered recipe files, then the user's own fragments as they are."""
        rendered = {
            _file_name(name): render(self.project.template_dirs, name, self.context, about=self.about)
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
                                             "menuconfig", "tools", "permissions", "system"}
        return self.recipe.model_dump(mode="json", exclude=not_here, exclude_defaults=True)

    def own_inputs(self) -> dict:
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
        }

    def check(self, fresh: bool = False) -> int:
        self.check_pass_environment()
        if not fresh:
            return len(self.rendered_hashes)  # from the render cache while nothing they depend on changed
        self.script, self.files
        return 1 + len(self.files)

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

    def run_action(self, action: str, action_environment: dict[str, str] | None = None) -> int:
        """Run the script with MLBUILD_ACTION=action (menuconfig) on the caller's terminal.

        Nothing is committed: such a run never makes the task up to date."""
        with Log(self.project.new_log(f"unpack:{self.source.recipe.name}")) as log:
            self.source.ensure_source(log)
        with tempfile.TemporaryDirectory(dir=self.project.build_dir) as staging:
            return run_on_terminal(self.spec(Path(staging)), action, action_environment)

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
        owned = self._owned_environment(staging, llvm_bin(self.project.config, self.toolchain))
        return {**passed_through(self.project.config.pass_environment, owned), **owned}

    def check_pass_environment(self) -> None:
        """pass_environment names none of the variables this script gets from mlbuild: an input error when
        the project loads, before any task runs (the values do not matter, so no LLVM is looked up)."""
        if self.project.config.pass_environment:
            passed_through(self.project.config.pass_environment, self._owned_environment(self.output, Path("/")), {})

    def _owned_environment(self, staging: Path, tools: Path) -> dict:
        """Every variable mlbuild sets for this task's script."""
        config = self.project.config
        package_root = Path(__file__).resolve().parents[2]
        source = self.source.output
        work = self.work
        return {
            **BUILD_ENVIRONMENT,
            "PATH": f"{tools}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(work),
            "SRC": str(source),
            "WORK": str(work),
            "OUT": str(staging),
            "SYSROOT": str(work / "sysroot"),
            "FILES": str(work / "files"),
            "JOBS": str(distcc.jobs(config)),  # more with distcc hosts
            # make's -j: under a run's job pool (jobserver.py) empty, MAKEFLAGS then joins make to the pool.
            "MAKE_JOBS": f"-j{distcc.jobs(config)}",
            # Set in a run to join make to the pool (jobserver.script_environment); never the caller's.
            "MAKEFLAGS": "",
            # In front of a command that takes no part in the pool (ninja): empty, or what holds tokens for its -j.
            "JOBSERVER_HOLD": "",
            "LLVM_BIN": str(tools),
            # The venv's folder resolved (not the interpreter link itself, which would leave the venv):
            # a venv linked in from another checkout is then reached through the folder the sandbox binds.
            "MLBUILD_PYTHON": str(Path(sys.executable).parent.resolve() / Path(sys.executable).name),
            "MLBUILD_TASK": self.name,
            "PREFIX_MAP_FLAGS": prefix_map_flags(self.recipe.name, source, work, work / "sysroot"),
            "PYTHONPATH": str(package_root),
            **ccache_environment(self.project),
            "CCACHE_STATSLOG": str(work / "ccache-stats.log"),
            # ccache's temporary files (a compile's stdout, stderr, preprocessed source) in the task's own folder:
            # a ccache run deletes files of the shared $CCACHE_DIR/tmp it takes for stale, and a tool whose clock
            # is not the files' (faketime; a clock set back or forward) took another task's live ones, so that
            # compile ran uncached, with its own absolute paths (debug info unlike another tree's).
            "CCACHE_TEMPDIR": str(work / "ccache-tmp"),
        }

    def bill_of_materials(self) -> list[Component]:
        source = self.source
        override = source.override
        kconfig = self.recipe.kconfig
        return [Component(self.recipe, source.recipe, None if override else source.source_in_use,
                          () if override else source.patches, override,
                          options=tuple((name, value if isinstance(value, str) else json.dumps(value))
                                        for name, value in sorted(self.options.items())),
                          configuration=self.output / kconfig if kconfig else None,
                          fragments=tuple(self.files.values()) if kconfig else (),
                          output=self.output)]

    def shell(self, script) -> str:
        project = self.project
        work, output = self.work, self.output
        staging = output.with_name(f".{output.name}.staging")
        sysroot, files = work / "sysroot", work / "files"
        out = [
            f"mkdir -p {script.path(work)}\n",
            f"rm -rf {script.path(files)} {script.path(sysroot)} {script.path(staging)}\n",
            f"mkdir -p {script.path(files)} {script.path(sysroot)} {script.path(staging)}\n",
        ]
        ancestors = build_ancestors(project.graph, self.name)
        if ancestors:
            out.append("# $SYSROOT: the files of every component it builds on\n")
            for dep in ancestors:
                out.append(f"{script.COPY} {script.path(project.steps[dep].output)}/. {script.path(sysroot)}/\n")
        for name, text in self.files.items():
            out.append(f"# $FILES/{name}\n")
            out.append(script.file(f"{script.path(files)}/{shlex.quote(name)}", text))
        out.append(f"# the build script, rendered from templates/build/{self.recipe.build}.sh.j2\n")
        out.append(script.file(f"{script.path(work)}/build.sh", self.script))
        environment = dict(self.spec(staging).environment)
        environment.pop("CCACHE_STATSLOG", None)  # only for mlbuild's log line
        if "$MLBUILD_PYTHON" in self.script:
            # What this build script runs of mlbuild's ground floor, with the system's python3: the record of
            # the compiled files (standard library only) as it is; the check that config fragments took effect
            # needs kconfiglib, so it is a stub that passes.
            tools = project.build_dir / "mlbuild-tools"
            script.prelude("mlbuild-tools", "".join([
                "# mlbuild's helpers build scripts run: compiled_files (the record of what was compiled, for\n"
                "# `mlbuild cve`) as mlbuild has it; kconfig_check (the fragments took effect) needs mlbuild: skipped\n",
                f"mkdir -p {script.path(tools / 'mlbuild')}\n",
                script.file(f"{script.path(tools / 'mlbuild')}/__init__.py", ""),
                script.file(f"{script.path(tools / 'mlbuild')}/compiled_files.py",
                            (Path(__file__).resolve().parents[1] / "compiled_files.py").read_text()),
                script.file(f"{script.path(tools / 'mlbuild')}/kconfig_check.py", "# skipped outside mlbuild\n"),
            ]))
            environment["PYTHONPATH"] = str(tools)
            environment["MLBUILD_PYTHON"] = "python3"
            out.append("# run it in a clean environment\n")
        else:
            environment.pop("PYTHONPATH", None)
            environment["MLBUILD_PYTHON"] = "true"  # nothing of mlbuild is run by this script
            out.append("# run it in a clean environment\n")
        # A value holding credentials (ccache's remote storage) is the caller's variable of that name.
        lines = [f"  {key}={script.secret_url(str(value), key, out) if redact(str(value)) != str(value) else script.word(str(value))}"
                 for key, value in environment.items()]
        out.append(f"(cd {script.path(work)} && env -i \\\n" + " \\\n".join(lines) + " \\\n  bash -eu -o pipefail build.sh)\n")
        out.append(f"rm -rf {script.path(output)}\nmv {script.path(staging)} {script.path(output)}\n")
        return "".join(out)
