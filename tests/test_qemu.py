"""The boot test's protocol and the guest checks, against a stand-in guest (a shell on pipes)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlbuild.errors import MlbuildError
from mlbuild.qemu import COMPILER_CHECKS, READY_MARKER, Check, boot_test, checks_for, guest_memory_mib

# Prints the ready marker, runs each line it reads in sh, stops at the power-off command.
FAKE_GUEST = f"""
import subprocess, sys
print("booting...")
print({READY_MARKER!r}, flush=True)
for line in sys.stdin:
    if line.strip() in ("poweroff -f", "reboot -f"):
        break
    subprocess.run(["sh", "-c", line], stderr=subprocess.STDOUT)
    sys.stdout.flush()
"""


@pytest.fixture
def guest(tmp_path):
    script = tmp_path / "guest.py"
    script.write_text(FAKE_GUEST)
    return [sys.executable, str(script)]


def test_boot_test_runs_each_check_and_reports_the_matching_line(guest, tmp_path):
    checks = [Check("hello", "echo noise; echo hello there", r"^hello \w+$"), Check("c++", "expr 2 + 3", r"^5$")]
    lines = boot_test("x86_64", guest, tmp_path / "serial.log", timeout=30, checks=checks)
    assert lines[0].startswith("shell ready after")
    assert lines[1:3] == ["hello: hello there", "c++: 5"]  # a name with regex characters
    assert lines[3].startswith("powered off after")
    assert "hello there" in (tmp_path / "serial.log").read_text()


def test_a_failing_check_names_the_check_and_what_was_expected(guest, tmp_path):
    checks = [Check("answer", "echo 41", r"^42$")]
    with pytest.raises(MlbuildError, match=r"boottest:arm64: check 'answer' failed: `echo 41` gave exit status 0 .*'\^42\$'"):
        boot_test("arm64", guest, tmp_path / "serial.log", timeout=30, checks=checks)


def test_a_failing_command_fails_its_check_even_when_the_output_matches(guest, tmp_path):
    checks = [Check("status", "echo 42; false", r"^42$")]
    with pytest.raises(MlbuildError, match="exit status 1"):
        boot_test("x86_64", guest, tmp_path / "serial.log", timeout=30, checks=checks)


def test_a_slow_check_gets_its_own_time_beyond_the_boot_timeout(guest, tmp_path):
    slow = Check("slow", "sleep 2; echo done", r"^done$")
    with pytest.raises(MlbuildError, match="timed out"):
        boot_test("x86_64", guest, tmp_path / "serial.log", timeout=1, checks=[slow])
    lines = boot_test("x86_64", guest, tmp_path / "serial.log", timeout=1, checks=[slow._replace(seconds=10)])
    assert lines[1].startswith("slow: done (")


def test_the_compiler_checks_apply_only_to_a_target_with_a_cc(tmp_path):
    assert "cc" not in [check.name for check in checks_for(tmp_path)]
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/cc").symlink_to("clang")  # dangling, as it is outside the guest
    assert [check.name for check in checks_for(tmp_path)][-2:] == ["cc", "c++"]


@pytest.mark.parametrize("check", COMPILER_CHECKS, ids=lambda check: check.name)
def test_the_compiler_checks_compile_and_run_with_a_real_compiler(check, tmp_path):
    """The same shell line the guest runs, with the host's clang as cc and c++ (the quoting is the risk)."""
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "cc").symlink_to("/usr/lib/llvm-19/bin/clang")
    (tools / "c++").symlink_to("/usr/lib/llvm-19/bin/clang++")
    command = check.command.replace("cd /tmp", f"cd {tmp_path}")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert any(re.search(check.expected, line) for line in result.stdout.splitlines()), result.stdout


def test_guest_memory_grows_with_the_initramfs(tmp_path):
    small, large = tmp_path / "small.cpio", tmp_path / "large.cpio"
    small.write_bytes(b"\0" * 2**20)
    with open(large, "wb") as file:
        file.truncate(300 * 2**20)  # sparse
    assert guest_memory_mib(small) == 320
    assert guest_memory_mib(large) == 896
    assert guest_memory_mib(Path("/nonexistent")) == 256
