"""Host recipes, build:toolchain, the toolchain switch and recipes that exist only `when` a switch is on.

The "toolchain" here is a host recipe whose output is bin/clang & co: wrappers
around the host's LLVM, so the test takes seconds, not the hours of a real
LLVM build.
"""

import pytest

from conftest import x86

WRAPPER_SH = """\
mkdir -p "$OUT/bin"
for tool in clang clang++ ld.lld llvm-ar llvm-nm llvm-objcopy llvm-strip llvm-ranlib; do
    printf '#!/bin/sh\\nexec /usr/lib/llvm-19/bin/%s "$@"\\n' "$tool" > "$OUT/bin/$tool"
    chmod +x "$OUT/bin/$tool"
done
"""


def add_wrapper_toolchain(project, sysroots=()):
    # With sysroots, the "toolchain" checks that its sysroot (the build machine's arch's stage-1 builds) is there.
    checks = "".join(f'test -x "$SYSROOT/bin/{name}"\n' for name in sysroots)
    project.write("templates/build/wrapper.sh.j2", checks + WRAPPER_SH)
    recipe = {key: project.recipes["hello"][key] for key in ("version", "summary", "homepage", "license", "sources")}
    project.write_recipe("fake-llvm", {"name": "fake-llvm", **recipe, "host": True, "build": "wrapper",
                                       **({"sysroots": list(sysroots)} if sysroots else {})})


def test_the_toolchain_is_not_part_of_the_default_build(built):
    add_wrapper_toolchain(built)
    listing = built.doit("list").stdout
    assert "build:toolchain" in listing and "build:fake-llvm-host" in listing
    result = built.doit("build")
    assert result.returncode == 0, result.stderr
    assert result.executed == set()
    result = built.doit("build:toolchain")
    assert result.executed == {"fetch:fake-llvm", "build:fake-llvm-host", "build:toolchain"}
    assert (built.path("toolchain/bin/clang")).exists()


def test_switching_to_the_llvm_toolchain_rebuilds_what_it_compiles_and_nothing_else(built):
    add_wrapper_toolchain(built)
    result = built.doit("toolchain=llvm")
    assert result.returncode == 0, result.stdout + result.stderr
    # Everything compiled for the target is built again, with the new toolchain,
    # into a tree of its own beside the host toolchain's: the sources are shared.
    toolchain = {"fetch:fake-llvm", "build:fake-llvm-host", "build:toolchain"}
    assert result.executed == toolchain | x86("hello", "extra", "app") | {"build:target-x86_64", "build:images-x86_64"}
    assert built.path("target-llvm/x86_64/bin/hello").exists()
    assert built.path("build/toolchain-llvm/out/hello-x86_64").is_dir()
    explain = built.cli("explain", "build:hello-x86_64", env={"MLBUILD_TOOLCHAIN": "llvm"}).stdout
    assert "up to date" in explain
    again = built.doit("toolchain=llvm")
    assert again.executed == set()


@pytest.mark.slow
def test_both_toolchains_results_live_side_by_side(built):
    add_wrapper_toolchain(built)
    host_hello = built.path("target/x86_64/bin/hello").read_bytes()
    assert built.doit("toolchain=llvm").returncode == 0
    back = built.doit()  # back to the host's LLVM: its results are still there
    assert back.returncode == 0 and back.executed == set()
    assert built.path("target/x86_64/bin/hello").read_bytes() == host_hello
    assert built.doit("toolchain=llvm").executed == set()


def test_stage_1_builds_a_host_recipes_sysroots_for_every_arch_and_the_toolchain_ships_them(built):
    """recipes/llvm.toml's sysroots: musl, libc++… built by the host's LLVM for each arch, the build machine's
    linked against, every arch's beside bin/ in toolchain/<triple>/. Here `app` (and `hello`, which it needs)."""
    add_wrapper_toolchain(built, sysroots=["app"])
    # The system is built for x86_64 only: the other arches' stage-1 builds are the toolchain's alone, not in `doit build`.
    assert built.doit("build").executed == set()
    result = built.doit("build:toolchain")
    assert result.returncode == 0, result.stdout + result.stderr
    # x86_64's stage-1 builds are the system's own tasks (toolchain = "host"): built already, shared.
    others = {f"build:{name}-{arch}" for arch in ("arm64", "riscv64") for name in ("hello", "app")}  # every arch file's
    assert result.executed == {"fetch:fake-llvm", "build:fake-llvm-host", "build:toolchain"} | others
    for triple in ("x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl", "riscv64-unknown-linux-musl"):
        assert sorted(path.name for path in built.path(f"toolchain/{triple}/bin").iterdir()) == ["app", "hello"]
    assert built.path("toolchain/bin/clang").exists()
    assert "adding build:app-arm64 to aarch64-unknown-linux-musl/" in built.log("build:toolchain")


