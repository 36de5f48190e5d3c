"""`mlbuild mirror <folder>`: the source tarballs this configuration needs, as a mirror for another machine.

The folder holds each tarball under the file name the other machine asks a mirror for
(`mirrors`: base URL + file name; download.source_names) and a SHA256SUMS file. Tarballs
come from the download cache (verified), downloaded first when missing. Each file is
linked or copied beside its place and renamed into it, SHA256SUMS last: an interrupted
run leaves the folder as it was or with whole files only.
"""

import os
import shutil
import sys
from pathlib import Path

from mlbuild.console import say
from mlbuild.errors import InputError, MlbuildError
from mlbuild.trees import write_atomic

SUMS = "SHA256SUMS"


def cmd_mirror(project, args) -> int:
    """Write the sources this configuration needs, and SHA256SUMS, into a folder that serves as a mirror."""
    from mlbuild.sources.download import fetch, source_names  # urllib and ssl: only when a command fetches
    from mlbuild.sources.transfer import Limits

    folder = Path(args.folder).resolve()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"mirror: {args.folder}: expected a folder, found a file")
    folder.mkdir(parents=True, exist_ok=True)
    config = project.config
    sums = _read_sums(folder)
    written = {}
    for step in project.ordered_steps():
        if not step.name.startswith("fetch:") or not project.in_default_build(step.name):
            continue
        recipe = step.recipe
        archive = fetch(recipe, config.download_dir, config.mirrors, lambda line: None, offline=config.offline,
                        say=lambda line: say(f"mlbuild: {line}", sys.stderr), limits=Limits.of(config))
        sha256 = archive.parent.name
        source = next(source for source in recipe.sources if source.sha256 == sha256)
        # A URL source is asked for by its URL's file name; a Debian one by its orig tarball's, which apt kept.
        name = (source_names(source) or [archive.name])[0] if source.url else archive.name
        if written.get(name, sha256) != sha256:
            raise MlbuildError(f"mirror: recipes/{recipe.name}.toml: two sources share the file name {name} "
                               "with different sha256s; a mirror cannot hold both")
        _place(archive, folder / name, sums.get(name) == sha256)
        written[name] = sums[name] = sha256
    sums = {name: sha for name, sha in sums.items() if (folder / name).is_file()}
    write_atomic(folder / SUMS, "".join(f"{sha}  {name}\n" for name, sha in sorted(sums.items())).encode())
    size = sum((folder / name).stat().st_size for name in written)
    print(f"mirror: {len(written)} source tarball(s), {size / (1 << 20):.1f} MiB, and {SUMS} in {folder}; "
          f"on the other machine: mirrors = [\"{folder.as_uri()}\"] (or the URL that serves this folder)")
    return 0


def _place(archive: Path, destination: Path, already: bool) -> None:
    """The verified archive at destination: a hard link where possible (no copy of 300 MB), else a copy."""
    if already and destination.is_file() and destination.stat().st_size == archive.stat().st_size:
        return
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        try:
            os.link(archive, temporary)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(archive, temporary)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def _read_sums(folder: Path) -> dict[str, str]:
    """{name: sha256} of an existing SHA256SUMS (other configurations' files stay listed)."""
    try:
        lines = (folder / SUMS).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    sums = {}
    for line in lines:
        sha, _, name = line.partition("  ")
        if len(sha) == 64 and name and "/" not in name:
            sums[name.lstrip("*")] = sha
    return sums


def add_parser(commands) -> None:
    parser = commands.add_parser("mirror", help=cmd_mirror.__doc__)
    parser.add_argument("folder", help="the folder to write (made if missing; files already there are kept)")
    parser.set_defaults(handler=cmd_mirror)
