"""The full LLVM build's configuration, checked by a real CMake configure run.

Building clang takes about an hour per arch on 2 cores, so CI does not; it renders
templates/llvm/toolchain.cmake.j2 through the real recipe and build script
(MLBUILD_ACTION=configure stops after CMake) and checks what CMake made of it.
Needs the llvm-project source (fetched by the distribution build).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distribution

REPO = Path(__file__).resolve().parents[1]


def cmake_cache(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "//")) and "=" in line:
            key, value = line.split("=", 1)
            values[key.split(":")[0]] = value
    return values


@pytest.fixture(scope="module")
def configured():
    """build:llvm-host configured against its sysroot: the build machine's arch's stage-1 musl, headers, compiler-rt, libc++."""
    sys.path.insert(0, str(REPO / "src"))
    from mlbuild.frontend.project import Project

    step = Project(REPO, {"target_llvm": "0"}).steps["build:llvm-host"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    deps = subprocess.run([sys.executable, "-m", "doit", "-n", "2", *step.deps, "target_llvm=0"], cwd=REPO, env=env, capture_output=True, text=True)
    assert deps.returncode == 0, deps.stdout + deps.stderr
    assert step.run_action("configure") == 0
    return step.work / "build"


def test_the_toolchain_targets_every_arch_with_llvm_defaults_and_no_libgcc(configured):
    cache = cmake_cache(configured / "CMakeCache.txt")
    assert cache["LLVM_TARGETS_TO_BUILD"] == "X86;AArch64;RISCV"  # arches/<name>.toml: llvm_target
    assert cache["LLVM_ENABLE_PROJECTS"] == "clang;lld"
    assert cache["LLVM_DEFAULT_TARGET_TRIPLE"] == "x86_64-unknown-linux-musl"
    assert cache["CLANG_DEFAULT_LINKER"] == "lld"
    assert cache["CLANG_DEFAULT_RTLIB"] == "compiler-rt"
    assert cache["CLANG_DEFAULT_CXX_STDLIB"] == "libc++"
    assert cache["CLANG_DEFAULT_UNWINDLIB"] == "libunwind"


def test_the_toolchain_is_a_static_musl_build_by_stage_1_and_builds_little(configured):
    cache = cmake_cache(configured / "CMakeCache.txt")
    # Built for the build machine's arch on musl, against the stage-1 sysroot, statically: a second stage.
    assert cache["LLVM_HOST_TRIPLE"] == "x86_64-unknown-linux-musl"
    assert cache["CMAKE_SYSROOT"].endswith("build/work/llvm-host/sysroot")
    assert (Path(cache["CMAKE_SYSROOT"]) / "usr/lib/libc.a").is_file() and (Path(cache["CMAKE_SYSROOT"]) / "usr/lib/libc++.a").is_file()
    assert cache["LLVM_BUILD_STATIC"] == "ON" and cache["LLVM_ENABLE_LIBCXX"] == "ON"
    assert "-static" in cache["CMAKE_EXE_LINKER_FLAGS"]
    assert cache["CMAKE_BUILD_TYPE"] == "Release"
    assert cache["LLVM_LINK_LLVM_DYLIB"] == "OFF"
    for off in ("LLVM_INCLUDE_TESTS", "LLVM_INCLUDE_EXAMPLES", "LLVM_INCLUDE_DOCS", "LLVM_ENABLE_ZLIB",
                "LLVM_ENABLE_ZSTD", "LLVM_ENABLE_LIBXML2", "LLVM_ENABLE_TERMINFO",
                "CLANG_ENABLE_STATIC_ANALYZER", "CLANG_ENABLE_ARCMT"):
        assert cache[off] == "OFF", off
    assert cache["CMAKE_CXX_COMPILER_LAUNCHER"] == "ccache"
    assert cache["CMAKE_GENERATOR"] == "Ninja"


def test_a_toolchain_program_is_static_on_musl_and_runs_here(configured):
    """A real link with the toolchain's flags: LLVM's `not` (LLVMSupport and one file: minutes, not hours)."""
    sys.path.insert(0, str(REPO / "src"))
    from mlbuild.frontend.project import Project
    from mlbuild.steps.ccache import ccache_environment

    env = {**os.environ, **ccache_environment(Project(REPO))}
    build = subprocess.run(["ninja", "-C", configured, f"-j{os.cpu_count()}", "not"], env=env, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:]
    program = configured / "bin" / "not"
    headers = subprocess.run(["readelf", "-ld", program], capture_output=True, text=True, check=True).stdout
    assert "INTERP" not in headers and "(NEEDED)" not in headers, headers  # no loader, no shared library: not even the C library
    comment = subprocess.run(["readelf", "-p", ".comment", program], capture_output=True, text=True).stdout
    assert "GCC" not in comment  # nothing of the host's C library or libgcc inside
    assert subprocess.run([program, "false"]).returncode == 0  # `not` inverts a command's exit status
    assert subprocess.run([program, "true"]).returncode == 1


def test_the_distribution_targets_are_exactly_the_toolchain(configured):
    cache = cmake_cache(configured / "CMakeCache.txt")
    components = set(cache["LLVM_DISTRIBUTION_COMPONENTS"].split(";"))
    assert {"llvm-driver", "clang", "lld", "llvm-ar", "llvm-nm", "llvm-objcopy", "llvm-objdump", "llvm-ranlib",
            "llvm-readelf", "llvm-readobj", "llvm-size", "llvm-strip"} <= components
    assert cache["LLVM_TOOL_LLVM_DRIVER_BUILD"] == "ON"  # one multicall binary, as in the target
    ninja = (configured / "build.ninja").read_text()
    assert "build distribution:" in ninja and "build install-distribution-stripped:" in ninja


@pytest.fixture(scope="module")
def configured_target_clang():
    """clang for the arm64 target, configured against the arm64 sysroot the distribution build made."""
    sys.path.insert(0, str(REPO / "src"))
    from mlbuild.frontend.project import Project

    project = Project(REPO, {"target_llvm": "1", "arches": "arm64"})
    step = project.steps["build:clang-arm64"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    deps = subprocess.run([sys.executable, "-m", "doit", "-n", "2", *step.deps], cwd=REPO, env=env, capture_output=True, text=True)
    assert deps.returncode == 0, deps.stdout + deps.stderr  # its sysroot: musl, headers, compiler-rt, libc++
    assert step.run_action("configure") == 0
    return step.work / "build"


def test_the_target_clang_is_a_static_cross_build_defaulting_to_its_own_system(configured_target_clang):
    cache = cmake_cache(configured_target_clang / "CMakeCache.txt")
    assert cache["LLVM_HOST_TRIPLE"] == "aarch64-unknown-linux-musl"
    assert cache["LLVM_DEFAULT_TARGET_TRIPLE"] == "aarch64-unknown-linux-musl"
    assert cache["LLVM_TARGETS_TO_BUILD"] == "AArch64"
    assert cache["CMAKE_BUILD_TYPE"] == "MinSizeRel"
    assert cache["LLVM_BUILD_STATIC"] == "ON" and cache["LLVM_ENABLE_LIBCXX"] == "ON"
    assert cache["CMAKE_SYSTEM_NAME"] == "Linux"
    assert cache["CLANG_DEFAULT_RTLIB"] == "compiler-rt" and cache["CLANG_DEFAULT_CXX_STDLIB"] == "libc++"
    assert "-static" in cache["CMAKE_EXE_LINKER_FLAGS"]
    assert cache["CMAKE_SYSROOT"].endswith("build/work/clang-arm64/sysroot")


def test_the_riscv64_target_clang_is_configured_like_the_others():
    """clang inside the riscv64 system (arches/riscv64.toml): configured against its own sysroot, its own back end."""
    sys.path.insert(0, str(REPO / "src"))
    from mlbuild.frontend.project import Project

    step = Project(REPO, {"target_llvm": "1", "arches": "riscv64"}).steps["build:clang-riscv64"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    deps = subprocess.run([sys.executable, "-m", "doit", "-n", "2", *step.deps, "arches=riscv64"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert deps.returncode == 0, deps.stdout + deps.stderr
    assert step.run_action("configure") == 0
    cache = cmake_cache(step.work / "build" / "CMakeCache.txt")
    assert cache["LLVM_HOST_TRIPLE"] == cache["LLVM_DEFAULT_TARGET_TRIPLE"] == "riscv64-unknown-linux-musl"
    assert cache["LLVM_TARGETS_TO_BUILD"] == "RISCV"
    assert cache["CMAKE_SYSTEM_PROCESSOR"] == "riscv64"
    assert cache["LLVM_BUILD_STATIC"] == "ON" and "-static" in cache["CMAKE_EXE_LINKER_FLAGS"]
    assert cache["CMAKE_SYSROOT"].endswith("build/work/clang-riscv64/sysroot")


def test_the_target_clang_uses_the_hosts_tablegen_and_builds_only_clang_tblgen_natively(configured_target_clang):
    """Debian's llvm-tblgen of the same release replaces LLVM's NATIVE build of it; clang-tblgen (not shipped) stays."""
    cache = cmake_cache(configured_target_clang / "CMakeCache.txt")
    assert cache["LLVM_TABLEGEN"] == "/usr/lib/llvm-19/bin/llvm-tblgen"
    assert cache["CLANG_TABLEGEN_EXE"].endswith("/NATIVE/bin/clang-tblgen")
    plan = subprocess.run(["ninja", "-C", configured_target_clang, "-n", "distribution"], capture_output=True, text=True, check=True).stdout
    native = re.findall(r"Building native (\S+?)\.\.\.", plan)
    assert native == ["clang-tblgen"], native
    # llvm-min-tblgen (LLVM 19's tablegen for the core headers) follows LLVM_TABLEGEN: neither is built
    assert not re.search(r"Linking CXX executable bin/llvm-(min-)?tblgen", plan)


def test_the_target_clang_is_one_multicall_binary_of_the_tools_a_user_needs(configured_target_clang):
    cache = cmake_cache(configured_target_clang / "CMakeCache.txt")
    assert cache["LLVM_TOOL_LLVM_DRIVER_BUILD"] == "ON"
    components = cache["LLVM_DISTRIBUTION_COMPONENTS"].split(";")
    assert "llvm-strings" not in components  # busybox's strings
    tools = (configured_target_clang / "tools" / "llvm-driver" / "LLVMDriverTools.def").read_text()
    entries = dict(re.findall(r'LLVM_DRIVER_TOOL\("([^"]+)", (\w+)\)', tools))
    for name, entry in {"clang": "clang", "clang++": "clang", "ld.lld": "lld", "ld": "lld", "ar": "llvm_ar",
                        "ranlib": "llvm_ar", "nm": "llvm_nm", "objcopy": "llvm_objcopy", "strip": "llvm_objcopy",
                        "objdump": "llvm_objdump", "readelf": "llvm_readobj", "size": "llvm_size"}.items():
        assert entries.get(name) == entry, (name, entries)
    # only what was asked for: no dsymutil, llvm-profdata, clang-scan-deps, ...
    assert set(entries.values()) == {"clang", "lld", "llvm_ar", "llvm_nm", "llvm_objcopy", "llvm_objdump",
                                     "llvm_readobj", "llvm_size"}, sorted(set(entries.values()))
    ninja = (configured_target_clang / "build.ninja").read_text()
    # the install step the build script runs installs the stripped driver and its links, no separate tools
    install = re.search(r"^build install-distribution-stripped: phony (.*)$", ninja, re.MULTILINE)[1].split()
    assert sorted(path.rsplit("/", 1)[-1] for path in install) == ["install-clang-resource-headers-stripped", "install-llvm-driver-stripped"]
    programs = re.findall(r"^build bin/([^:\s]+): CXX_EXECUTABLE_LINKER", ninja, re.MULTILINE)
    assert "llvm" in programs and not {"clang", "clang-19", "lld", "llvm-ar", "llvm-nm", "llvm-objdump"} & set(programs), programs
    assert cache["CMAKE_STRIP"].endswith("llvm-strip")


def test_the_toolchains_configuration_files_give_clang_each_arch_sysroot(tmp_path):
    """The install step's <triple>.cfg lines, run as they are rendered, next to a real clang 19 (Debian's, copied:
    clang reads a config file from its own binary's folder for --target, and for its default triple)."""
    sys.path.insert(0, str(REPO / "src"))
    from mlbuild.frontend.project import Project

    rendered = Project(REPO, {"target_llvm": "0"}).steps["build:llvm-host"].script
    lines = [line for line in rendered.splitlines() if re.search(r"> \S+\.cfg$", line)]
    assert len(lines) == 3, lines  # one per arch
    bin_dir = tmp_path / "toolchain" / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy("/usr/lib/llvm-19/bin/clang", bin_dir / "clang")
    subprocess.run(["bash", "-euc", "\n".join(lines)], cwd=bin_dir, check=True)
    for triple in ("x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl", "riscv64-unknown-linux-musl"):
        plan = subprocess.run([bin_dir / "clang", f"--target={triple}", "-###", "-c", "-x", "c", "/dev/null", "-o", "/dev/null"],
                              capture_output=True, text=True).stderr
        sysroot = tmp_path / "toolchain" / "bin" / ".." / triple
        assert f'"-isysroot" "{sysroot}"' in plan, plan
        assert f'"-resource-dir" "{sysroot}/usr/lib/clang/19"' in plan, plan
