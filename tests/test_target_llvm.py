"""clang, lld and the llvm binutils in the target (target_llvm): static, with the usual links, compiling in the guest.

Building clang takes about an hour per arch on 2 cores, so these tests need build:clang-<arch>
built and up to date already (`doit build:clang-arm64 target_llvm=1`); CI
does not build it, and skips them.
"""

import os
import platform
import shutil
import subprocess

import pytest

from test_distribution import ARCHES, REPO, doit, up_to_date

pytestmark = pytest.mark.distribution

MACHINE = {"x86_64": "Advanced Micro Devices X86-64", "arm64": "AArch64"}
HOST_ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())


def clang_is_built(arch: str) -> bool:
    return up_to_date(f"build:clang-{arch}", MLBUILD_TARGET_LLVM="1")


@pytest.fixture(scope="module", params=[pytest.param(arch, marks=pytest.mark.skipif(
    not clang_is_built(arch), reason=f"clang for the {arch} target is not built (target_llvm; about an hour of build per arch)")) for arch in ARCHES])
def arch(request):
    """An arch whose target/<arch> and images are assembled with clang in them (clang itself is not rebuilt)."""
    code, executed, output = doit(f"build:images-{request.param}", "target_llvm=1")
    assert code == 0, output[-3000:]
    assert f"build:clang-{request.param}" not in executed
    return request.param


def test_the_target_compiler_is_static_with_the_usual_links(arch):
    bin_dir = REPO / "target" / arch / "usr/bin"
    for name in ("clang", "ld.lld", "llvm-ar", "llvm-objdump"):
        headers = subprocess.run(["readelf", "-lh", bin_dir / name], capture_output=True, text=True, check=True).stdout
        assert "INTERP" not in headers and MACHINE[arch] in headers, name
    for link, target in {"ld": "ld.lld", "ar": "llvm-ar", "nm": "llvm-nm", "strip": "llvm-strip"}.items():
        assert (bin_dir / link).resolve().name == (bin_dir / target).resolve().name, link
    # The multicall `llvm` knows no tool called cc or c++, so they are scripts that run clang and clang++ beside them.
    for script, tool in {"cc": "clang", "c++": "clang++"}.items():
        assert not (bin_dir / script).is_symlink() and os.access(bin_dir / script, os.X_OK), script
        assert (bin_dir / script).read_text() == f'#!/bin/sh\nexec "${{0%/*}}/{tool}" "$@"\n', script


@pytest.mark.skipif(shutil.which("chroot") is None, reason="needs chroot")
def test_the_target_compiler_builds_static_c_and_cxx_programs_inside_the_target(arch):
    """The target's own cc and c++, run in a chroot of target/<arch> on a machine of that arch."""
    if arch != HOST_ARCH:
        pytest.skip(f"a chroot of the {arch} target needs an {arch} machine (the boot test covers it)")
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    root = REPO / "target" / arch
    work = root / "tmp" / "mlbuild-test"
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello from C"); return 0; }\n')
        (work / "hello.cpp").write_text('#include <iostream>\nint main() { std::cout << "hello from C++" << std::endl; }\n')
        script = "cd /tmp/mlbuild-test && cc hello.c -o hello && ./hello && c++ hello.cpp -o hello++ && ./hello++"
        result = subprocess.run(["chroot", root, "/bin/sh", "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["hello from C", "hello from C++"]
        headers = subprocess.run(["readelf", "-lh", work / "hello++"], capture_output=True, text=True, check=True).stdout
        assert "INTERP" not in headers  # static by default: the target's musl has no shared library
    finally:
        shutil.rmtree(work)


def test_the_booted_target_compiles_and_runs_c_and_cxx(arch):
    code, _, output = doit(f"boottest:{arch}", "target_llvm=1", timeout=3600)
    assert code == 0, output
    assert "cc: hello from C" in output and "c++: hello from C++" in output
