#!/usr/bin/env python3
"""Where an LLVM build's time goes, from its ninja log: the steps' own times summed by part of the tree.

    scripts/ninja_time.py build/work/clang-arm64/build [--top 12]

Every step that made a file of the folder counts once (its last run: ninja appends a line each
time it builds an output, and an interrupted build resumed later has lines from several runs).
A step's time is its own wall time as ninja saw it, so the sum over steps is the work of the
build (about the jobs' CPU time on a quiet machine), not its wall time: with `-j2` the wall
time is about half of it. Steps are grouped by the part of the tree they build, e.g.
"clang lib/Sema", "LLVM lib/Target/AArch64", "lld", so a reader sees what a trim would save.
"""

import argparse
import sys
from pathlib import Path


def last_runs(log: Path) -> dict[str, int]:
    """Each step's last time in milliseconds, named by its first output (ninja log v5: start, end, mtime, output, hash).

    A step with several outputs has a line for each, with the same command hash: it counts once."""
    steps: dict[str, tuple[str, int]] = {}
    for line in log.read_text(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) != 5 or not (fields[0].isdigit() and fields[1].isdigit()):
            continue  # the "# ninja log v5" header
        start, end, _, output, command = fields
        name = steps[command][0] if command in steps else output
        steps[command] = (name, int(end) - int(start))
    return dict(steps.values())


def part(output: str) -> str:
    """The part of LLVM's tree an output belongs to, as a reader of the tree names it."""
    words = output.split("/")
    if words[:3] == ["tools", "clang", "lib"] and len(words) > 3:
        return f"clang lib/{words[3]}"
    if words[:2] == ["tools", "clang"]:
        return "clang (driver, tablegen'd headers)"
    if words[:2] == ["tools", "lld"]:
        return f"lld {words[2]}" if len(words) > 3 else "lld"
    if words[:2] == ["lib", "Target"] and len(words) > 2 and "." not in words[2]:
        return f"LLVM lib/Target/{words[2]}"
    if words[0] == "lib" and len(words) > 2:
        return f"LLVM lib/{words[1]}"
    if words[0] == "tools" and len(words) > 2:
        return "llvm tools"
    return "other (tablegen'd files, links, install)"


def breakdown(folder: Path) -> list[tuple[str, int, float]]:
    """(part, steps, seconds), most expensive first."""
    log = folder / ".ninja_log"
    if not log.exists():
        raise FileNotFoundError(f"{log}: no ninja log (is {folder} an LLVM build folder that ran?)")
    totals: dict[str, list[float]] = {}
    for output, milliseconds in last_runs(log).items():
        entry = totals.setdefault(part(output), [0, 0.0])
        entry[0] += 1
        entry[1] += milliseconds / 1000
    return sorted(((name, int(steps), seconds) for name, (steps, seconds) in totals.items()), key=lambda row: -row[2])


def table(folder: Path, top: int = 12) -> list[str]:
    """A markdown table of the most expensive parts, the rest summed in one row."""
    rows = breakdown(folder)
    total_steps = sum(steps for _, steps, _ in rows)
    total = sum(seconds for _, _, seconds in rows) or 1.0
    shown, rest = rows[:top], rows[top:]
    if rest:
        shown.append((f"the other {len(rest)} parts", sum(r[1] for r in rest), sum(r[2] for r in rest)))
    lines = ["| part of the tree | steps | step time | share |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {steps:,} | {seconds / 60:.0f} min | {seconds / total:.0%} |" for name, steps, seconds in shown]
    lines.append(f"| **all** | **{total_steps:,}** | **{total / 60:.0f} min** | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a ninja build folder (the one holding .ninja_log)")
    parser.add_argument("--top", type=int, default=12, help="parts shown one by one (default 12)")
    args = parser.parse_args()
    try:
        print("\n".join(table(args.folder, args.top)))
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"ninja_time: {error}")


if __name__ == "__main__":
    main()
