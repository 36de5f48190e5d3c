"""The shape of the code: layers that import downward only, one Step protocol every kind fulfils, code inputs derived."""

import ast
import importlib
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import SRC, x86

from mlbuild.errors import MlbuildError

PACKAGE = SRC / "mlbuild"
# The layers, lowest first: a module may import its own layer and those before it, never one after.
LAYERS = ["", "model", "sources", "engine", "system", "steps", "boot", "reporting", "exports", "frontend"]
# Side by side on one floor: neither may import the other.
SIBLINGS = [{"system", "reporting"}, {"steps", "boot", "reporting"}]


def _layer(module: str) -> str:
    """The layer of a module or package: its sub-package, or "" for the ground floor (mlbuild.errors)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""


def _imports(path: Path) -> set[str]:
    module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "mlbuild" or name.startswith("mlbuild.")}


def test_every_package_says_its_job_and_no_module_imports_a_higher_layer():
    for folder in sorted(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert docstring and len(docstring.split("\n\n")[0].splitlines()) <= 2, f"{folder}: its __init__.py says its job in two lines"
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts)
        own = _layer(module)
        for imported in _imports(path):
            theirs = _layer(imported)
            if LAYERS.index(theirs) > LAYERS.index(own) or (
                    theirs != own and any({own, theirs} <= floor for floor in SIBLINGS)):
                upward.append(f"{module} imports {imported}")
    assert upward == []


def test_a_kind_of_step_that_lacks_a_protocol_member_is_refused_naming_it(tmp_path, monkeypatch):
    (tmp_path / "half_kind.py").write_text(textwrap.dedent("""
        from mlbuild.steps.base import Step

        class HalfStep(Step, kind="half"):
            @property
            def output(self):
                return self.project.build_dir / "half"

            def own_inputs(self):
                return {}

            def run(self, staging, log):
                pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MlbuildError) as refused:
        importlib.import_module("half_kind")
    assert str(refused.value) == ("half_kind.HalfStep: a kind of step must implement bill_of_materials, shell "
                                  "(the Step protocol, src/mlbuild/steps/base.py)")
    sys.modules.pop("half_kind", None)


