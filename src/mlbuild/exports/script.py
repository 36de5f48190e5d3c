"""`mlbuild script <task>`: the whole build of a task as one linear, commented shell script.

No magic: every download with its sha256 check, every unpack and patch, and
every build step's rendered script with its exact environment, in dependency
order, runnable with bash and the host's tools alone (no mlbuild, no Python).
Paths of the build folder become "$ROOT" (the script's first argument), so the
layout under it is mlbuild's own: src/, work/, out/, target/.
"""

import os
import shlex
from pathlib import Path

import networkx as nx

from mlbuild.system import compression, hooks, image_profile, users
from mlbuild.errors import InputError
from mlbuild.model.graph import build_ancestors
from mlbuild.steps.build import BuildStep
from mlbuild.steps.fetch import FetchStep
from mlbuild.steps.images import DEVICES, DISK_UUID, ROOT_OWNED_AT_EPOCH, ImagesStep
from mlbuild.steps.target import SKELETON, SKELETON_MODES, TargetStep
from mlbuild.steps.toolchain import ToolchainStep

# Like state.merge_tree (shutil.copy2 per file): modes and times kept, links copied as links,
# hard links not kept (mke2fs -d would keep them, and the disk image would differ).
COPY = "cp -RP --preserve=mode,timestamps"

HEADER = """\
#!/usr/bin/env bash
# {title}
# Exported by `mlbuild script {task}` from the task graph: {count} steps in dependency order.
# It needs no mlbuild and no Python: bash, coreutils, curl, tar, patch, sha256sum and
# the build tools the steps run (clang, ccache, make, …), as mlbuild does.
#
#   bash build.sh [FOLDER]     builds everything under FOLDER (default: ./mlbuild-build)
#
# The layout under FOLDER is mlbuild's build folder: src/<recipe> (unpacked sources),
# work/<component> (build folders), out/<component> (each component's files),
# target/<arch> (the assembled system), images/<arch>.
set -eu -o pipefail
ROOT="$(mkdir -p "${{1:-mlbuild-build}}" && cd "${{1:-mlbuild-build}}" && pwd)"
# Downloads are looked up (and kept) as mlbuild keeps them: <folder>/<sha256>/<file>.
DOWNLOADS="${{MLBUILD_DOWNLOADS:-{downloads}}}"
"""


def export(project, task: str) -> str:
    """The shell script that builds task and everything it needs."""
    graph = project.graph
    if task not in graph:
        raise InputError(f"script: no task {task!r}; `doit list --all` shows them")
    needed = graph.subgraph(nx.ancestors(graph, task) | {task})
    order = list(nx.lexicographical_topological_sort(needed))
    writer = _Writer(project)
    parts = [HEADER.format(title=project.steps[task].doc, task=task, count=len(order),
                           downloads=shlex.quote(str(project.config.download_dir)))]
    for name in order:
        step = project.steps[name]
        parts.append(f"\n# {'=' * 78}\n# {name}: {step.doc}\n")
        deps = step.deps
        if deps:
            parts.append(f"# after: {', '.join(deps)}\n")
        if isinstance(step, FetchStep):
            parts.append(writer.fetch(step))
        elif isinstance(step, BuildStep):
            parts.append(writer.build(step))
        elif isinstance(step, TargetStep):
            parts.append(writer.target(step))
        elif isinstance(step, ToolchainStep):
            parts.append(writer.gather(step))
        elif isinstance(step, ImagesStep):
            parts.append(writer.images(step))
        else:
            raise InputError(f"script: {name}: no shell form for this kind of task")
    parts.append(f'\necho "built {task} under $ROOT"\n')
    return "".join(parts)


