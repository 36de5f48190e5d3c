"""The build infrastructures (templates/build/infra/): each renders from a recipe's vars alone, and the
boilerplate they hold is written once."""

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlbuild.render import render

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
INFRASTRUCTURES = ["infra/kconfig", "infra/cmake", "infra/configure-make"]
# Inputs of builds of hours (clang): not moved onto the CMake infrastructure yet (see infra/cmake.sh.j2).
NOT_YET_MOVED = {"llvm-target.sh.j2", "llvm-toolchain.sh.j2"}


def script(build: str, vars: dict | None = None, files: list[str] | None = None) -> str:
    context = {
        "recipe": SimpleNamespace(name="thing", version="1.0"),
        "arch": "x86_64", "triple": "x86_64-unknown-linux-musl", "karch": "x86_64", "kernel_image": "bzImage",
        "vars": vars or {}, "files": files or [],
        "config": {"kernel_config": "qemu", "host_llvm_version": "19", "target_llvm": False, "toolchain": "host"},
        "versions": {"llvm-project": "19.1.7"},
    }
    return render(TEMPLATES, f"build/{build}.sh.j2", context, for_shell=True)


def bash_syntax_ok(text: str) -> bool:
    return subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0


@pytest.mark.parametrize("build", INFRASTRUCTURES)
def test_an_infrastructure_renders_for_a_recipe_that_sets_no_vars(build):
    text = script(build)
    assert bash_syntax_ok(text)
    assert "_toolchain.sh.j2" not in text and "TARGET=x86_64-unknown-linux-musl" in text


def test_configure_make_defaults_to_an_autoconf_build_out_of_tree():
    text = script("infra/configure-make")
    assert '"$SRC/configure" --prefix=/usr --host=x86_64-unknown-linux-musl\n' in text
    assert 'make $MAKE_JOBS\n' in text and 'make install DESTDIR="$OUT"\n' in text


def test_configure_make_takes_its_parameters_from_the_recipe_vars_each_one_quoted():
    text = script("infra/configure-make", {"configure_host": False, "configure_args": ["--static", "--x=a b"],
                                            "make_args": ["V=1"], "install_args": ["prefix=$(reboot)"]})
    assert "\"$SRC/configure\" --prefix=/usr --static '--x=a b'\n" in text
    assert 'make $MAKE_JOBS V=1\n' in text
    assert "make install DESTDIR=\"$OUT\" 'prefix=$(reboot)'\n" in text


def test_configure_make_builds_a_plain_makefile_in_a_copy_of_the_source():
    text = script("infra/configure-make", {"configure": False})
    assert "configure" not in text.split('cd "$build"', 1)[1].replace("configure/make", "")
    assert 'cp -R --preserve=timestamps -u "$SRC/." "$build/"' in text
    assert 'make $MAKE_JOBS CC="$CC" AR="$AR" RANLIB="$RANLIB"\n' in text


def test_kconfig_defaults_to_defconfig_then_merge_config_and_a_check_of_the_fragments():
    bare = script("infra/kconfig")
    assert "kmake defconfig\n" in bare and "merge_config.sh" not in bare and "kconfig_check" not in bare
    text = script("infra/kconfig", {"kconfig_base": "tinyconfig"}, files=["a.config", "b.config"])
    assert "kmake tinyconfig\n" in text
    assert '"$build/.config" "$FILES"/a.config "$FILES"/b.config\nkmake olddefconfig\n' in text
    assert '"$MLBUILD_PYTHON" -m mlbuild.kconfig_check "$build/.config" "$FILES"/a.config "$FILES"/b.config' in text
    assert 'MLBUILD_ACTION:-}" = menuconfig' in text and 'kmake install DESTDIR="$OUT"' in text


def test_cmake_uses_a_cache_file_afresh_and_appends_the_recipes_options():
    bare = script("infra/cmake")
    assert "CMakeCache.txt" not in bare and ' -S "$SRC"/. -B "$build" -G Ninja' in bare
    text = script("infra/cmake", {"cmake_source": "runtimes", "cmake_cache": "x.cmake", "cmake_options": ["-DA=1", "-DB=two words"]})
    assert 'rm -f "$build/CMakeCache.txt"' in text
    assert 'cmake -C "$FILES"/x.cmake -S "$SRC"/runtimes -B "$build" -G Ninja' in text
    assert "-DCMAKE_RANLIB=\"$(command -v llvm-ranlib)\" \\\n    -DA=1 '-DB=two words'\n" in text
    assert bash_syntax_ok(text)


def test_the_components_extend_the_infrastructures():
    for component, infrastructure in [("linux", "kconfig"), ("busybox", "kconfig"), ("toybox", "kconfig"),
                                      ("compiler-rt", "cmake"), ("llvm-runtimes", "cmake")]:
        source = (TEMPLATES / "build" / f"{component}.sh.j2").read_text()
        assert f'{{% extends "build/infra/{infrastructure}.sh.j2"' in source, component


@pytest.mark.parametrize("boilerplate", [
    r"-DCMAKE_C_COMPILER_LAUNCHER=ccache",  # the CMake preamble
    r"kconfig_check",  # the Kconfig check
    r"MENUCONFIG_BEFORE",  # the menuconfig branch
])
def test_the_boilerplate_is_written_once(boilerplate):
    holders = sorted(path.name for path in (TEMPLATES / "build").rglob("*.sh.j2")
                     if re.search(boilerplate, path.read_text()) and path.name not in NOT_YET_MOVED)
    assert len(holders) == 1, holders