@pytest.mark.slow
def test_with_the_llvm_toolchain_its_sysroots_stay_stage_1_builds_and_are_not_built_again(built):
    add_wrapper_toolchain(built, sysroots=["app"])
    assert built.doit("build:toolchain").returncode == 0
    result = built.doit("toolchain=llvm")
    assert result.returncode == 0, result.stdout + result.stderr
    # The system is compiled again by stage 2; the toolchain and its stage-1 sysroots (now named …@host:
    # the same stamps and outputs as toolchain = "host"'s tasks) are up to date, so nothing loops back.
    assert result.executed == x86("hello", "extra", "app") | {"build:target-x86_64", "build:images-x86_64"}
    listing = built.doit("list", "--all", "toolchain=llvm").stdout
    assert "build:app-x86_64@host" in listing and "build:app-arm64@host" in listing
    assert "build app 1.0 for arm64, by the host's LLVM (stage 1) for build:toolchain" in listing
    explain = built.cli("explain", "build:app-arm64@host", env={"MLBUILD_TOOLCHAIN": "llvm"}).stdout
    assert "up to date" in explain


def test_sysroots_must_be_target_recipes_of_a_host_recipe(project):
    add_wrapper_toolchain(project, sysroots=["app"])
    project.update_recipe("fake-llvm", sysroots=["ap"])
    result = project.doit("list")
    assert result.returncode == 2
    assert result.stderr == "mlbuild: recipes/fake-llvm.toml: sysroots: unknown recipe 'ap' (did you mean 'app'?)\n"
    project.update_recipe("app", sysroots=["hello"])
    result = project.doit("list")
    assert result.returncode == 2
    assert result.stderr.startswith("mlbuild: recipes/app.toml: sysroots: only a host recipe (host = true) with a build has sysroots"), result.stderr


# A switch the optional recipe declares itself, as recipes/clang.toml does.
TARGET_LLVM = {"target_llvm": {"help": "build the optional recipe", "default": True}}


def test_a_recipe_that_is_off_has_no_task_and_turning_it_on_builds_it(built):
    recipe = {**built.recipes["extra"], "name": "optional", "when": "target_llvm", "target": False, "options": TARGET_LLVM}
    built.write_recipe("optional", recipe)
    assert "optional" not in built.doit("list", "--all", "target_llvm=0").stdout
    result = built.doit("build", "target_llvm=1")
    assert result.returncode == 0, result.stderr
    assert result.executed == {"build:optional-x86_64"}


def test_a_switch_declared_on_by_default_builds_its_recipe_by_default(project):
    project.write_recipe("optional", {**project.recipes["extra"], "name": "optional", "when": "target_llvm", "options": TARGET_LLVM})
    assert "build:optional-x86_64" in project.doit("list", "--all").stdout
    project.update_recipe("optional", options={"target_llvm": {**TARGET_LLVM["target_llvm"], "default": False}})
    assert "build:optional-x86_64" not in project.doit("list", "--all").stdout


def test_when_must_name_a_switch_a_recipe_declares(project):
    project.write_recipe("optional", {**project.recipes["extra"], "name": "optional", "when": "target_llvm", "options": TARGET_LLVM})
    project.write_recipe("extra", {**project.recipes["extra"], "when": "jobs"})
    result = project.doit("list")
    assert result.returncode == 2
    assert result.stderr == ("mlbuild: recipes/extra.toml: when: expected a switch a recipe declares ([options.jobs]), "
                             "'jobs' is declared by no recipe; switches: target_llvm\n")


def test_a_target_recipe_cannot_depend_on_a_host_recipe(project):
    add_wrapper_toolchain(project)
    project.write_recipe("app", {**project.recipes["app"], "depends": ["hello", "fake-llvm"]})
    result = project.doit("list")
    assert result.returncode == 2
    assert "recipes/app.toml: depends: 'fake-llvm' is a host (toolchain) recipe, 'app' is a target recipe" in result.stderr


def test_a_missing_host_llvm_is_one_clear_error_saying_what_to_install(built):
    result = built.doit("host_llvm_version=99")
    assert result.returncode != 0
    assert ("LLVM 99 is not installed: need clang, clang++, ld.lld, llvm-ar, llvm-nm, llvm-objcopy, llvm-strip, "
            "llvm-ranlib (on Debian/Ubuntu: apt-get install clang-99 lld-99 llvm-99)") in result.stdout + result.stderr
    # Said once, before any build task runs (the tasks' inputs name the compiler), or by the first task that needs it.
    assert len(result.executed) <= 1 and result.executed <= {"build:hello-x86_64", "build:extra-x86_64"}
    assert "Traceback" not in result.stdout + result.stderr
