"""The LLVM toolchain built from source (`doit build:toolchain`): static on musl, a sysroot per arch, runs alone in a chroot.

Building it takes hours on 2 cores, so these tests need it built and up to
date already; CI does not build it, and skips them.
"""

import os
import shutil
import subprocess

import pytest

from test_distribution import ARCHES, REPO, doit, up_to_date

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


def test_the_toolchain_has_clang_lld_and_the_binutils_statically_linked():
    tools = ["clang", "clang++", "ld.lld"] + [f"llvm-{tool}" for tool in
                                            "ar ranlib nm objcopy objdump readelf readobj size strip".split()]
    assert [tool for tool in tools if not (BIN / tool).exists()] == []
    headers = subprocess.run(["readelf", "-ld", BIN / "llvm"], capture_output=True, text=True, check=True).stdout
    assert "INTERP" not in headers and "(NEEDED)" not in headers  # no loader, no shared library, not even libc
    for triple in TRIPLES.values():
        assert (REPO / "toolchain" / triple / "usr/lib/libc.a").is_file(), triple  # a sysroot per arch beside bin/


HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello from C"); return 0; }\n'


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_the_toolchain_alone_in_a_bare_chroot_builds_c_and_cxx_for_every_arch_and_the_host(tmp_path):
    """The chroot holds the toolchain folder, two source files and an empty /tmp: no libc, no shell, no loader."""
    root = tmp_path / "root"
    shutil.copytree(REPO / "toolchain", root / "toolchain", symlinks=True)
    (root / "tmp").mkdir()
    (root / "hello.c").write_text(HELLO_C)
    (root / "hello.cpp").write_text(CXX_HELLO)
    assert sorted(path.name for path in root.iterdir()) == ["hello.c", "hello.cpp", "tmp", "toolchain"]
    # The chroot program itself comes from the build machine: with env's PATH set to the chroot's,
    # subprocess would look "chroot" up in /toolchain/bin.
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    builds = {"host": [], **{arch: [f"--target={triple}"] for arch, triple in TRIPLES.items()}}
    for name, target in builds.items():
        for driver, source in (("clang", "/hello.c"), ("clang++", "/hello.cpp")):
            program = f"/{driver}-{name}"
            result = subprocess.run([chroot, root, f"/toolchain/bin/{driver}", *target, "-O2", source, "-o", program],
                                    capture_output=True, text=True, env={"PATH": "/toolchain/bin", "TMPDIR": "/tmp"})
            assert result.returncode == 0, f"{driver} {name}: {result.stderr}"
    machines = {"host": "X86-64", "x86_64": "X86-64", "arm64": "AArch64"}
    for name, machine in machines.items():
        for driver, expected in (("clang", "hello from C"), ("clang++", "hello from C++, exception unwound")):
            program = root / f"{driver}-{name}"
            header = subprocess.run(["readelf", "-lh", program], capture_output=True, text=True, check=True).stdout
            assert machine in header and "INTERP" not in header, (name, header)
            # x86_64 programs run in the chroot itself (static: nothing else needed); arm64's under QEMU.
            command = ["chroot", root, f"/{program.name}"] if machine == "X86-64" else ["qemu-aarch64-static", program]
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert result.stdout.strip() == expected, (name, driver, result)


@pytest.mark.parametrize("arch", ARCHES)
def test_the_toolchain_builds_a_static_cxx_program_with_its_own_defaults(arch, tmp_path):
    """Only --target and the sysroot: lld, compiler-rt, libc++ and libunwind are the toolchain's defaults."""
    code, _, output = doit(f"build:target-{arch}")  # the system's sysroot: built, or restored from the artifact cache
    assert code == 0, output[-3000:]
    root = REPO / "target" / arch
    (tmp_path / "hello.cpp").write_text(CXX_HELLO)
    program = tmp_path / "hello"
    subprocess.run([BIN / "clang++", f"--target={TRIPLES[arch]}", f"--sysroot={root}", f"-resource-dir={root}/usr/lib/clang/19",
                    "-static", "-O2", tmp_path / "hello.cpp", "-o", program], check=True)
    assert "INTERP" not in subprocess.run(["readelf", "-lh", program], capture_output=True, text=True).stdout
    runner = [] if arch == "x86_64" else ["qemu-aarch64-static"]
    result = subprocess.run([*runner, program], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "hello from C++, exception unwound"


@pytest.mark.parametrize("arch", ARCHES)
def test_the_system_built_by_the_toolchain_boots_and_passes_the_guest_checks(arch):
    """`toolchain=llvm`: the small system of each arch compiled by toolchain/ (stage 2), not by the host's LLVM."""
    code, _, output = doit(f"boottest:{arch}", "toolchain=llvm", timeout=3 * 3600)
    assert code == 0, output[-5000:]
    for check in ("shell ready", "kernel: Linux", "applets:", "file: written-and-read-back", "disk:", "poweroff: QEMU exited by itself"):
        assert check in output
    # Who compiled it is written in every object (the programs are stripped; musl's libc.a is not):
    # Debian's clang says "Debian clang version 19.1.7 (3~deb12u1)", ours "clang version 19.1.7".
    comment = subprocess.run(["readelf", "-p", ".comment", REPO / "target-llvm" / arch / "usr/lib/libc.a"],
                             capture_output=True, text=True, check=True).stdout
    assert "clang version 19.1.7" in comment and "Debian" not in comment, comment[:500]
