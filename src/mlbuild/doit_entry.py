"""`doit` as mlbuild installs it: doit itself, with the configuration file it reads first made safe to read.

doit reads pyproject.toml (its [tool.doit] table) when it starts, before any of
mlbuild's code runs: a pyproject.toml that is not valid TOML or not UTF-8 would
reach the user as doit's traceback. This entry point, installed as the `doit`
command by mlbuild's package, turns exactly those failures into one line and
is doit's own main otherwise. (`python -m doit` is doit's own, untouched.)
"""

import sys
import tomllib


def main() -> None:
    from doit.doit_cmd import DoitMain

    try:
        doit = DoitMain()
    except tomllib.TOMLDecodeError as error:
        sys.exit(f"doit: pyproject.toml: not valid TOML: {error}")
    except UnicodeDecodeError as error:
        sys.exit(f"doit: pyproject.toml: not UTF-8 text ({error.reason} at byte {error.start})")
    except OSError as error:
        sys.exit(f"doit: {error.filename or 'pyproject.toml'}: {error.strerror}")
    sys.exit(doit.run(sys.argv[1:]))
