"""build:target-<arch>: the complete system folder, assembled from each component's own output.

Assembled anew each time, so a component rebuilt with fewer files leaves nothing stale.
"""

import hashlib
import os
import shlex
from functools import cached_property
from pathlib import Path

from mlbuild.system import hooks, image_profile, os_release, overlay, users
from mlbuild.errors import InputError, MlbuildError
from mlbuild.trees import check_no_link_on_the_way, merge_tree
from mlbuild.steps.base import Step

# Folders every system has even when no component installs into them.
SKELETON = ("dev", "proc", "sys", "tmp", "root", "mnt", "etc", "var", "run")
# Modes the system needs beyond the normal 0755/0644 (which the images give every other file).
SKELETON_MODES = {"tmp": 0o1777}
# templates/target folders whose files are programs (0755): udhcpc runs its event script from there.
EXECUTABLE_FOLDERS = ("usr/share/udhcpc/",)


class TargetStep(Step, kind="target"):
    def __init__(self, project, name: str, node: dict):
        super().__init__(project, name, node)
        self.arch = arch = node["arch"]
        self.doc = f"assemble the {arch} system in {project.relative(self.output)}/"

    per_toolchain = True

    @property
    def output(self) -> Path:
        return self.project.target_dir / self.arch

    @cached_property
    def context(self) -> dict:
        """What the .j2 files of templates/target and of the overlays see."""
        return {
            "arch": self.arch,
            "triple": self.project.arches[self.arch].triple,
            "console": self.project.arches[self.arch].console,
            "versions": self.versions,
            "system": self.system_facts,
            # /etc/os-release (templates/target/etc/os-release.j2): VERSION_ID and BUILD_ID
            "project_version": os_release.project_version(self.project.root),
            "build_id": os_release.build_id({step.input_name: {**step.own_inputs(), **step.code_input()}
                                             for step in self.components}),
        }

    @cached_property
    def overlays(self) -> list[tuple[str, Path, list]]:
        """(origin, folder, entries): the project's templates/target first, then each external tree's
        templates/target (in configuration order), then the configuration's overlays in order."""
        found = []
        own = self.project.templates / "target"
        if own.is_dir():
            found.append(("templates/target", own, overlay.scan(own, "templates/target")))
        for tree in self.project.trees[1:]:
            theirs = tree.root / "templates" / "target"
            if theirs.is_dir():
                found.append((f"{tree.label}templates/target", theirs, overlay.scan(theirs, f"{tree.label}templates/target")))
        for relative in self.project.config.overlays:
            found.append((relative, self.project.root / relative, overlay.scan(self.project.root / relative, relative)))
        return found

    @property
    def own_overlay(self) -> list:
        """templates/target, as a list of at most one overlay: its files may not replace a component's."""
        return [item for item in self.overlays if item[0] == "templates/target"][:1]

    @property
    def user_overlays(self) -> list:
        """The external trees' templates/target and the configuration's overlays: they may replace any file (a later one wins)."""
        return self.overlays[len(self.own_overlay):]

    @cached_property
    def rendered(self) -> dict[tuple[str, str], str]:
        """{(origin, path): text} of every .j2 file of the overlays (rendered once, at load, so errors come first)."""
        return {(origin, entry.path): overlay.render_template(entry, folder, origin, self.context, self.name)
                for origin, folder, entries in self.overlays for entry in entries if entry.kind == "template"}

    @cached_property
    def etc_files(self) -> dict[str, str]:
        """The text files this step writes: templates/target's rendered .j2 files, then the accounts (users.py)."""
        files = {path: text for (origin, path), text in self.rendered.items() if origin == "templates/target"}
        for name in users.FILES:
            if name in files:
                raise InputError(f"templates/target/{name}.j2: /{name} is written from the accounts tables "
                                 "([[tool.mlbuild.users]], [[tool.mlbuild.groups]]); remove the template")
        return {**files, **users.files(self.project.config)}

    def file_mode(self, name: str) -> int:
        """The mode of a text file of etc_files in the target (and, but for etc/shadow, normalised alike in the images)."""
        if name in users.FILES:
            return users.FILES[name]
        # Scripts under etc/init.d are run by init, udhcpc's event script by udhcpc: executable.
        return 0o755 if "/init.d/" in f"/{name}" or name.startswith(EXECUTABLE_FOLDERS) else 0o644

    @cached_property
    def permissions(self) -> dict[str, tuple]:
        """{path: (Permission, recipe file)}: the [[permissions]] of every component of this arch's target."""
        declared: dict[str, tuple] = {}
        for step in self.components:
            origin = f"recipes/{step.recipe.name}.toml"
            for path, entry in step.recipe.permissions_for(self.arch).items():
                if path in declared:
                    raise InputError(f"{origin}: permissions: {path} is declared by {declared[path][1]} too")
                declared[path] = (entry, origin)
        return dict(sorted(declared.items()))

    def apply_permissions(self, root: Path) -> None:
        """chmod every declared path of root (chown needs root: the images set the owners)."""
        inside = root.resolve()
        for path, (entry, origin) in self.permissions.items():
            file = root / path
            if file.is_symlink():
                raise MlbuildError(f"{origin}: permissions: {path} is a symbolic link in "
                                   f"{self.project.relative(self.output)}/; declare the file it points to")
            if not file.exists():
                raise MlbuildError(f"{origin}: permissions: no {path} in {self.project.relative(self.output)}/ "
                                   "(no component, overlay or mlbuild installs it)")
            if not file.resolve().is_relative_to(inside):  # a folder on the way is a link out of the tree
                raise MlbuildError(f"{origin}: permissions: {path} leads out of {self.project.relative(self.output)}/")
            # (A builder without root outside the file's group cannot set setgid: the kernel drops it. The images have it.)
            os.chmod(file, entry.bits)

    def restore_modes(self, folder: Path) -> None:
        self.apply_permissions(folder)  # the modes are inputs of this task: its signature holds them

    @property
    def components(self) -> list:
        return [self.project.steps[dep] for dep in self.deps]

    @property
    def options(self) -> dict:
        """Its components' options: a choice may change which components it holds."""
        return {name: value for step in self.components for name, value in step.options.items()}

    def check(self, fresh: bool = False) -> int:
        self.permissions  # two recipes declaring one path is an input error
        return len(self.etc_files)

    def bill_of_materials(self) -> list:
        return []  # its own files are mlbuild's (/etc, the accounts); the components are their build steps'

    @cached_property
    def system_facts(self) -> dict:
        """What the components declare for templates/target ([system] in their recipes), merged; a disagreement is an input error."""
        facts: dict = {}
        declared_by: dict[str, str] = {}
        for step in self.components:
            for name, value in step.recipe.system.items():
                if name in facts and facts[name] != value:
                    raise InputError(f"recipes/{step.recipe.name}.toml: system.{name} = {value!r}, but "
                                     f"recipes/{declared_by[name]}.toml says {facts[name]!r} for the same {self.arch} system")
                facts[name], declared_by[name] = value, step.recipe.name
        return facts

    @cached_property
    def versions(self) -> dict[str, str]:
        return {step.recipe.name: step.recipe.version for step in self.components}

    def own_inputs(self) -> dict:
        # templates/target's .j2 files are in etc_files; everything else of every overlay is here.
        overlays = {f"overlay:{origin}/{entry.path}": overlay.fingerprint(entry, self.rendered.get((origin, entry.path)))
                    for origin, _, entries in self.overlays for entry in entries
                    if not (origin == "templates/target" and entry.kind == "template")}
        return {
            "arch": self.arch,
            **{f"file:{name}": hashlib.sha256(text.encode()).hexdigest() for name, text in self.etc_files.items()},
            **overlays,
            **({"homes": users.homes(self.project.config)} if self.project.config.users else {}),
            # Only the modes: the target cannot hold owners (the images' inputs have them).
            **({"permissions": {path: entry.mode for path, (entry, _) in self.permissions.items()}} if self.permissions else {}),
            **hooks.inputs(self.project, "post-build"),
            **({"image_profile": image_profile.resolve(self.project, self.arch)} if self.project.config.post_build else {}),
        }

    def run(self, staging: Path, log) -> None:
        owners: dict[str, str] = {}
        for step in self.components:
            log(f"adding {step.recipe.name} from {self.project.relative(step.output)}")
            merge_tree(step.output, staging, step.name, owners)
        for name in SKELETON:
            (staging / name).mkdir(exist_ok=True)
        for name, mode in SKELETON_MODES.items():
            check_no_link_on_the_way(staging, name, "mlbuild (its skeleton)", owners, itself=True)
            os.chmod(staging / name, mode)
        for origin, folder, entries in self.own_overlay:
            for entry in entries:
                if entry.path in owners:
                    raise MlbuildError(f"{self.name}: templates/target/{entry.path} would overwrite a file of {owners[entry.path]}")
                if entry.kind == "template":
                    continue  # written with etc_files below
                overlay.install(entry, staging, origin=origin, owners=owners)
        for name, text in self.etc_files.items():
            path = staging / name
            if name in owners:
                raise MlbuildError(f"{self.name}: /{name} is written by mlbuild but {owners[name]} installs it too")
            check_no_link_on_the_way(staging, name, "mlbuild", owners)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            os.chmod(path, self.file_mode(name))
        for home in users.homes(self.project.config):
            check_no_link_on_the_way(staging, home, "[[tool.mlbuild.users]]", owners)
            (staging / home).mkdir(parents=True, exist_ok=True)
        self._user_overlays(staging, owners, log)
        # Last, over the overlays (as Buildroot's permission tables): a declared mode is the mode the system has.
        self.apply_permissions(staging)
        if self.permissions:
            log(f"{len(self.permissions)} declared permissions: " + ", ".join(
                f"/{path} {entry.mode}" for path, (entry, _) in self.permissions.items()))
        users.check_shells(self.project.config, staging, self.name)
        log(f"{len(owners)} files from {len(self.components)} components")
        hooks.post_build(self, staging, log)

    def _user_overlays(self, staging: Path, owners: dict[str, str], log) -> None:
        """The configuration's overlays, in order: they may replace any file (a later overlay wins)."""
        for origin, folder, entries in self.user_overlays:
            replaced = 0
            for entry in entries:
                if overlay.install(entry, staging, self.rendered.get((origin, entry.path)), origin=origin, owners=owners):
                    replaced += 1
                    log(f"{origin}: /{entry.path} replaces the file of {owners.get(entry.path, 'an earlier overlay or mlbuild')}")
                owners[entry.path] = origin
            log(f"{origin}: {len(entries)} entries, {replaced} replaced")

    def shell(self, script) -> str:
        staging = self.output.with_name(f".{self.output.name}.staging")
        s = script.path(staging)
        out = [f"rm -rf {s}\nmkdir -p {s}\n",
               "# every component's files (mlbuild refuses a file that two components install)\n"]
        for component in self.components:
            out.append(f"{script.COPY} {script.path(component.output)}/. {s}/\n")
        out.append(f"mkdir -p {' '.join(f'{s}/{name}' for name in SKELETON)}\n")
        out += [f"chmod {mode:o} {s}/{shlex.quote(name)}\n" for name, mode in SKELETON_MODES.items()]
        for origin, _, entries in self.own_overlay:
            out.append(script.overlay(self.rendered, s, origin, [entry for entry in entries if entry.kind != "template"]))
        for name, text in self.etc_files.items():
            out.append(f"# /{name} (templates/target, or the accounts tables)\nmkdir -p {s}/{shlex.quote(str(Path(name).parent))}\n")
            out.append(script.file(f"{s}/{shlex.quote(name)}", text, f"{self.file_mode(name):o}"))
        for home in users.homes(self.project.config):
            out.append(f"mkdir -p {s}/{shlex.quote(home)}\n")
        for origin, _, entries in self.user_overlays:
            out.append(script.overlay(self.rendered, s, origin, entries))
        if self.permissions:
            out.append("# the modes the recipes declare ([[permissions]]; the images set the owners)\n")
            out += [f"chmod {entry.mode} {s}/{shlex.quote(path)}  # {origin}\n" for path, (entry, origin) in self.permissions.items()]
        out.append(script.hooks("post-build", hooks.post_build_values(self, staging), s))
        out.append(f"mkdir -p {script.path(self.output.parent)}\nrm -rf {script.path(self.output)}\nmv {s} {script.path(self.output)}\n")
        return "".join(out)
