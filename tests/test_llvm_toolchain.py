"""The LLVM toolchain built from source (`doit build:toolchain`): static C++ runtime, cross-compiles with its defaults.

Building it takes hours on 2 cores, so these tests need it built and up to
date already; CI does not build it, and skips them.
"""

import subprocess

import pytest

from test_distribution import ARCHES, REPO, up_to_date

pytestmark = [
    pytest.mark.distribution,
    pytest.mark.skipif(not up_to_date("build:toolchain"), reason="the LLVM toolchain is not built (`doit build:toolchain`; hours of build)"),
]

BIN = REPO / "toolchain" / "bin"
TRIPLES = {"x86_64": "x86_64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}
CXX_HELLO = """#include <iostream>
#include <stdexcept>
int main() {
    try { throw std::runtime_error("unwound"); }
    catch (const std::exception &error) { std::cout << "hello from C++, exception " << error.what() << std::endl; }
}
"""


def test_the_toolchain_has_clang_lld_and_the_binutils_without_a_shared_cxx_library():
    tools = ["clang", "clang++", "ld.lld"] + [f"llvm-{tool}" for tool in
                                            "ar ranlib nm objcopy objdump readelf readobj size strings strip".split()]
    assert [tool for tool in tools if not (BIN / tool).exists()] == []
    for tool in ("clang", "lld", "llvm-objdump"):
        dynamic = subprocess.run(["readelf", "-d", BIN / tool], capture_output=True, text=True, check=True).stdout
        assert "libstdc++" not in dynamic and "libc++" not in dynamic, tool


@pytest.mark.parametrize("arch", ARCHES)
def test_the_toolchain_builds_a_static_cxx_program_with_its_own_defaults(arch, tmp_path):
    """Only --target and the sysroot: lld, compiler-rt, libc++ and libunwind are the toolchain's defaults."""
    root = REPO / "target" / arch
    (tmp_path / "hello.cpp").write_text(CXX_HELLO)
    program = tmp_path / "hello"
    subprocess.run([BIN / "clang++", f"--target={TRIPLES[arch]}", f"--sysroot={root}", f"-resource-dir={root}/usr/lib/clang/19",
                    "-static", "-O2", tmp_path / "hello.cpp", "-o", program], check=True)
    assert "INTERP" not in subprocess.run(["readelf", "-lh", program], capture_output=True, text=True).stdout
    runner = [] if arch == "x86_64" else ["qemu-aarch64-static"]
    result = subprocess.run([*runner, program], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "hello from C++, exception unwound"
