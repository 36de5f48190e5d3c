"""Check that every symbol a Kconfig fragment requests took effect in the final .config.

olddefconfig and merge_config.sh drop a symbol whose dependencies are missing
and still exit 0. Run from build scripts:
    $MLBUILD_PYTHON -m mlbuild.kconfig_check .config fragment.config...
Later fragments override earlier ones, as in merge_config.sh.
"""

import re
import sys
from pathlib import Path

SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def read_symbols(path: Path) -> dict[str, tuple[str, int]]:
    """symbol -> (value, line number); 'is not set' and =n both read as 'n'."""
    symbols = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if match := SET.match(line):
            value = match.group(2)
            symbols[match.group(1)] = ("n" if value == "n" else value, number)
        elif match := UNSET.match(line):
            symbols[match.group(1)] = ("n", number)
    return symbols


def dropped_symbols(final: Path, fragments: list[Path]) -> list[str]:
    actual = {name: value for name, (value, _) in read_symbols(final).items()}
    requested: dict[str, tuple[str, str]] = {}
    for fragment in fragments:
        for name, (value, number) in read_symbols(fragment).items():
            requested[name] = (value, f"{fragment.name}:{number}")
    problems = []
    for name, (value, where) in requested.items():
        got = actual.get(name, "n")
        if got != value:
            shown = "not set" if got == "n" else got
            problems.append(f"{where}: {name}: requested {value}, got {shown}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m mlbuild.kconfig_check FINAL_CONFIG FRAGMENT...", file=sys.stderr)
        return 2
    final, fragments = Path(argv[0]), [Path(name) for name in argv[1:]]
    problems = dropped_symbols(final, fragments)
    if problems:
        print(f"mlbuild: {len(problems)} symbol(s) requested by a fragment did not take effect in {final.name}"
              " (their dependencies are missing, or another symbol overrides them):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"mlbuild: all {sum(len(read_symbols(f)) for f in fragments)} fragment symbols took effect")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
