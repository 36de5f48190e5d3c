"""The real system: build both arches from the real recipes, boot them, rebuild exactly what a change affects.

Slow (about 15–25 minutes from cold caches on 2 cores): `pytest -m "not distribution"` skips it.
It builds in the repository's own build/ and target/ folders, as a user would.
"""

import contextlib
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distribution

REPO = Path(__file__).resolve().parents[1]
ARCHES = ("x86_64", "arm64")


def doit(*args: str, timeout: int = 3600, **environ: str) -> tuple[int, set[str], str]:
    # The small system unless asked for more: clang in the target is hours of build.
    # Verbose: the tasks that ran are read from doit's `.  task` lines.
    env = {"MLBUILD_TARGET_LLVM": "0", **os.environ, "PYTHONPATH": str(REPO / "src"), "MLBUILD_VERBOSE": "1", **environ}
    result = subprocess.run([sys.executable, "-m", "doit", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    executed = {line[3:].strip() for line in result.stdout.splitlines() if line.startswith(".  ")}
    return result.returncode, executed, result.stdout + result.stderr


@functools.cache
def up_to_date(task: str, **environ: str) -> bool:
    """Whether `mlbuild explain` finds the task built and up to date (for the hours-long LLVM tasks)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **environ}
    explain = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "explain", task], cwd=REPO, env=env, capture_output=True, text=True)
    return f"{task} is up to date" in explain.stdout


@pytest.fixture(scope="module")
def built_system():
    code, executed, output = doit("-n", "2", "build")
    assert code == 0, output[-5000:]
    yield executed
    for name in ("busybox.config", "linux-arm64.config"):
        (REPO / "fragments" / name).unlink(missing_ok=True)


@pytest.mark.parametrize("arch", ARCHES)
def test_the_system_boots_to_a_shell_and_passes_the_guest_checks(built_system, arch):
    code, _, output = doit(f"boottest:{arch}", timeout=900)
    assert code == 0, output[-5000:]
    for check in ("shell ready", "kernel: Linux", "applets:", "file: written-and-read-back", "disk:", "setuid:", "poweroff: QEMU exited by itself"):
        assert check in output


def test_a_gzip_initramfs_boots_too(built_system):
    """initramfs_compression=gzip: the kernel's other unpacker (CONFIG_RD_GZIP) boots the same system."""
    code, _, output = doit("boottest:x86_64", "initramfs_compression=gzip", timeout=900)
    assert code == 0, output[-5000:]
    assert "shell ready" in output and "poweroff: QEMU exited by itself" in output
    assert (REPO / "build" / "images" / "x86_64" / "initramfs.cpio.gz").exists()
    code, _, output = doit("build:images-x86_64")  # the default images again, for what follows
    assert code == 0, output[-3000:]


@pytest.mark.parametrize("arch", ARCHES)
def test_the_target_is_static_and_complete(built_system, arch):
    root = REPO / "target" / arch
    busybox = root / "bin" / "busybox"
    assert busybox.stat().st_mode & 0o4000, "busybox is not setuid"
    # Declared in recipes/busybox.toml, set by the target: its own output has no set-id bit, so the cache restores it.
    assert not (REPO / "build" / "out" / f"busybox-{arch}" / "bin" / "busybox").stat().st_mode & 0o6000
    headers = subprocess.run(["readelf", "-lh", busybox], capture_output=True, text=True).stdout
    assert "INTERP" not in headers and "DYNAMIC" not in headers, "busybox is not statically linked"
    expected_machine = {"x86_64": "X86-64", "arm64": "AArch64"}[arch]
    assert expected_machine in headers
    for path in ("usr/lib/libc.a", "usr/include/stdio.h", "usr/include/linux/version.h", "etc/inittab",
                 "etc/init.d/rcS", "bin/sh", f"boot/{'bzImage' if arch == 'x86_64' else 'Image'}"):
        assert (root / path).exists() or (root / path).is_symlink(), path
    motd = (root / "etc" / "motd").read_text()
    assert re.search(r"linux 6\.1\.176", motd) and "musl 1.2.3" in motd and "busybox 1.35.0" in motd


# qemu-system-x86_64 where KVM accepts guests and then runs nothing: under -accel kvm it prints
# nothing for ever; otherwise it is the real QEMU.
HANGING_KVM_QEMU = """#!/bin/sh
case " $* " in *" -accel kvm "*|*" -enable-kvm "*) exec sleep 600 ;; esac
exec {real} "$@"
"""


def test_where_kvm_hangs_the_boot_test_falls_back_to_tcg_and_passes(built_system, tmp_path):
    real = subprocess.run(["sh", "-c", "command -v qemu-system-x86_64"], capture_output=True, text=True).stdout.strip()
    wrapper = tmp_path / "qemu-system-x86_64"
    wrapper.write_text(HANGING_KVM_QEMU.format(real=real))
    wrapper.chmod(0o755)
    environ = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    code, _, output = doit("boottest:x86_64", "accel=auto", timeout=900, **environ)
    assert code == 0, output[-5000:]
    assert "poweroff: QEMU exited by itself" in output
    if os.uname().machine == "x86_64" and os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert "mlbuild: kvm: no console output in 5 s, falling back to tcg" in output
    else:
        assert re.search(r"mlbuild: tcg: (no /dev/kvm|/dev/kvm cannot|kvm runs only the host's arch)", output)


def test_kvm_boots_the_system_where_the_host_runs_kvm_guests(built_system):
    from mlbuild.boot.accel import probe_kvm

    if os.uname().machine != "x86_64" or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("this host has no usable /dev/kvm for x86_64 guests")
    from mlbuild.frontend.project import Project

    works, reason = probe_kvm(Project(REPO).arches["x86_64"], REPO / "target" / "x86_64" / "boot" / "bzImage")
    if not works:
        pytest.skip(f"this host's KVM does not run guests: {reason}")
    code, _, output = doit("boottest:x86_64", "accel=kvm", timeout=900)
    assert code == 0, output[-5000:]
    assert "mlbuild: kvm: as configured (accel=kvm)" in output and "poweroff: QEMU exited by itself" in output


@pytest.mark.parametrize("arch", ARCHES)
def test_the_cve_report_of_the_real_system_says_what_its_build_did_not_compile(built_system, arch):
    """mlbuild cve against real records (tests/data/cve): the kernel's and busybox's compiled-file lists are
    in their outputs, the radeon driver the small configuration does not build is not affected with that
    evidence, a 6.1 fix below 6.1.176 is fixed, core code fixed only later on the branch is affected."""
    kernel_list = REPO / "build" / "out" / f"linux-{arch}" / "share" / "mlbuild" / "linux" / "compiled-files.txt"
    compiled = kernel_list.read_text().splitlines()
    assert compiled == sorted(compiled) and len(compiled) > 500
    assert {"kernel/time/posix-cpu-timers.c", "kernel/irq_work.c", "init/main.c"} <= set(compiled)
    assert "drivers/gpu/drm/radeon/radeon_gem.c" not in compiled
    busybox_list = REPO / "build" / "out" / f"busybox-{arch}" / "share" / "mlbuild" / "busybox" / "compiled-files.txt"
    assert {"shell/ash.c", "editors/awk.c", "libbb/xfuncs_printf.c"} <= set(busybox_list.read_text().splitlines())
    assert not (REPO / "build" / "images" / arch / "rootfs.ext4").read_bytes().count(b"compiled-files.txt")
    feeds = sorted(str(path) for path in (REPO / "tests" / "data" / "cve").glob("*.json"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MLBUILD_TARGET_LLVM": "0"}
    result = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "cve", arch, "--feed", *feeds], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("CVE-")}
    assert "not affected: code not compiled" in rows["CVE-2026-74417"] and "radeon_gem.c not compiled" in rows["CVE-2026-74417"]
    assert "fixed in 6.1.175 on the 6.1 branch" in rows["CVE-2026-64073"]
    assert rows["CVE-2026-64370"].split()[1:4] == ["linux", "6.1.176", "affected"]
    assert rows["CVE-2025-26519"].split()[1:4] == ["musl", "1.2.3", "affected"]  # no compiled list: never "not compiled"
    document = json.loads((REPO / "build" / "cve" / f"{arch}.openvex.json").read_text())
    assert {s["vulnerability"]["name"] for s in document["statements"]} == set(rows)


def test_a_second_build_runs_nothing(built_system):
    code, executed, output = doit("-n", "2", "build")
    assert code == 0, output[-3000:]
    assert executed == set()


@contextlib.contextmanager
def fragment_in_place(name: str, text: str):
    """A user fragment for one test; afterwards the tree is built again without it (restored from the artifact
    cache), so the later tests of the module (riscv64, toybox) start from the system as it is, and build and
    push nothing with a test's fragment in it."""
    fragment = REPO / "fragments" / name
    fragment.parent.mkdir(exist_ok=True)
    fragment.write_text(text)
    try:
        yield
    finally:
        fragment.unlink(missing_ok=True)
        doit("-n", "2", "build")


def test_changing_the_busybox_fragment_rebuilds_busybox_and_the_images_only(built_system):
    with fragment_in_place("busybox.config", "CONFIG_FEATURE_EDITING_HISTORY=64\n"):
        code, executed, output = doit("-n", "2", "build")
        assert code == 0, output[-3000:]
        assert executed == {f"build:{name}-{arch}" for arch in ARCHES for name in ("busybox", "target", "images", "disk")}


def test_changing_the_arm64_kernel_fragment_rebuilds_the_arm64_kernel_and_images_only(built_system):
    with fragment_in_place("linux-arm64.config", "CONFIG_LOG_BUF_SHIFT=15\n"):
        code, executed, output = doit("-n", "2", "build")
        assert code == 0, output[-3000:]
        assert executed == {"build:linux-arm64", "build:target-arm64", "build:images-arm64", "build:disk-arm64"}


CXX_HELLO = r"""
#include <iostream>
#include <stdexcept>
#include <string>
// A thread_local with a destructor: libc++abi's __cxa_thread_atexit (musl has no _impl of it).
thread_local std::string greeting = std::string("hello from ") + "C++";
int main() {
    try {
        throw std::runtime_error("unwound");
    } catch (const std::exception &error) {
        std::cout << greeting << ", exception " << error.what() << std::endl;
    }
    return 0;
}
"""


@pytest.mark.parametrize("arch", ARCHES)
def test_a_static_cxx_hello_built_against_the_target_runs(built_system, arch, tmp_path):
    """libc++, libc++abi, libunwind and compiler-rt in target/<arch> link a static C++ program."""
    root = REPO / "target" / arch
    triple = {"x86_64": "x86_64-unknown-linux-musl", "arm64": "aarch64-unknown-linux-musl"}[arch]
    source = tmp_path / "hello.cpp"
    source.write_text(CXX_HELLO)
    program = tmp_path / "hello"
    subprocess.run(["/usr/lib/llvm-19/bin/clang++", f"--target={triple}", f"--sysroot={root}",
                    f"-resource-dir={root}/usr/lib/clang/19", "-stdlib=libc++", "--rtlib=compiler-rt",
                    "--unwindlib=libunwind", "-fuse-ld=lld", "-static", "-O2", source, "-o", program], check=True)
    headers = subprocess.run(["readelf", "-lh", program], capture_output=True, text=True).stdout
    assert "INTERP" not in headers
    runner = [] if arch == "x86_64" else ["qemu-aarch64-static"]
    result = subprocess.run([*runner, program], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "hello from C++, exception unwound"


def test_a_dropped_kernel_symbol_is_explained_from_the_kernels_own_kconfig(built_system, tmp_path):
    """The kernel's real Kconfig (kconfiglib): VIRTIO_BLK without BLK_DEV says what to add."""
    # The kernel may have come from the artifact cache: no build folder then, and no
    # unpacked source (a lazy fetch). Its output keeps the final .config.
    unpack = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "unpack", "linux"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=1800)
    assert unpack.returncode == 0 and unpack.stdout.strip() == "fetch:linux: build/src/linux", unpack.stdout + unpack.stderr
    final = (REPO / "build" / "out" / "linux-x86_64" / "boot" / "config").read_text()
    assert "CONFIG_BLK_DEV=y" in final and "CONFIG_VIRTIO_BLK=y" in final
    final = final.replace("CONFIG_BLK_DEV=y", "# CONFIG_BLK_DEV is not set").replace("CONFIG_VIRTIO_BLK=y\n", "")
    (tmp_path / ".config").write_text(final)
    (tmp_path / "qemu.config").write_text("CONFIG_VIRTIO_BLK=y\n")
    source = REPO / "build" / "src" / "linux"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PATH": f"/usr/lib/llvm-19/bin:{os.environ['PATH']}",
           "srctree": str(source), "ARCH": "x86_64", "SRCARCH": "x86", "KERNELVERSION": "6.1.176", "CC": "clang",
           "LD": "ld.lld", "HOSTCC": "clang", "CLANG_FLAGS": "--target=x86_64-unknown-linux-musl -fintegrated-as", "LLVM": "1"}
    result = subprocess.run([sys.executable, "-m", "mlbuild.kconfig_check", "--kconfig", str(source / "Kconfig"),
                             str(tmp_path / ".config"), str(tmp_path / "qemu.config")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 1
    assert ("qemu.config:1: CONFIG_VIRTIO_BLK=y was dropped (got not set): it depends on BLK_DEV, which is n; "
            "add CONFIG_BLK_DEV=y") in result.stderr, result.stderr


def test_riscv64_from_its_arch_file_builds_and_boots_with_the_same_checks_under_both_userlands():
    """arches=riscv64 (arches/riscv64.toml; not a default arch: CI time): the small system on QEMU's virt, TCG."""
    for userland in ("busybox", "toybox"):
        code, _, output = doit("-n", "2", "build:images-riscv64", "arches=riscv64", f"userland={userland}", timeout=7200)
        assert code == 0, output[-5000:]
        code, _, output = doit("boottest:riscv64", "arches=riscv64", f"userland={userland}", timeout=1800)
        assert code == 0, output[-5000:]
        checks = ("applets:", "setuid:") if userland == "busybox" else ("commands:", "edit: three")
        for check in ("shell ready", "kernel: Linux", *checks, "file: written-and-read-back", "disk:", "poweroff: QEMU exited by itself"):
            assert check in output, check
        assert "riscv64" in output.split("kernel: Linux", 1)[1].splitlines()[0]
    headers = subprocess.run(["readelf", "-lh", REPO / "target" / "riscv64" / "bin" / "toybox"], capture_output=True, text=True).stdout
    assert "RISC-V" in headers and "INTERP" not in headers


# Last in this module: the toybox system takes over target/ and build/images/, and gives them back.
def test_the_toybox_userland_builds_boots_and_passes_its_checks_on_both_arches(built_system):
    """userland=toybox: toybox instead of busybox, the same kernel, musl and /etc; switching back rebuilds no component."""
    for arch in ARCHES:
        code, executed, output = doit(f"boottest:{arch}", "userland=toybox", timeout=1800)
        assert code == 0, output[-5000:]
        assert not any("busybox" in task for task in executed)
        for check in ("shell ready", "kernel: Linux", "commands:", "edit: three", "file: written-and-read-back", "disk:",
                      "poweroff: QEMU exited by itself"):
            assert check in output, check
        root = REPO / "target" / arch
        assert not (root / "bin" / "busybox").exists() and (root / "bin" / "toybox").exists()
        headers = subprocess.run(["readelf", "-lh", root / "bin" / "toybox"], capture_output=True, text=True).stdout
        assert "INTERP" not in headers and "DYNAMIC" not in headers, "toybox is not statically linked"
    code, executed, output = doit("-n", "2", "build")  # busybox's system again: its outputs are still there
    assert code == 0, output[-3000:]
    assert executed == {f"build:{name}-{arch}" for arch in ARCHES for name in ("target", "images")}
