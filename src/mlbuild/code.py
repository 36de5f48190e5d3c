"""The Python code a result depends on, derived from imports: no list of modules is kept by hand.

A step's code signature (steps/base.py), the render cache's key and the recipe cache's key
are hashes of an import closure: the modules named, every mlbuild module they import (at the
top or inside a function), and the packages on the way. A change to any of them redoes what
it may have changed, and a module a step starts to import counts from that moment.
"""

import hashlib
import re
from functools import cache
from pathlib import Path

@cache
def code_hash(*roots: str) -> str:
    """Hash of the Python code that does a step's work: the root modules and every mlbuild module they import.

    Derived from the imports themselves (import_closure), never from a list kept by hand: a module
    a step starts to use counts for it from that moment."""
    digest = hashlib.sha256()
    for module in sorted(set().union(*(import_closure(root) for root in roots))):
        digest.update(module.encode() + b"\0" + module_file(module).read_bytes() + b"\0")
    return digest.hexdigest()


PACKAGE = __name__.split(".")[0]
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(module: str) -> Path:
    """The source file of an mlbuild module (a package: its __init__.py), found without importing it."""
    relative = Path(*module.split(".")[1:])
    path = PACKAGE_DIR / relative / "__init__.py"
    return path if path.is_file() else PACKAGE_DIR / relative.with_suffix(".py")


@cache
def import_closure(root: str) -> frozenset[str]:
    """root and every mlbuild module it imports, directly or not, at the top or inside a function.

    Read from the source (ast), so nothing is imported to learn it; the packages on each
    module's path count too, as Python runs their __init__.py first."""
    seen: set[str] = set()
    pending = [root]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]  # its packages
        pending += [name for name in _imports(module) if name not in seen]
    return frozenset(seen)


# An import statement at any indentation (inside a function too): `from X import a, b` or `import X, Y`.
# A scan of the text, not ast.parse: it runs on every no-op (test_structure.py holds it to ast's answer).
IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+(?P<base>\.*[\w.]*)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^#\n]*)"
                         r"|import[ \t]+(?P<modules>[^#\n]*))", re.MULTILINE)


@cache
def _imports(module: str) -> tuple[str, ...]:
    path = module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for match in IMPORT_LINE.finditer(path.read_text()):
        if match["modules"] is not None:
            found += [name.split(" as ")[0].strip() for name in match["modules"].split(",")]
            continue
        base = match["base"]
        level = len(base) - len(base.lstrip("."))
        base = base[level:]
        if level:
            anchor = package.split(".")[: len(package.split(".")) - level + 1]
            base = ".".join(anchor + ([base] if base else []))
        found.append(base)
        names = match["names"].strip("()\n ")
        found += [f"{base}.{name.split(' as ')[0].strip()}" for name in names.split(",") if name.strip()]
    return tuple(name for name in found if name.split(".")[0] == PACKAGE and module_file(name).is_file())
