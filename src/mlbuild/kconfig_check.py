"""Check that every symbol a Kconfig fragment requests took effect in the final .config, and say why not.

olddefconfig and merge_config.sh drop a symbol whose dependencies are missing
and still exit 0. Run from build scripts:
    $MLBUILD_PYTHON -m mlbuild.kconfig_check [--kconfig SRC/Kconfig] .config fragment.config...
Later fragments override earlier ones, as in merge_config.sh.

With --kconfig, a dropped symbol is explained from the project's own Kconfig
files (read with kconfiglib, only when something was dropped): the unmet terms
of its dependencies evaluated against the final configuration, and what to add
("it depends on BLK_DEV, which is n; add CONFIG_BLK_DEV=y"), or what selects it.
The kernel's Kconfig reads srctree, ARCH, SRCARCH, CC, LD… from the environment.
"""

import io
import os
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


def dropped(final: Path, fragments: list[Path]) -> list[tuple[str, str, str, str]]:
    """(where, symbol, requested, got) for every fragment symbol the final .config does not hold."""
    actual = {name: value for name, (value, _) in read_symbols(final).items()}
    requested: dict[str, tuple[str, str]] = {}
    for fragment in fragments:
        for name, (value, number) in read_symbols(fragment).items():
            requested[name] = (value, f"{fragment.name}:{number}")
    return [(where, name, value, actual.get(name, "n")) for name, (value, where) in requested.items()
            if actual.get(name, "n") != value]


def dropped_symbols(final: Path, fragments: list[Path]) -> list[str]:
    return [f"{where}: {name}: requested {value}, got {'not set' if got == 'n' else got}"
            for where, name, value, got in dropped(final, fragments)]


def load_kconfig(root: Path, final: Path):
    """The Kconfig tree at root with the final configuration loaded (kconfiglib)."""
    import kconfiglib

    class Kconfig(kconfiglib.Kconfig):
        # kconfiglib 14 predates the bare `modules` attribute (Linux >= 5.13): read it as `option modules`.
        def _open(self, filename, mode):
            opened = super()._open(filename, mode)
            if "r" not in mode:
                return opened
            with opened:
                text = re.sub(r"(?m)^(\s*)modules\s*$", r"\1option modules", opened.read())
            return io.StringIO(text)

    final = final.resolve()
    here = os.getcwd()
    os.environ.setdefault("srctree", str(root.parent))
    os.chdir(os.environ["srctree"])  # `source` paths are relative to the source tree
    try:
        tree = Kconfig(str(root.resolve()), warn=False)
        tree.load_config(str(final), replace=True)
    finally:
        os.chdir(here)
    return tree


def explain(tree, symbol: str, requested: str) -> str:
    """Why a requested value did not survive, from the symbol's dependencies in the final configuration."""
    import kconfiglib

    name = symbol.removeprefix("CONFIG_")
    sym = tree.syms.get(name)
    if sym is None or not sym.nodes:
        return f"{name} does not exist in this Kconfig (misspelt, or from another version)"
    tristate = {"n": 0, "m": 1, "y": 2}
    wanted = tristate.get(requested, 1)  # a string or number needs its dependencies at least m
    shown = {0: "n", 1: "m", 2: "y"}
    dependency = sym.direct_dep
    if requested != "n" and kconfiglib.expr_value(dependency) < wanted:
        unmet, fixes = [], []
        for term in kconfiglib.split_expr(dependency, kconfiglib.AND):
            value = kconfiglib.expr_value(term)
            if value >= wanted:
                continue
            if isinstance(term, kconfiglib.Symbol) and not term.is_constant:
                unmet.append(f"{term.name}, which is {shown[value]}")
                fixes.append(f"CONFIG_{term.name}={'y' if wanted == 2 else 'm'}")
            else:
                unmet.append(f"{kconfiglib.expr_str(term)}, which is {shown[value]}")
        advice = f"; add {' and '.join(fixes)}" if fixes else ""
        return f"it depends on {', and on '.join(unmet)}{advice}"
    selected = kconfiglib.expr_value(sym.rev_dep)
    if requested == "n" and selected:
        selectors = [kconfiglib.expr_str(term) for term in kconfiglib.split_expr(sym.rev_dep, kconfiglib.OR)
                     if kconfiglib.expr_value(term)]
        return f"it is selected by {', '.join(selectors)}"
    if not sym.visibility:
        return "it has no prompt here, so a fragment cannot set it: set a symbol that selects or defaults it"
    if sym.type in (kconfiglib.INT, kconfiglib.HEX) and sym.ranges:
        return f"its value must be in its range ({', '.join(kconfiglib.expr_str(low) + '..' + kconfiglib.expr_str(high) for low, high, _ in sym.ranges)})"
    return f"its dependencies are met ({kconfiglib.expr_str(dependency)}); a later fragment or a choice overrides it"


def main(argv: list[str]) -> int:
    kconfig = None
    if argv[:1] == ["--kconfig"] and len(argv) > 1:
        kconfig, argv = Path(argv[1]), argv[2:]
    if len(argv) < 2:
        print("usage: python -m mlbuild.kconfig_check [--kconfig KCONFIG] FINAL_CONFIG FRAGMENT...", file=sys.stderr)
        return 2
    final, fragments = Path(argv[0]), [Path(name) for name in argv[1:]]
    problems = dropped(final, fragments)
    if problems:
        print(f"mlbuild: {len(problems)} symbol(s) requested by a fragment did not take effect in {final.name}:", file=sys.stderr)
        tree, why_not = None, ""
        if kconfig is not None:
            try:
                tree = load_kconfig(kconfig, final)
            except Exception as error:  # kconfiglib raises its own and OSError; the check itself stands without it
                why_not = f"  (not explained: kconfiglib could not read {kconfig}: {str(error).splitlines()[0] if str(error) else type(error).__name__})"
        for where, name, value, got in problems:
            line = f"  {where}: {name}={value} was dropped (got {'not set' if got == 'n' else got})"
            if tree is not None:
                line += f": {explain(tree, name, value)}"
            print(line, file=sys.stderr)
        if why_not:
            print(why_not, file=sys.stderr)
        return 1
    print(f"mlbuild: all {sum(len(read_symbols(f)) for f in fragments)} fragment symbols took effect")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