class _Writer:
    def __init__(self, project):
        self.project = project
        # Longest first: the per-toolchain tree lies inside the build folder.
        trees = {project.target_build_dir: "$ROOT", project.build_dir: "$ROOT", project.target_dir: "$ROOT/target"}
        self.trees = sorted(((str(path), variable) for path, variable in trees.items()), key=lambda item: -len(item[0]))
        self.root = str(project.root)  # ccache's base folder: paths below it are hashed relative to it

    # --- quoting ------------------------------------------------------------------------

    def path(self, path) -> str:
        """A path as a shell word, the build folder replaced by "$ROOT"."""
        return self.word(str(path))

    def word(self, text: str) -> str:
        """text as one shell word; the project's folders in it become variables."""
        if text == self.root:
            return '"$ROOT"'
        for prefix, variable in self.trees:
            if text == prefix or text.startswith(prefix + "/"):
                rest = text[len(prefix):]
                return f'"{variable}"' + (shlex.quote(rest) if rest else "")
            if f":{prefix}" in text or f"{prefix}:" in text:  # in a PATH-like list
                head, _, tail = text.partition(prefix)
                return (shlex.quote(head) if head else "") + f'"{variable}"' + (self.word(tail) if tail else "")
        return shlex.quote(text)

    @staticmethod
    def file(target: str, text: str, mode: str | None = None) -> str:
        """Write text to target (a shell word) byte for byte: a quoted here-document, or printf for the rest."""
        delimiter = "MLBUILD_EOF"
        while delimiter in text:
            delimiter += "_"
        if text.endswith("\n"):
            out = f"cat > {target} <<'{delimiter}'\n{text}{delimiter}\n"
        else:
            out = f"printf '%s' {shlex.quote(text)} > {target}\n"
        return out + (f"chmod {mode} {target}\n" if mode else "")

    # --- kinds of steps -----------------------------------------------------------------------

    def fetch(self, step) -> str:
        recipe = step.recipe
        if step.override:  # a local folder (source_override.py): copied as mlbuild copies it, without .git, unpatched
            destination = self.path(step.output)
            return (f"# {recipe.name}: the local source override {step.override.text}; no download, no patches\n"
                    f"rm -rf {destination}\nmkdir -p {destination}\n"
                    f"tar -C {shlex.quote(str(step.override.path))} --exclude=.git -cf - . | tar -C {destination} -xpf -\n")
        cache = Path(self.project.config.download_dir)
        # The alternative mlbuild itself has in its cache, else the first one.
        source = next((s for s in recipe.sources if (cache / s.sha256).is_dir()), recipe.sources[0])
        out = []
        others = [s.url or f"Debian source {s.debian}" for s in recipe.sources if s is not source]
        if others:
            out.append(f"# other places with the same release (each with its own sha256 in recipes/{recipe.name}.toml): {', '.join(others)}\n")
        if source.url:
            filename = source.url.rstrip("/").rsplit("/", 1)[-1]
            # The download limits mlbuild keeps to (docs/usage.md, download_*), in curl's words.
            config = self.project.config
            curl = (f"curl -fL --retry 2 --max-time {config.download_timeout} "
                    f"--max-filesize {min(source.size or config.download_max_size, config.download_max_size)}")
            if config.download_min_rate:
                curl += f" --speed-limit {config.download_min_rate} --speed-time {config.download_rate_window}"
            fetch_command = f'{curl} -o "$archive.part" {shlex.quote(source.url)}'
            for mirror in self.project.config.mirrors:
                fetch_command += f' \\\n    || {curl} -o "$archive.part" {shlex.quote(mirror.rstrip("/") + "/" + filename)}'
        else:
            filename = f"{recipe.name}.orig.tar"
            package = shlex.quote(source.debian)
            fetch_command = (f'(cd "$DOWNLOADS/{source.sha256}" && apt-get source --download-only --tar-only {package}'
                             f' && mv ./*.orig.tar.* "$archive.part")')
            cached = sorted((cache / source.sha256).glob("*")) if (cache / source.sha256).is_dir() else []
            if cached:
                filename = cached[0].name
        destination = self.path(step.output)
        out.append(
            f'archive="$DOWNLOADS/{source.sha256}/{filename}"\n'
            f'if ! [ -f "$archive" ] || ! echo "{source.sha256}  $archive" | sha256sum -c --status; then\n'
            f'  mkdir -p "$DOWNLOADS/{source.sha256}"\n'
            f"  {fetch_command}\n"
            f'  echo "{source.sha256}  $archive.part" | sha256sum -c --status \\\n'
            f'    || {{ echo "{step.name}: sha256 mismatch for {filename}" >&2; rm -f "$archive.part"; exit 1; }}\n'
            f'  mv "$archive.part" "$archive"\n'
            f"fi\n"
            f"rm -rf {destination}\n"
            f"mkdir -p {destination}\n"
            f'tar -xf "$archive" -C {destination} --strip-components={source.strip_components} --no-same-owner --no-same-permissions\n'
        )
        for patch in step._patches():
            out.append(f"# recipes/{recipe.name}/{patch.name}\n")
            out.append(self.file(f'"$ROOT/{patch.name}"', patch.read_text()))
            out.append(f'patch -p1 --batch --forward -d {destination} -i "$ROOT/{patch.name}"\nrm "$ROOT/{patch.name}"\n')
        return "".join(out)

    def build(self, step) -> str:
        project = self.project
        work, output = step.work, step.output
        staging = output.with_name(f".{output.name}.staging")
        sysroot, files = work / "sysroot", work / "files"
        out = [
            f"mkdir -p {self.path(work)}\n",
            f"rm -rf {self.path(files)} {self.path(sysroot)} {self.path(staging)}\n",
            f"mkdir -p {self.path(files)} {self.path(sysroot)} {self.path(staging)}\n",
        ]
        ancestors = build_ancestors(project.graph, step.name)
        if ancestors:
            out.append("# $SYSROOT: the files of every component it builds on\n")
            for dep in ancestors:
                out.append(f"{COPY} {self.path(project.steps[dep].output)}/. {self.path(sysroot)}/\n")
        for name, text in step.files.items():
            out.append(f"# $FILES/{name}\n")
            out.append(self.file(f"{self.path(files)}/{shlex.quote(name)}", text))
        out.append(f"# the build script, rendered from templates/build/{step.recipe.build}.sh.j2\n")
        out.append(self.file(f"{self.path(work)}/build.sh", step.script))
        environment = dict(step.spec(staging).environment)
        environment.pop("CCACHE_STATSLOG", None)  # only for mlbuild's log line
        environment.pop("PYTHONPATH", None)
        # The check that config fragments took effect (mlbuild.steps.kconfig_check) needs mlbuild: skipped here.
        environment["MLBUILD_PYTHON"] = "true"
        out.append("# run it in a clean environment (MLBUILD_PYTHON=true skips mlbuild's check of config fragments)\n")
        lines = [f"  {key}={self.word(str(value))}" for key, value in environment.items()]
        out.append(f"(cd {self.path(work)} && env -i \\\n" + " \\\n".join(lines) + " \\\n  bash -eu -o pipefail build.sh)\n")
        out.append(f"rm -rf {self.path(output)}\nmv {self.path(staging)} {self.path(output)}\n")
        return "".join(out)

    def target(self, step) -> str:
        staging = step.output.with_name(f".{step.output.name}.staging")
        s = self.path(staging)
        out = [f"rm -rf {s}\nmkdir -p {s}\n",
               "# every component's files (mlbuild refuses a file that two components install)\n"]
        for component in step.components:
            out.append(f"{COPY} {self.path(component.output)}/. {s}/\n")
        out.append(f"mkdir -p {' '.join(f'{s}/{name}' for name in SKELETON)}\n")
        out += [f"chmod {mode:o} {s}/{shlex.quote(name)}\n" for name, mode in SKELETON_MODES.items()]
        for origin, _, entries in step.own_overlay:
            out.append(self.overlay(step, s, origin, [entry for entry in entries if entry.kind != "template"]))
        for name, text in step.etc_files.items():
            out.append(f"# /{name} (templates/target, or the accounts tables)\nmkdir -p {s}/{shlex.quote(str(Path(name).parent))}\n")
            out.append(self.file(f"{s}/{shlex.quote(name)}", text, f"{step.file_mode(name):o}"))
        for home in users.homes(step.project.config):
            out.append(f"mkdir -p {s}/{shlex.quote(home)}\n")
        for origin, _, entries in step.user_overlays:
            out.append(self.overlay(step, s, origin, entries))
        if step.permissions:
            out.append("# the modes the recipes declare ([[permissions]]; the images set the owners)\n")
            out += [f"chmod {entry.mode} {s}/{shlex.quote(path)}  # {origin}\n" for path, (entry, origin) in step.permissions.items()]
        out.append(self.hooks(step, "post-build", hooks.post_build_values(step, staging), s))
        out.append(f"mkdir -p {self.path(step.output.parent)}\nrm -rf {self.path(step.output)}\nmv {s} {self.path(step.output)}\n")
        return "".join(out)

    def hooks(self, step, kind: str, values: dict, folder: str) -> str:
        """The hooks of a kind as mlbuild runs them (hooks.py): each one's text, then a run in its environment.

        They run from the project folder, as in mlbuild: the one of the export, or $MLBUILD_PROJECT."""
        out = []
        project = self.project
        environment = hooks.environment(project, kind, values)
        for index, path in enumerate(hooks.scripts(project, kind)):
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                raise InputError(f"mlbuild script: {project.relative(path)}: a {kind} hook that is not text cannot be exported") from None
            copy = f'"$ROOT/hooks/{kind}-{index}-"{shlex.quote(path.name)}'
            out.append(f"# {kind} hook {project.relative(path)}\nmkdir -p \"$ROOT/hooks\"\n" + self.file(copy, text, "755"))
            lines = [f"  {key}={self.word(str(value))}" for key, value in environment.items() if key != "PROJECT_DIR"]
            out.append(f'(cd "${{MLBUILD_PROJECT:-{project.root}}}" && env -i PATH="$PATH" HOME="$HOME" \\\n'
                       f'  PROJECT_DIR="${{MLBUILD_PROJECT:-{project.root}}}" \\\n' + " \\\n".join(lines) + f" \\\n  {copy} {folder})\n")
        return "".join(out)

    def overlay(self, step, s: str, origin: str, entries) -> str:
        """An overlay's entries, as mlbuild installs them (overlay.py): copies with their modes, links, rendered .j2 files."""
        out = [f"# overlay {origin}\n"]
        for entry in entries:
            target = f"{s}/{shlex.quote(entry.path)}"
            if entry.kind == "dir":
                out.append(f"[ -d {target} ] || {{ mkdir -p {target} && chmod {entry.mode:o} {target}; }}\n")
            elif entry.kind == "link":
                out.append(f"rm -f {target}\nln -s {shlex.quote(os.readlink(entry.source))} {target}\n")
            elif entry.kind == "template":
                out.append(f"rm -f {target}\n" + self.file(target, step.rendered[(origin, entry.path)], f"{entry.mode:o}"))
            else:
                out.append(f"rm -f {target}\ncp {self.path(entry.source)} {target}\nchmod {entry.mode:o} {target}\n")
        return "".join(out)

    def gather(self, step) -> str:
        staging = step.output.with_name(f".{step.output.name}.staging")
        out = [f"rm -rf {self.path(staging)}\nmkdir -p {self.path(staging)}\n"]
        for dep in step.deps:
            out.append(f"{COPY} {self.path(self.project.steps[dep].output)}/. {self.path(staging)}/\n")
        out.append(f"rm -rf {self.path(step.output)}\nmv {self.path(staging)} {self.path(step.output)}\n")
        return "".join(out)

    def images(self, step) -> str:
        out_dir = self.path(step.output)
        epoch = ROOT_OWNED_AT_EPOCH[-1][1].lstrip("@")
        declared = "".join(f"    {shlex.quote(name)}) perm=0{mode:o} ;;\n" for name, mode in sorted(step.modes.items()))
        owned = "".join(f"    {shlex.quote(name)}) echo {uid} {gid} ;;\n" for name, (uid, gid) in sorted(step.owners.items()))
        out = [f"rm -rf {out_dir}\nmkdir -p {out_dir}\n"]
        if image_profile.resolve(step.project, step.arch) == "full":
            root = self.path(step.root)
        else:
            runtime = step.project.target_build_dir / "work" / f"images-{step.arch}-runtime"
            root = self.path(runtime)
            out.append(self.runtime_tree(self.path(step.root), root, image_profile._kernels(step)))
        out += [
            'PATH="$PATH:/usr/sbin:/sbin"  # mke2fs, debugfs\n',
            "# The mode a file gets in both images, whatever umask built it (src/mlbuild/cpio.py):\n"
            "# 0755 for folders and executables, 0644 for other files, set-id and sticky bits kept,\n"
            "# then the modes the system declares.\n",
            "image_mode() {\n"
            '  local st=$(( 16#$(stat -c %f "$1") )) perm\n'
            '  if [ -L "$1" ]; then perm=0777\n'
            '  elif [ -d "$1" ] || (( st & 0111 )); then perm=$(( (st & 07000) | 0755 ))\n'
            "  else perm=$(( (st & 07000) | 0644 )); fi\n"
            f'  case "$1" in\n{declared}  esac\n'
            "  echo $(( (st & 0170000) | perm ))\n"
            "}\n",
            "# Every path is root's but those the recipes give another owner ([[permissions]]).\n",
            "image_owner() {\n"
            f'  case "$1" in\n{owned}    *) echo 0 0 ;;\n  esac\n'
            "}\n",
            '# initramfs.cpio: a cpio "newc" archive, byte for byte as mlbuild\'s writer makes it without\n'
            "# root: every entry root-owned (or as declared) at SOURCE_DATE_EPOCH, in name order, inodes numbered from 1,\n"
            "# then the device nodes, then the trailer.\n",
            "cpio_entry() {  # ino mode nlink mtime size name [rdev-major rdev-minor]; owner: $uid $gid\n"
            "  local namesize=$(( $(printf '%s' \"$6\" | wc -c) + 1 ))\n"
            "  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\\0' \\\n"
            "    \"$1\" \"$2\" \"${uid:-0}\" \"${gid:-0}\" \"$3\" \"$4\" \"$5\" 0 0 \"${7:-0}\" \"${8:-0}\" \"$namesize\" 0 \"$6\"\n"
            "  head -c $(( (4 - (110 + namesize) % 4) % 4 )) /dev/zero\n"
            "}\n",
            f"(cd {root}\n",
            " ino=1\n",
            " while IFS= read -r name; do\n",
            "  mode=$(image_mode \"$name\"); read -r uid gid < <(image_owner \"$name\")\n",
            "  if [ -L \"$name\" ]; then data=$(readlink \"$name\"); size=$(printf '%s' \"$data\" | wc -c); nlink=1\n",
            "  elif [ -f \"$name\" ]; then size=$(stat -c %s \"$name\"); nlink=1\n",
            "  else size=0; nlink=2; fi\n",
            f"  cpio_entry $ino $mode $nlink {epoch} $size \"$name\"\n",
            "  if [ -L \"$name\" ]; then printf '%s' \"$data\"; elif [ -f \"$name\" ]; then cat \"$name\"; fi\n",
            "  head -c $(( (4 - size % 4) % 4 )) /dev/zero\n",
            "  ino=$((ino + 1))\n",
            " done < <(find . -mindepth 1 | sed 's|^\\./||' | LC_ALL=C sort)\n",
        ]
        out.append(" uid=0 gid=0  # the device nodes are root's\n")
        for name, (kind, major, minor) in sorted(DEVICES.items()):
            bits = 0o020000 if kind == "c" else 0o060000
            out.append(f" cpio_entry $ino {bits | 0o600} 1 {epoch} 0 {name} {major} {minor}; ino=$((ino + 1))\n")
        out += [
            " cpio_entry $ino 0 1 0 0 'TRAILER!!!'\n",
            f") > {out_dir}/initramfs.cpio\n",
            *self.compress(step, out_dir),
            "# the ext4 disk image: the same commands as mlbuild runs\n",
            f"size_mib=$(( $(find {root} -mindepth 1 -printf '%s\\n' | awk '{{s += $1}} END {{print s + 0}}') * 3 / 2 / 1048576 + 16 ))\n",
            "[ $size_mib -ge 32 ] || size_mib=32\n",
            f"E2FSPROGS_FAKE_TIME={epoch} mke2fs -q -F -t ext4 -L mlbuild -U {DISK_UUID} "
            f"-E hash_seed={DISK_UUID},root_owner=0:0 -d {root} {out_dir}/rootfs.ext4 ${{size_mib}}M\n",
            "# mke2fs -d copies the building user's owner, times and modes: root:root, fixed times and the\n"
            "# images' modes for every file, then the device nodes\n",
            f"(cd {root} && while IFS= read -r name; do\n",
        ]
        out.append('   read -r uid gid < <(image_owner "$name")\n')
        for field, value in ROOT_OWNED_AT_EPOCH:
            value = f"${field}" if field in ("uid", "gid") else value  # the declared owner, else root
            out.append(f'   echo "sif \\"/$name\\" {field} {value}"\n')
        out.append('   [ -L "$name" ] || printf \'sif "/%s" mode 0%o\\n\' "$name" "$(image_mode "$name")"\n')
        out.append(" done < <(find . -mindepth 1 | sed 's|^\\./||' | LC_ALL=C sort)\n")
        for name, (kind, major, minor) in DEVICES.items():
            out.append(f" echo 'mknod \"/{name}\" {kind} {major} {minor}'\n")
        out.append(f") > {out_dir}/rootfs.debugfs\n")
        out.append(f"E2FSPROGS_FAKE_TIME={epoch} debugfs -w -f {out_dir}/rootfs.debugfs {out_dir}/rootfs.ext4 >/dev/null\n"
                   f"rm {out_dir}/rootfs.debugfs\n")
        if image_profile.resolve(step.project, step.arch) != "full":
            out.append(f"rm -rf {root}  # the runtime tree is not kept\n")
        out.append(self.hooks(step, "post-image", hooks.post_image_values(step, step.output), out_dir))
        return "".join(out)

    @staticmethod
    def compress(step, out_dir: str) -> list[str]:
        """What QEMU boots: the cpio compressed by the very command mlbuild runs (compression.py)."""
        kind = step.project.config.initramfs_compression
        words = compression.command(kind, "SOURCE", "TARGET")
        if words is None:
            return ["# what QEMU boots: initramfs.cpio as it is (initramfs_compression = none)\n"]
        line = " ".join(shlex.quote(word) for word in words)
        line = line.replace("SOURCE", f"{out_dir}/initramfs.cpio").replace("TARGET", f"{out_dir}/{compression.booted(kind)}")
        return ["# what QEMU boots: the same archive compressed (the same command and settings as mlbuild's)\n", line + "\n"]

    @staticmethod
    def runtime_tree(target: str, tree: str, kernels: set[str]) -> str:
        """The runtime image profile (image_profile.py): the target without what only a compiler or a boot loader reads."""
        folders = " ".join(f"{tree}/{prefix}{folder}" for folder in image_profile.DEVELOPMENT_FOLDERS for prefix in ("", "usr/"))
        patterns = " -o ".join(f"-name {shlex.quote(pattern)}" for pattern in image_profile.DEVELOPMENT_FILES)
        out = [
            "# image_profile runtime: the images hold what runs, not headers, static libraries and objects,\n"
            "# pkg-config/CMake files, linker maps, manuals, nor the kernel image (QEMU is given it with -kernel)\n",
            f"rm -rf {tree}\nmkdir -p {tree}\n{COPY} -l {target}/. {tree}/\n",
            f"find {tree} -depth -type d -name include -exec rm -rf {{}} +\n",
            f"rm -rf {folders}\n",
            f"find {tree} \\( -type f -o -type l \\) \\( {patterns} \\) -delete\n",
        ]
        out += [f"rm -f {tree}/{shlex.quote(kernel)}\n" for kernel in sorted(kernels)]
        out.append(
            "# a folder emptied by that goes too; one that was empty in the target (/proc, /tmp) stays\n"
            f"while IFS= read -r folder; do\n"
            f'  if [ -z "$(ls -A {tree}/"$folder")" ] && [ -n "$(ls -A {target}/"$folder")" ]; then rmdir {tree}/"$folder"; fi\n'
            f"done < <(cd {tree} && find . -mindepth 1 -depth -type d)\n"
        )
        return "".join(out)


def cmd_script(project, args) -> int:
    """Print the whole build of a task as one linear shell script (`mlbuild script build:target-x86_64 > build.sh`)."""
    name = args.task if ":" in args.task else f"build:{args.task}"
    print(export(project, name), end="")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("script", help=cmd_script.__doc__)
    parser.add_argument("task", help="a task, e.g. build:target-x86_64 or busybox-arm64")
    parser.set_defaults(handler=cmd_script)
