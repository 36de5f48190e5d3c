"""fetch:<recipe>: download (or take from the cache), verify, unpack and patch a source.

With an artifact cache configured, the unpack waits until a build needs the source
(ensure_source): a build restored from the cache never does, and a fresh clone
against a warm cache unpacks no kernel or llvm-project at all, as BitBake skips
do_unpack under sstate. Without one, every consumer will build, so fetch unpacks
at once. The output hash is the same either way: a function of the checksums and
patches, not of the tree.

With a local source override (sources/override.py) it copies the user's folder instead:
no download, no checksum and, as Buildroot does for <PKG>_OVERRIDE_SRCDIR, no patches:
the folder is the source as the user wants it built.
"""

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import subprocess
import threading
from functools import cached_property
from pathlib import Path

from mlbuild import jobserver
from mlbuild.console import say
from mlbuild.credentials import redact
from mlbuild.errors import MlbuildError
from mlbuild.sources.override import SKIP
from mlbuild.trees import copy_tree, remove_tree, replace_tree
from mlbuild.sources.unpack import unpack
from mlbuild.steps.base import Step


# The exported script's fetching (mlbuild script), as sources/download.py does it, written once
# before the first fetch. Each function sets $archive and succeeds, or says why not and fails, so
# that a fetch is one chain of alternatives tried in order.
SHELL_FETCH = r"""
# --- fetching, as mlbuild does (src/mlbuild/sources/download.py) ---------------------------------
# The download cache: <folder>/<sha256>/<file>, whatever the file is called (mlbuild names a Debian
# tarball as Debian does, musl_1.2.3.orig.tar.gz); a file counts only if its checksum is right.
cached() {  # SHA256
  local file
  for file in "$DOWNLOADS/$1"/*; do
    if [ -f "$file" ] && ! [ -L "$file" ] && [ "$(sha256sum < "$file" | cut -d' ' -f1)" = "$1" ]; then
      archive=$file
      return 0
    fi
  done
  return 1
}
# A download enters the cache only once its checksum is right; nothing is left of a wrong one.
admit() {  # SHA256 NAME FILE
  if [ "$(sha256sum < "$3" | cut -d' ' -f1)" != "$1" ]; then
    echo "$task: sha256 mismatch for $2" >&2
    rm -f "$3"
    return 1
  fi
  mkdir -p "$DOWNLOADS/$1" && mv "$3" "$DOWNLOADS/$1/$2" && archive="$DOWNLOADS/$1/$2"
}
from_url() {  # SHA256 NAME URL [SHOWN: the URL without its credentials, which are in a variable]
  local part shown=${4:-$3}
  if [ -z "$3" ]; then
    echo "$task: skipping $shown: its credentials are not set (see the comment above)" >&2
    return 1
  fi
  echo "$task: trying $shown" >&2
  mkdir -p "$DOWNLOADS/.partial" && part=$(mktemp "$DOWNLOADS/.partial/$1-XXXXXX") || return 1
  # shellcheck disable=SC2086 # CURL_LIMITS: several options
  if ! curl -fsSL --retry 2 $CURL_LIMITS -o "$part" "$3"; then
    echo "$task: $shown: download failed" >&2
    rm -f "$part"
    return 1
  fi
  admit "$1" "$2" "$part"
}
# Debian's source archive with no deb-src line in the system's apt configuration: a private apt
# state in a temporary folder (a deb-src list derived from the machine's own deb entries), made and
# updated on first use, removed when the script ends. Nothing in /etc changes; no root needed.
APT_STATE=
private_apt() {
  local file
  if [ -z "$APT_STATE" ]; then
    APT_STATE=$(mktemp -d "${TMPDIR:-/tmp}/mlbuild-apt.XXXXXX") || return 1
    trap 'rm -rf "$APT_STATE"' EXIT
    mkdir -p "$APT_STATE/sources.list.d" "$APT_STATE/state/lists/partial" "$APT_STATE/cache/archives/partial"
    for file in /etc/apt/sources.list.d/*.sources; do
      if [ -f "$file" ] && grep -q '^Types:.*\bdeb\b' "$file"; then
        sed 's/^Types:.*$/Types: deb-src/' "$file"
        echo
      fi
    done > "$APT_STATE/sources.list.d/derived.sources"
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      if [ -f "$file" ]; then
        sed -n 's/^deb /deb-src /p' "$file"
      fi
    done > "$APT_STATE/sources.list"
  fi
  APT=(apt-get -q -o Dir::Etc::SourceList="$APT_STATE/sources.list" -o Dir::Etc::SourceParts="$APT_STATE/sources.list.d"
       -o Dir::State="$APT_STATE/state" -o Dir::Cache="$APT_STATE/cache" -o Debug::NoLocking=1
       -o APT::Sandbox::User="$(id -un)")
  if ! [ -e "$APT_STATE/updated" ]; then
    "${APT[@]}" update >&2 || { echo "$task: apt-get update failed" >&2; return 1; }
    touch "$APT_STATE/updated"
  fi
}
from_debian() {  # SHA256 PACKAGE=VERSION
  local work orig
  echo "$task: trying Debian source $2" >&2
  command -v apt-get > /dev/null || { echo "$task: apt-get is not installed (needed for Debian source packages)" >&2; return 1; }
  private_apt || return 1
  work=$(mktemp -d "$APT_STATE/source.XXXXXX") || return 1
  if ! (cd "$work" && "${APT[@]}" source --download-only --tar-only "$2" >&2); then
    echo "$task: apt-get source $2 failed" >&2
    return 1
  fi
  for orig in "$work"/*.orig.tar.*; do
    if [ -f "$orig" ]; then
      admit "$1" "$(basename "$orig")" "$orig"
      return
    fi
  done
  echo "$task: apt-get source $2 gave no .orig tarball" >&2
  return 1
}

"""


