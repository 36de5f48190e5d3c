"""`doit` as mlbuild installs it: doit itself, with the configuration file it reads first made safe to read.

doit reads pyproject.toml (its [tool.doit] table) when it starts, before any of
mlbuild's code runs: a pyproject.toml that is not valid TOML or not UTF-8 would
reach the user as doit's traceback. This entry point, installed as the `doit`
command by mlbuild's package, turns exactly those failures into one line and
is doit's own main otherwise. (`python -m doit` is doit's own, untouched.)

It also works from any subfolder of the checkout (build/, recipes/busybox/), as git does:
without a dodo.py here and without -f or -d, it moves to the nearest folder above that
has one before doit starts, so doit reads that folder's pyproject.toml too (its
[tool.doit] table, where mlbuild's list, info and forget commands are declared). doit's
own seek (`-k`, DOIT_SEEK_FILE) finds dodo.py and moves there too, but only after it read
pyproject.toml from the current folder: it would run doit's forget, not mlbuild's.
"""

import os
import sys
import tomllib
from pathlib import Path

from mlbuild.frontend.closed_pipe import quiet_when_the_reader_goes

# Options that choose the dodo file or the folder: then doit decides, as always.
LOADER_OPTIONS = ("-f", "--file", "-d", "--dir")


def checkout_folder(start: Path, argv: list[str], environ=os.environ) -> Path | None:
    """The nearest folder above start with a dodo.py, when doit would find none in start itself."""
    if (start / "dodo.py").exists() or environ.get("DOIT_FILE"):
        return None
    if any(arg.split("=", 1)[0] in LOADER_OPTIONS or arg.startswith(("-f", "-d")) and len(arg) > 2 for arg in argv):
        return None
    return next((folder for folder in start.parents if (folder / "dodo.py").is_file()), None)


@quiet_when_the_reader_goes  # `doit help | head -1`: no "Exception ignored … BrokenPipeError" at exit
def main() -> None:
    from doit.doit_cmd import DoitMain

    folder = checkout_folder(Path.cwd(), sys.argv[1:])
    if folder is not None:
        os.chdir(folder)  # before DoitMain reads pyproject.toml
    try:
        doit = DoitMain()
    except tomllib.TOMLDecodeError as error:
        sys.exit(f"doit: pyproject.toml: not valid TOML: {error}")
    except UnicodeDecodeError as error:
        sys.exit(f"doit: pyproject.toml: not UTF-8 text ({error.reason} at byte {error.start})")
    except OSError as error:
        sys.exit(f"doit: {error.filename or 'pyproject.toml'}: {error.strerror}")
    sys.exit(doit.run(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
