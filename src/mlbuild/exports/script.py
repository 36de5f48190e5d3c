"""`mlbuild script <task>`: the whole build of a task as one linear, commented shell script.

No magic: every download with its sha256 check, every unpack and patch, and
every build step's rendered script with its exact environment, in dependency
order, runnable with bash and the host's tools alone (no mlbuild, no Python).
Paths of the build folder become "$ROOT" (the script's first argument), wherever they
appear in a value (a path, a PATH-like list, clang's -ffile-prefix-map=<path>=…), so the
layout under it is mlbuild's own (src/, work/, out/, target/) and a build elsewhere gives
mlbuild's bytes.
"""

import os
import re
import shlex

import networkx as nx

from mlbuild.system import hooks
from mlbuild.credentials import redact
from mlbuild.errors import InputError

HEADER = """\
#!/usr/bin/env bash
# {title}
# Exported by `mlbuild script {task}` from the task graph: {count} steps in dependency order.
# It needs no mlbuild and no Python: bash, coreutils, curl, tar, patch, sha256sum (apt-get
# for a Debian source) and the build tools the steps run (clang, ccache, make, …), as mlbuild does.
#
#   bash build.sh [FOLDER]     builds everything under FOLDER (default: ./mlbuild-build)
#
# MLBUILD_DOWNLOADS and MLBUILD_CCACHE_DIR name other download and ccache folders than the
# exporting machine's; with MLBUILD_STEP_TIMES=FILE each step's wall and CPU time (milliseconds,
# user + system of everything it ran) is appended to FILE as a line "task<TAB>wall<TAB>cpu".
#
# The layout under FOLDER is mlbuild's build folder: src/<recipe> (unpacked sources),
# work/<component> (build folders), out/<component> (each component's files),
# target/<arch> (the assembled system), images/<arch>.
set -eu -o pipefail
ROOT="$(mkdir -p "${{1:-mlbuild-build}}" && cd "${{1:-mlbuild-build}}" && pwd)"
# Downloads are looked up (and kept) as mlbuild keeps them: <folder>/<sha256>/<file>, found by
# checksum whatever the file is called.
DOWNLOADS="${{MLBUILD_DOWNLOADS:-{downloads}}}"
CCACHE_STORE="${{MLBUILD_CCACHE_DIR:-{ccache}}}"
STEP_TIMES="${{MLBUILD_STEP_TIMES:-}}" step_name="" step_wall=0 step_cpu=0
step() {{  # TASK: the step that starts now (empty: the end); the one before is timed into $STEP_TIMES
  [ -n "$STEP_TIMES" ] || return 0
  local stat now cpu
  # This shell's and its waited-for children's user and system time: /proc/<pid>/stat fields 14-17.
  read -r -a stat < /proc/$$/stat
  now=${{EPOCHREALTIME//[!0-9]/}} cpu=$(( stat[13] + stat[14] + stat[15] + stat[16] ))
  if [ -n "$step_name" ]; then
    printf '%s\t%d\t%d\n' "$step_name" $(( (now - step_wall) / 1000 )) \
      $(( (cpu - step_cpu) * 1000 / $(getconf CLK_TCK) )) >> "$STEP_TIMES"
  fi
  step_name=$1 step_wall=$now step_cpu=$cpu
}}
"""


def export(project, tasks: list[str], asked: str | None = None) -> str:
    """The shell script that builds the tasks and everything they need, each step once (asked: the command's words)."""
    graph = project.graph
    for task in tasks:
        if task not in graph:
            raise InputError(f"script: no task {task!r}; `doit list --all` shows them")
    needed = graph.subgraph(set(tasks).union(*(nx.ancestors(graph, task) for task in tasks)))
    order = list(nx.lexicographical_topological_sort(needed))
    script = ShellScript(project)
    title = project.steps[tasks[0]].doc if len(tasks) == 1 else f"{len(tasks)} tasks: {', '.join(tasks)}"
    parts = [HEADER.format(title=title, task=asked or " ".join(tasks), count=len(order),
                           downloads=shlex.quote(str(project.config.download_dir)),
                           ccache=shlex.quote(str(project.config.ccache_dir)))]
    steps = []
    for name in order:
        step = project.steps[name]
        steps.append(f"\n# {'=' * 78}\n# {name}: {step.doc}\nstep {name}\n")
        deps = step.deps
        if deps:
            steps.append(f"# after: {', '.join(deps)}\n")
        steps.append(step.shell(script))  # the Step protocol (steps/base.py): every kind has its shell form
    steps.append(f'\nstep ""  # the end: the last step timed\necho "built {" ".join(tasks)} under $ROOT"\n')
    return "".join(parts + list(script.preludes.values()) + steps)


