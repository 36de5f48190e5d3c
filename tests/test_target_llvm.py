"""clang, lld and the llvm binutils in the target (target_llvm): static, with the usual links, compiling in the guest.

Building clang takes hours on 2 cores, so these tests need build:clang-x86_64
built and up to date already (`doit build:clang-x86_64 target_llvm=1`); CI
does not build it, and skips them.
"""

import os
import shutil
import subprocess

import pytest

from test_distribution import REPO, doit, up_to_date

pytestmark = pytest.mark.distribution

ROOT = REPO / "target" / "x86_64"


def _clang_is_built() -> bool:
    return up_to_date("build:clang-x86_64", MLBUILD_TARGET_LLVM="1")


needs_clang = pytest.mark.skipif(not _clang_is_built(), reason="clang for the x86_64 target is not built (target_llvm; hours of build)")


@pytest.fixture(scope="module", autouse=True)
def target_with_clang():
    """target/x86_64 and its images assembled with clang in them (clang itself is not rebuilt)."""
    if not _clang_is_built():
        return
    code, executed, output = doit("build:images-x86_64", "target_llvm=1")
    assert code == 0, output[-3000:]
    assert "build:clang-x86_64" not in executed


@needs_clang
def test_the_target_compiler_is_static_with_the_usual_links():
    bin_dir = ROOT / "usr/bin"
    for name in ("clang", "ld.lld", "llvm-ar", "llvm-objdump"):
        headers = subprocess.run(["readelf", "-lh", bin_dir / name], capture_output=True, text=True, check=True).stdout
        assert "INTERP" not in headers and "Advanced Micro Devices X86-64" in headers, name
    for link, target in {"cc": "clang", "c++": "clang++", "ld": "ld.lld", "ar": "llvm-ar", "nm": "llvm-nm", "strip": "llvm-strip"}.items():
        assert (bin_dir / link).resolve().name == (bin_dir / target).resolve().name, link


@needs_clang
@pytest.mark.skipif(shutil.which("chroot") is None, reason="needs chroot")
def test_the_target_compiler_builds_static_c_and_cxx_programs_inside_the_target():
    """The x86_64 target's own cc and c++, run in a chroot of target/x86_64 on this (x86_64) machine."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    work = ROOT / "tmp" / "mlbuild-test"
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello from C"); return 0; }\n')
        (work / "hello.cpp").write_text('#include <iostream>\nint main() { std::cout << "hello from C++" << std::endl; }\n')
        script = "cd /tmp/mlbuild-test && cc hello.c -o hello && ./hello && c++ hello.cpp -o hello++ && ./hello++"
        result = subprocess.run(["chroot", ROOT, "/bin/sh", "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["hello from C", "hello from C++"]
        headers = subprocess.run(["readelf", "-lh", work / "hello++"], capture_output=True, text=True, check=True).stdout
        assert "INTERP" not in headers  # static by default: the target's musl has no shared library
    finally:
        shutil.rmtree(work)


@needs_clang
def test_the_booted_target_compiles_and_runs_c_and_cxx():
    code, _, output = doit("boottest:x86_64", "target_llvm=1", timeout=1800)
    assert code == 0, output
    assert "cc: hello from C" in output and "c++: hello from C++" in output