def test_a_new_kind_of_step_is_in_the_exported_script_and_the_sbom_without_a_change_to_either(project, tmp_path, monkeypatch):
    """A kind of step written outside mlbuild: `mlbuild script` and the SBOM ask it through the protocol alone."""
    (tmp_path / "stamp_kind.py").write_text(textwrap.dedent("""
        from mlbuild.steps.base import Component, Step

        class StampStep(Step, kind="stamp"):
            def __init__(self, project, name, node):
                super().__init__(project, name, node)
                self.doc = "write a build stamp into the system"
                self.recipe = project.recipes["hello"]

            @property
            def output(self):
                return self.project.build_dir / "out" / "stamp"

            def own_inputs(self):
                return {"text": "built by mlbuild"}

            def run(self, staging, log):
                (staging / "etc").mkdir()
                (staging / "etc" / "stamp").write_text("built by mlbuild\\n")

            def shell(self, script):
                return f"mkdir -p {script.path(self.output)}/etc && echo 'built by mlbuild' > {script.path(self.output)}/etc/stamp\\n"

            def bill_of_materials(self):
                return [Component(self.recipe, self.recipe, self.recipe.sources[0], (), None)]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("stamp_kind")
    from mlbuild.exports import script, spdx3
    from mlbuild.frontend.project import Project
    from mlbuild.steps.base import Step

    loaded = Project(project.root)
    loaded.graph.add_node("build:stamp", kind="stamp", arch="x86_64", recipe="hello", toolchain="host")
    loaded.graph.add_edge("build:stamp", "build:target-x86_64")
    loaded.steps["build:stamp"] = Step.kinds["stamp"](loaded, "build:stamp", loaded.graph.nodes["build:stamp"])

    exported = script.export(loaded, ["build:target-x86_64"])
    assert "# build:stamp: write a build stamp into the system" in exported
    assert "echo 'built by mlbuild' > \"$ROOT\"/out/stamp/etc/stamp" in exported
    graph = spdx3.document(loaded, "x86_64").data["@graph"]
    names = [e["name"] for e in graph if e["type"] == "software_Package" and e.get("software_primaryPurpose") != "source"]
    assert names.count("hello") == 2  # hello's own build, and the new kind's component
    assert spdx3.problems({"@context": spdx3.CONTEXT, "@graph": graph}) == []  # each with its own id
    Step.kinds.pop("stamp")
    sys.modules.pop("stamp_kind", None)


def _mlbuild_copy(tmp_path) -> Path:
    """A copy of mlbuild's sources to edit: the project's tasks are run by it (PYTHONPATH)."""
    copy = tmp_path / "src"
    shutil.copytree(SRC / "mlbuild", copy / "mlbuild", ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _edit_function(path: Path, function: str) -> None:
    """Change a function's body (a statement with no effect): its module's code is new, its behaviour is not."""
    text = path.read_text()
    marker = f"def {function}("
    start = text.index(marker)
    body = text.index(":\n", start) + 2
    indent = len(text[body:]) - len(text[body:].lstrip(" "))
    path.write_text(text[:body] + " " * indent + "_ = 'edited'\n" + text[body:])


def test_changing_a_module_only_the_images_import_rebuilds_exactly_the_images(built, tmp_path):
    source = _mlbuild_copy(tmp_path)
    environment = {"PYTHONPATH": str(source)}
    assert built.doit(env=environment).executed == set()
    _edit_function(source / "mlbuild" / "system" / "cpio.py", "write_initramfs")
    result = built.doit(env=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("images")


@pytest.mark.parametrize("module, function", [("system/users.py", "files"), ("system/hooks.py", "inputs")])
def test_the_accounts_and_hooks_code_counts_for_the_target_and_the_images(built, tmp_path, module, function):
    """Both are imported by steps/target.py and steps/images.py: nobody listed them, the imports say so."""
    source = _mlbuild_copy(tmp_path)
    _edit_function(source / "mlbuild" / module, function)
    result = built.doit(env={"PYTHONPATH": str(source)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("target", "images")


def test_the_import_closure_follows_imports_inside_functions_and_packages():
    from mlbuild.code import import_closure

    images = import_closure("mlbuild.steps.images")
    assert {"mlbuild.system.users", "mlbuild.system.hooks", "mlbuild.system.cpio", "mlbuild.system.zstd",
            "mlbuild.steps", "mlbuild"} <= images
    assert "mlbuild.model.graph" in import_closure("mlbuild.system.image_profile")  # imported inside a function
    assert "mlbuild.steps.build" not in images and "mlbuild.frontend.cli" not in images


def test_setup_sh_installs_the_packages_mlbuild_names_and_finds_the_host_llvm_by_the_same_version():
    """One package list (src/mlbuild/model/host.toml): what scripts/setup.sh installs is what mlbuild knows."""
    import subprocess

    from mlbuild.model import host
    from mlbuild.model.models import Config

    setup = SRC.parent / "scripts" / "setup.sh"
    reading = "".join(line + "\n" for line in setup.read_text().splitlines() if line.startswith(("FACTS=", "LLVM_VERSION=", "mapfile", "  | sed")))
    listed = subprocess.run(["bash", "-c", reading + 'printf "%s\\n" "$LLVM_VERSION" "${PACKAGES[@]}"'], cwd=SRC.parent,
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == [host.llvm_version(), *host.packages()]
    assert f"clang-{host.llvm_version()}" in listed and "qemu-system-arm" in listed
    assert Config().host_llvm_version == host.llvm_version()
    assert host.package_of()["mke2fs"] == "e2fsprogs" and host.package_of()["ninja"] == "ninja-build"


def test_the_import_scan_finds_what_ast_finds_in_every_module():
    """code.py reads imports with a regular expression (it runs on every no-op): it must agree with Python's parser."""
    from mlbuild.code import PACKAGE_DIR, _imports

    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        from_ast = set()
        for name in _imports_by_ast(path, module):
            if (PACKAGE_DIR.parent / Path(*name.split("."))).with_suffix(".py").is_file() or \
                    (PACKAGE_DIR.parent / Path(*name.split(".")) / "__init__.py").is_file():
                from_ast.add(name)
        assert set(_imports(module)) == from_ast, module


def _imports_by_ast(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "mlbuild"}


def test_no_module_imports_itself_back_through_others():
    """No import cycles, counting imports inside functions too (they are cycles all the same, only later)."""
    import networkx as nx

    from mlbuild.code import PACKAGE_DIR, _imports

    graph = nx.DiGraph()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        graph.add_node(module)
        for imported in _imports(module):
            # A package's __init__ names its modules' layer; importing a module loads its packages first,
            # which is Python's order, not a dependency of the package on the module.
            if imported != module and not module.startswith(imported + "."):
                graph.add_edge(module, imported)
    assert list(nx.simple_cycles(graph)) == []