def _shown(url: str) -> str:
    """The SHOWN argument of the script's from_url: the URL redacted, when it holds credentials."""
    shown = redact(url)
    return "" if shown == url else f" {shlex.quote(shown)}"


class FetchStep(Step, kind="fetch"):
    # An unpacked source is the download cache's tarball plus patches: unpacking it
    # again is cheaper than moving a tree several times the tarball's size.
    artifact = False
    # Unpacking is xz and tar waiting on the disk (docs/performance.md): no job token, so builds that
    # are ready compile beside it. A lazy unpack (ensure_source) runs under its build's token.
    takes_job = False
    # Its output is a function of the checksums and patches (_tree_identity), whatever code unpacks it.
    code_roots = ()

    def __init__(self, project, name: str, node: dict):
        super().__init__(project, name, node)
        recipe = self.recipe = project.recipes[node["recipe"]]
        self.doc = f"download and unpack {recipe.name} {recipe.version}"
        if self.lazy:
            self.doc = f"download and verify {recipe.name} {recipe.version} (unpacked when a build needs it)"
        self._unpacking = threading.Lock()  # doit's threads: two builds of one source unpack it once
        if self.override:
            self.doc = f"copy {recipe.name}'s source from the local override {self.override.text}"

    @property
    def override(self):
        """The local folder this source comes from instead of its tarball (sources/override.py), or None."""
        return self.project.overrides.get(self.recipe.name)

    @property
    def output(self) -> Path:
        return self.project.build_dir / "src" / self.recipe.name

    @property
    def lazy(self) -> bool:
        """Whether the unpack waits for the first build that needs the source (see the module's doc)."""
        return not self.override and bool(self.project.config.cache)

    # In the tree, so that it is committed with it by the same rename: a tree holds it only once it is
    # whole, and a fetch that unpacked at once (no cache) is known as unpacked after the cache is turned on.
    MARKER = ".mlbuild-unpacked"

    @property
    def patches(self) -> tuple[Path, ...]:
        """The recipe's patches, in the order they are applied."""
        folder = self.project.recipe_folder(self.recipe.name)
        return tuple(folder / patch for patch in self.recipe.patches)

    @property
    def source_in_use(self):
        """The source alternative this tree uses: the one in the download cache, else the first listed."""
        for source in self.recipe.sources:
            folder = self.project.config.download_dir / source.sha256
            if folder.is_dir() and any(folder.iterdir()):
                return source
        return self.recipe.sources[0]

    @cached_property
    def override_hash(self) -> str:
        # Once per run: the progress display's plan and doit's up-to-date check both ask. Taken before
        # the copy in any case (run() hashes again right before copying), so an edit after it shows next time.
        return self.override.tree_hash()

    def own_inputs(self) -> dict:
        if self.override:
            # The folder's content is the whole identity: the tarball and the patches are not used.
            return {"override": self.override_hash}
        # Any alternative gives the same release, so the set of checksums is the identity.
        return {
            "recipe.sources": sorted({source.sha256 for source in self.recipe.sources}),
            "recipe.strip_components": [source.strip_components for source in self.recipe.sources],
            **{f"file:{patch.name}": hashlib.sha256(patch.read_bytes()).hexdigest() for patch in self.patches},
        }

    def run(self, staging: Path, log) -> None:
        if self.override:
            # Hashed before copying: an edit made during the copy shows as a change next time.
            self.copied_hash = self.override.tree_hash()
            log(f"copying the local override {self.override.text} ({self.override.path}), without .git; no patches applied")
            try:
                copy_tree(self.override.path, staging, SKIP)
            except FileNotFoundError as error:
                remove_tree(staging)
                raise MlbuildError(f"fetch:{self.recipe.name}: source override {self.override.text}: "
                                   f"{error.filename} vanished while it was copied; run again") from None
            except BaseException:
                remove_tree(staging)  # no half-copied tree is left behind
                raise
            return
        archive, source = self._download(log)
        if self.lazy:
            log(f"{archive.name} verified; unpacked when a build needs it (an artifact cache may make that never)")
            return
        staging.rmdir()  # made by the engine; unpack wants a folder that does not exist yet
        self._unpack(archive, source, staging, log)

    def _download(self, log):
        """The verified tarball in the download cache, and the recipe's source entry it is."""
        config = self.project.config
        from mlbuild.sources.download import fetch  # urllib and ssl: loaded when a source is fetched, not on a no-op
        from mlbuild.sources.transfer import Limits

        # A line per downloaded file (size, time, rate) on the console too: downloads are the slow part of a fetch.
        archive = fetch(self.recipe, config.download_dir, config.mirrors, log, offline=config.offline,
                        say=lambda line: say(f"mlbuild: {line}"), limits=Limits.of(config))
        return archive, next(s for s in self.recipe.sources if s.sha256 == archive.parent.name)

    def ensure_source(self, log) -> Path:
        """The unpacked source, unpacked and patched now if the fetch left that for later."""
        # Checked whatever the mode: a fetch made while a cache was configured left no tree, and
        # the cache may have been turned off since.
        if self.override or self._is_unpacked():
            return self.output
        # Unpacking (or waiting for another build's unpack of it) waits on the disk: the build's
        # job token goes back to the pool meanwhile (jobserver.py), so other tasks compile.
        with jobserver.lent(), self._unpacking, self._unpack_lock():
            if self._is_unpacked():
                return self.output
            staging = self.output.with_name(f".{self.recipe.name}.unpacking")
            remove_tree(staging)
            archive, source = self._download(log)
            self._unpack(archive, source, staging, log)
            replace_tree(staging, self.output)
            return self.output

    @contextlib.contextmanager
    def _unpack_lock(self):
        """The source's unpack, one process at a time: `mlbuild unpack`, `doit menuconfig:` or a run's
        build may ask for it at once (the tree lock is a run's; doit's threads share _unpacking)."""
        lock = self.project.build_dir / "locks" / f"unpack-{self.recipe.name}"  # not in src/: a source's folder holds sources
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # its own open: it excludes other processes and other opens alike
            yield
        finally:
            os.close(fd)

    def _is_unpacked(self) -> bool:
        try:
            return (self.output / self.MARKER).read_text() == self._tree_identity()
        except (OSError, UnicodeDecodeError):
            return False

    def _unpack(self, archive: Path, source, staging: Path, log) -> None:
        """Unpack and patch into staging, which must not exist; nothing is left there on a failure."""
        log(f"unpacking {archive.name}")
        # unpack removes staging itself when it refuses the archive; a failed patch removes it here:
        # no half-unpacked or half-patched tree is ever left behind.
        unpack(archive, staging, source.strip_components, f"fetch:{self.recipe.name}: {archive.name}")
        try:
            for patch in self.patches:
                log(f"applying {patch.name}")
                result = subprocess.run(
                    ["patch", "-p1", "--batch", "--forward", "-d", str(staging), "-i", str(patch)],
                    stdout=log.file, stderr=subprocess.STDOUT,
                )
                if result.returncode != 0:
                    where = self.project.recipe_label(self.recipe.name).removesuffix(".toml")
                    raise MlbuildError(f"fetch:{self.recipe.name}: patch {where}/{patch.name} does not apply")
            (staging / self.MARKER).write_text(self._tree_identity())  # last: the tree is whole
        except BaseException:
            remove_tree(staging)
            raise

    def output_hash(self, folder: Path) -> str:
        if self.override:
            return self.copied_hash  # trees.hash_tree of the copy: the folder's hash, taken just before copying
        return self._tree_identity()

    def known_output_hash(self) -> str | None:
        return None if self.override else self._tree_identity()

    def _tree_identity(self) -> str:
        # The tree is a pure function of the release and the patches: hashing 1.5 GB of kernel is not
        # needed, and it is known before anything is unpacked. The same for every alternative tarball
        # (inputs()), so trees that fetched the release from different places share cache entries.
        return hashlib.sha256(f"source {sorted(self.inputs().items())}".encode()).hexdigest()

    def bill_of_materials(self) -> list:
        return []  # a source ships as the components built from it (BuildStep.bill_of_materials)

    def shell(self, script) -> str:
        recipe = self.recipe
        destination = script.path(self.output)
        if self.override:  # a local folder (sources/override.py): copied as mlbuild copies it, without .git, unpatched
            return (f"# {recipe.name}: the local source override {self.override.text}; no download, no patches\n"
                    f"rm -rf {destination}\nmkdir -p {destination}\n"
                    f"tar -C {shlex.quote(str(self.override.path))} --exclude=.git -cf - . | tar -C {destination} -xpf -\n")
        from mlbuild.sources.download import FALLBACK_NAME, source_names

        config = self.project.config
        # The download limits mlbuild keeps to (docs/usage.md, download_*), in curl's words.
        limits = f"--max-time {config.download_timeout} --max-filesize {config.download_max_size}"
        if config.download_min_rate:
            limits += f" --speed-limit {config.download_min_rate} --speed-time {config.download_rate_window}"
        script.prelude("fetch", f'CURL_LIMITS="{limits}"\n' + SHELL_FETCH)
        out = []
        # As sources/download.py's fetch(): the download cache first (each alternative's checksum, any
        # file name), then each alternative in the recipe's order: its URL, the mirrors, Debian's archive.
        sources = recipe.sources
        tries = [f"cached {sha}" for sha in dict.fromkeys(source.sha256 for source in sources)]
        variable = re.sub(r"[^A-Z0-9]", "_", recipe.name.upper())
        urls = 0
        for source in sources:
            names = source_names(source)
            if source.url:
                urls += 1
                secret = f"MLBUILD_SOURCE_{variable}" + (f"_{urls}" if urls > 1 else "")
                tries.append(f"from_url {source.sha256} {shlex.quote(names[0] if names else FALLBACK_NAME)} "
                             f"{script.secret_url(source.url, secret, out, optional=True)}{_shown(source.url)}")
            for index, mirror in enumerate(self.project.config.mirrors, 1):
                base = script.secret_url(mirror.rstrip("/"), f"MLBUILD_MIRROR_{index}", out, optional=True)
                for name in names:
                    tries.append(f"from_url {source.sha256} {shlex.quote(name)} {base}/{shlex.quote(name)}"
                                 f"{_shown(mirror.rstrip('/') + '/' + name)}")
            if source.debian:
                tries.append(f"from_debian {source.sha256} {shlex.quote(source.debian)}")
        out.append(f"task={self.name}\n" + " \\\n  || ".join(tries)
                   + f' \\\n  || {{ echo "{self.name}: every source failed" >&2; exit 1; }}\n')
        strips = {source.sha256: source.strip_components for source in sources}
        if len(set(strips.values())) == 1:
            strip = str(sources[0].strip_components)
        else:  # the alternative found decides: Debian may repack under another top folder
            cases = " ".join(f"{sha}) strip={count} ;;" for sha, count in strips.items())
            out.append(f'case "$(basename "$(dirname "$archive")")" in {cases} esac\n')
            strip = "$strip"
        out.append(
            f"rm -rf {destination}\n"
            f"mkdir -p {destination}\n"
            f'tar -xf "$archive" -C {destination} --strip-components={strip} --no-same-owner --no-same-permissions\n'
        )
        for patch in self.patches:
            out.append(f"# recipes/{recipe.name}/{patch.name}\n")
            out.append(script.file(f'"$ROOT/{patch.name}"', patch.read_text()))
            out.append(f'patch -p1 --batch --forward -d {destination} -i "$ROOT/{patch.name}"\nrm "$ROOT/{patch.name}"\n')
        return "".join(out)
