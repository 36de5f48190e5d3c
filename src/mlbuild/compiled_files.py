"""Write the list of source files a Kbuild build really compiled into what it links, for `mlbuild cve`.

Run from build scripts (templates/build/linux.sh.j2, busybox.sh.j2):
    $MLBUILD_PYTHON -m mlbuild.compiled_files SRC BUILD ROOT... [--folder FOLDER...]
ROOT: an archive of BUILD the final link reads (the kernel's vmlinux.a and lib.a files, busybox's
lib.a files; a glob such as '**/lib.a' is expanded here, ** across folders) or an object file; --folder: a folder of
BUILD whose every object is taken (code linked outside the archives: the kernel's boot code, vDSO).

The build folder is kept between runs, so it may hold objects of an older configuration; the
archives are rewritten from the current one, which is why their members, not every *.o, decide.
Each object becomes its source file relative to SRC (x.c, else x.S), or, when SRC has none (a
generated source), its own path. One path a line, sorted, so the same build writes the same file.
"""

import glob
import os
import sys
from pathlib import Path

SOURCE_SUFFIXES = (".c", ".S", ".s")


class ArchiveError(Exception):
    pass


def archive_members(path: Path) -> list[str]:
    """The members of a GNU or thin ar archive, as stored (thin archives: paths relative to the archive's folder)."""
    data = path.read_bytes()
    if data.startswith(b"!<thin>\n"):
        thin = True
    elif data.startswith(b"!<arch>\n"):
        thin = False
    else:
        raise ArchiveError(f"{path}: not an ar archive")
    members, names, position = [], b"", 8
    while position + 60 <= len(data):
        header = data[position:position + 60]
        if header[58:60] != b"`\n":
            raise ArchiveError(f"{path}: damaged member header at byte {position}")
        name, size = header[:16].decode("ascii", "replace").rstrip(), int(header[48:58])
        position += 60
        special = name in ("/", "//", "/SYM64/")
        if name == "//":
            names = data[position:position + size]
        elif name.startswith("#1/"):
            raise ArchiveError(f"{path}: BSD archive names are not read")
        elif not special:
            if name.startswith("/") and name[1:].isdigit():
                start = int(name[1:])
                end = names.find(b"/\n", start)
                name = names[start:end if end >= 0 else None].decode()
            members.append(name.removesuffix("/"))
        if special or not thin:  # a thin archive stores no member's bytes
            position += size + (size & 1)
    return members


def objects(build: Path, roots: list[str], folders: list[str]) -> set[str]:
    """Paths relative to build of the objects the roots and folders hold."""
    found: set[str] = set()
    for root in roots:
        matches = sorted(glob.glob(root, root_dir=build, recursive=True)) if glob.has_magic(root) else [root]
        if not matches:
            raise ArchiveError(f"{build}: nothing matches {root}")
        for match in matches:
            path = build / match
            if not path.is_file():
                raise ArchiveError(f"{path}: no such file (the build made no {match})")
            if path.suffix == ".o":
                found.add(match)
                continue
            for member in archive_members(path):
                found.add(os.path.normpath(os.path.join(os.path.dirname(match), member)))
    for folder in folders:
        for path in (build / folder).rglob("*.o") if (build / folder).is_dir() else ():
            found.add(path.relative_to(build).as_posix())
    return found


def source_of(source: Path, build: Path, obj: str) -> str:
    stem = obj.removesuffix(".o")
    for suffix in SOURCE_SUFFIXES:
        if (source / (stem + suffix)).is_file():
            return stem + suffix
    for suffix in SOURCE_SUFFIXES:
        if (build / (stem + suffix)).is_file():
            return stem + suffix  # generated into the build folder
    return obj


def compiled_files(source: Path, build: Path, roots: list[str], folders: list[str]) -> list[str]:
    return sorted({source_of(source, build, obj) for obj in objects(build, roots, folders)})


def main(argv: list[str]) -> int:
    if "--folder" in argv:
        at = argv.index("--folder")
        argv, folders = argv[:at], argv[at + 1:]
    else:
        folders = []
    if len(argv) < 3:
        print("usage: python -m mlbuild.compiled_files SRC BUILD ROOT... [--folder FOLDER...]", file=sys.stderr)
        return 2
    source, build, roots = Path(argv[0]), Path(argv[1]), argv[2:]
    try:
        listed = compiled_files(source, build, roots, folders)
    except (ArchiveError, OSError, ValueError) as error:
        print(f"mlbuild: the compiled-file list: {error}", file=sys.stderr)
        return 1
    sys.stdout.write("".join(f"{path}\n" for path in listed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