class ShellScript:
    """What a step's shell form is written with: the tree's paths as "$ROOT", quoting, files, hooks, overlays."""

    # Like trees.merge_tree (shutil.copy2 per file): modes and times kept, links copied as links,
    # hard links not kept (mke2fs -d would keep them, and the disk image would differ).
    COPY = "cp -RP --preserve=mode,timestamps"

    def __init__(self, project):
        self.project = project
        # Longest first: the per-toolchain tree lies inside the build folder.
        trees = {project.target_build_dir: "$ROOT", project.build_dir: "$ROOT", project.target_dir: "$ROOT/target",
                 project.config.ccache_dir: "$CCACHE_STORE"}  # the header sets it (MLBUILD_CCACHE_DIR overrides)
        self.trees = dict(sorted(((str(path), variable) for path, variable in trees.items()), key=lambda item: -len(item[0])))
        # A tree's path wherever it starts a value or follows a separator (`:` of PATH, `=` of
        # -ffile-prefix-map=<path>=…, a blank between flags), and ends one or goes on with a separator
        # or a `/`: never a folder that merely starts with the same letters.
        self._tree_paths = re.compile(r"(?<![^\s=:,])(" + "|".join(map(re.escape, self.trees)) + r")(?=$|[\s=:,/])")
        self.root = str(project.root)  # ccache's base folder: paths below it are hashed relative to it
        self.preludes = {}  # what prelude() was given: written after the header, before the first step

    # --- quoting ------------------------------------------------------------------------

    def path(self, path) -> str:
        """A path as a shell word, the build folder replaced by "$ROOT"."""
        return self.word(str(path))

    def word(self, text: str) -> str:
        """text as one shell word; the project's folders in it, wherever they are, become variables."""
        if text == self.root:
            return '"$ROOT"'
        pieces, last = [], 0
        for match in self._tree_paths.finditer(text):
            if match.start() > last:
                pieces.append(shlex.quote(text[last:match.start()]))
            pieces.append(f'"{self.trees[match.group(1)]}"')
            last = match.end()
        if last < len(text) or not pieces:
            pieces.append(shlex.quote(text[last:]))
        return "".join(pieces)

    def prelude(self, key: str, text: str) -> None:
        """text once at the top of the script, however many steps ask for it: shell functions they share."""
        self.preludes.setdefault(key, text)

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

    @staticmethod
    def secret_url(url: str, variable: str, comments: list, optional: bool = False) -> str:
        """url as a shell word; one holding credentials becomes "$variable", which whoever runs the script sets
        (a comment says to what, redacted): the secret itself is never written. optional: one of several
        alternatives, empty when unset (the script goes on to the next) instead of stopping the script."""
        shown = redact(url)
        if shown == url:
            return shlex.quote(url)
        comment = f"# set {variable} to {shown} with its credentials (they are not written here)\n"
        if comment not in comments:
            comments.append(comment)
        return f'"${{{variable}:-}}"' if optional else f'"${{{variable}:?set {variable}: see the comment above}}"'

    # --- shapes several kinds of step share ------------------------------------------------

    def hooks(self, kind: str, values: dict, folder: str) -> str:
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

    def overlay(self, rendered: dict, s: str, origin: str, entries) -> str:
        """An overlay's entries, as mlbuild installs them (system/overlay.py): copies with their modes, links, rendered .j2 files.

        rendered: {(origin, path): text} of the overlays' .j2 files."""
        out = [f"# overlay {origin}\n"]
        for entry in entries:
            target = f"{s}/{shlex.quote(entry.path)}"
            if entry.kind == "dir":
                out.append(f"[ -d {target} ] || {{ mkdir -p {target} && chmod {entry.mode:o} {target}; }}\n")
            elif entry.kind == "link":
                out.append(f"rm -f {target}\nln -s {shlex.quote(os.readlink(entry.source))} {target}\n")
            elif entry.kind == "template":
                out.append(f"rm -f {target}\n" + self.file(target, rendered[(origin, entry.path)], f"{entry.mode:o}"))
            else:
                out.append(f"rm -f {target}\ncp {self.path(entry.source)} {target}\nchmod {entry.mode:o} {target}\n")
        return "".join(out)


def script_tasks(project, names: list[str]) -> list[str]:
    """The tasks the names mean: a task, a component-arch (build: implied), or a group as `doit build` runs it."""
    tasks = []
    for name in names:
        if name in ("build", "fetch"):  # what `doit build` / `doit fetch` run: the default build's tasks
            tasks += [step.name for step in project.ordered_steps()
                      if step.name.startswith(name + ":") and project.in_default_build(step.name)]
        else:
            tasks.append(name if ":" in name else f"build:{name}")
    return list(dict.fromkeys(tasks))


def cmd_script(project, args) -> int:
    """Print the whole build of tasks as one linear shell script (`mlbuild script build:target-x86_64 > build.sh`)."""
    print(export(project, script_tasks(project, args.tasks), " ".join(args.tasks)), end="")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("script", help=cmd_script.__doc__)
    parser.add_argument("tasks", nargs="+", metavar="task",
                        help="tasks, e.g. build:target-x86_64 or busybox-arm64; `build` for what `doit build` builds")
    parser.set_defaults(handler=cmd_script)
