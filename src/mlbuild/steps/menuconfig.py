"""menuconfig:<recipe>-<arch>: the interactive Kconfig editor, its changes saved as a fragment.

The recipe's build script configures as usual and, when MLBUILD_ACTION is
"menuconfig", copies .config to $MENUCONFIG_BEFORE, runs the editor, copies
the result to $MENUCONFIG_AFTER and stops (this module names both files). The
symbols that changed are merged into the task's own fragment (BuildStep.own_fragment:
fragments/<recipe>-<arch>.config), which the next build applies (and checks) after
the recipe's own fragments.
"""

from pathlib import Path

from mlbuild.errors import MlbuildError
from mlbuild.kconfig_check import read_symbols
from mlbuild.engine.tree_lock import TreeLock
from mlbuild.trees import write_if_changed


def fragment_line(name: str, value: str) -> str:
    return f"# {name} is not set" if value == "n" else f"{name}={value}"


def changed_symbols(before: Path, after: Path) -> dict[str, str]:
    old = {name: value for name, (value, _) in read_symbols(before).items()}
    new = {name: value for name, (value, _) in read_symbols(after).items()}
    return {name: new.get(name, "n") for name in sorted(set(old) | set(new)) if old.get(name, "n") != new.get(name, "n")}


def merge_into_fragment(fragment: Path, changes: dict[str, str]) -> None:
    """Replace or add the changed symbols' lines; keep the fragment's other lines and comments."""
    lines = fragment.read_text().splitlines() if fragment.exists() else [
        f"# Saved by `doit menuconfig:{fragment.stem}`; applied after the recipe's own fragments."
    ]
    current = read_symbols(fragment) if fragment.exists() else {}
    for name, value in changes.items():
        if name in current:
            lines[current[name][1] - 1] = fragment_line(name, value)
        else:
            lines.append(fragment_line(name, value))
    fragment.parent.mkdir(exist_ok=True)
    write_if_changed(fragment, "\n".join(lines) + "\n")


def run_menuconfig(step) -> None:
    TreeLock(step.project.build_dir / ".lock").acquire()
    before, after = step.work / "menuconfig.before", step.work / "menuconfig.after"
    after.unlink(missing_ok=True)  # a file left by an earlier run must not pass for this one's
    status = step.run_action("menuconfig", {"MENUCONFIG_BEFORE": str(before), "MENUCONFIG_AFTER": str(after)})
    if status != 0:
        raise MlbuildError(f"menuconfig:{step.slug}: the configuration step failed (exit status {status})")
    if not after.exists():
        raise MlbuildError(f"menuconfig:{step.slug}: templates/build/{step.recipe.build}.sh.j2 does not support MLBUILD_ACTION=menuconfig")
    changes = changed_symbols(before, after)
    if not changes:
        print(f"menuconfig:{step.slug}: no symbol changed")
        return
    fragment = step.own_fragment
    merge_into_fragment(fragment, changes)
    print(f"menuconfig:{step.slug}: saved {len(changes)} changed symbol(s) to {step.project.relative(fragment)}; the next build uses it")
