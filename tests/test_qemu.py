"""The boot test's protocol and the guest checks, against a stand-in guest (a shell on pipes)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlbuild.errors import MlbuildError
import tomllib
from xml.etree import ElementTree

from mlbuild.errors import InputError
from mlbuild.model.models import GuestCheck, Recipe
from mlbuild.boot.qemu import READY_MARKER, SYSTEM_CHECKS, boot_test, checks_for, guest_memory_mib

REPO = Path(__file__).resolve().parents[1]


def Check(name, command, expect, timeout=0, arches=None):
    return GuestCheck(name=name, command=command, expect=expect, timeout=timeout, arches=arches)


def recipe(name):
    return Recipe.model_validate(tomllib.loads((REPO / "recipes" / f"{name}.toml").read_text()))


COMPILER_CHECKS = recipe("clang").checks

# Prints the ready marker, runs each line it reads in sh, ends at `poweroff` (as QEMU does when the guest powers off).
FAKE_GUEST = f"""
import subprocess, sys
print("booting...")
print({READY_MARKER!r}, flush=True)
for line in sys.stdin:
    if line.strip() == "poweroff":
        break
    subprocess.run(["sh", "-c", line], stderr=subprocess.STDOUT)
    sys.stdout.flush()
"""
# A guest whose kernel can only halt (x86_64 without ACPI): QEMU stays open after `poweroff`.
HALTING_GUEST = FAKE_GUEST.replace("        break", "        print('reboot: System halted', flush=True)\n"
                                                    "        import time; time.sleep(3600)")


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
    assert re.fullmatch(r"poweroff: QEMU exited by itself \d+\.\d s after `poweroff` \(\d+\.\d s in all\)", lines[3]), lines[3]
    assert "hello there" in (tmp_path / "serial.log").read_text()


def test_a_guest_that_halts_without_ending_qemu_fails_the_boot_test_and_is_killed(tmp_path):
    script = tmp_path / "guest.py"
    script.write_text(HALTING_GUEST)
    report = tmp_path / "report.xml"
    started = time.monotonic()
    with pytest.raises(MlbuildError) as failure:
        boot_test("x86_64", [sys.executable, str(script)], tmp_path / "serial.log", timeout=30,
                  checks=[Check("hello", "echo hi", "^hi$")], report=report, poweroff_seconds=1.5)
    assert 1.5 <= time.monotonic() - started < 15  # waited the power-off time, not the boot timeout
    message = str(failure.value)
    assert message.startswith("boottest:x86_64: QEMU was still running 1.5 s after `poweroff` (the guest halted without "
                              "powering off the machine?)"), message
    assert "  | reboot: System halted" in message  # what the console showed last
    cases = {case.get("name"): case for case in ElementTree.parse(report).getroot().iter("testcase")}
    assert cases["hello"].find("failure") is None and cases["poweroff"].find("failure") is not None
    assert not [p for p in subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True).stdout.split()]


def test_a_guest_that_ends_with_an_error_status_fails_the_power_off(tmp_path):
    script = tmp_path / "guest.py"
    script.write_text(FAKE_GUEST.replace("        break", "        sys.exit(3)"))
    with pytest.raises(MlbuildError, match=r"^boottest:arm64: QEMU exited with status 3 after `poweroff` \(expected 0\)"):
        boot_test("arm64", [sys.executable, str(script)], tmp_path / "serial.log", timeout=30, checks=[])


def test_a_prompt_printed_after_the_typed_command_may_precede_the_begin_marker(tmp_path):
    # toybox's toysh: started by oneit after rcS printed the ready marker, it prompts after the
    # terminal echoed the first command, so "# " and the marker share a line.
    script = tmp_path / "guest.py"
    script.write_text(FAKE_GUEST.replace("    subprocess.run(", "    print('# ', end='', flush=True)\n    subprocess.run("))
    checks = [Check("hello", "echo hello there", r"^hello \w+$")]
    lines = boot_test("x86_64", [sys.executable, str(script)], tmp_path / "serial.log", timeout=30, checks=checks)
    assert lines[1] == "hello: hello there"
    assert "# @@begin-hello" in (tmp_path / "serial.log").read_text()


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
    lines = boot_test("x86_64", guest, tmp_path / "serial.log", timeout=1, checks=[slow.model_copy(update={"timeout": 10})])
    assert lines[1].startswith("slow: done (")


def test_the_checks_come_from_the_recipes_in_the_target_then_the_system_then_the_user():
    own = [Check("mine", "cat /etc/hostname", r"^\S+$")]
    small = checks_for([recipe("linux"), recipe("busybox")], own, "x86_64")
    assert [check.name for check in small] == ["kernel", "applets", "setuid", "file", "disk", "console-size", "os-release", "mine"]
    with_compiler = checks_for([recipe("linux"), recipe("busybox"), recipe("clang")], [], "x86_64")
    assert [check.name for check in with_compiler][3:5] == ["cc", "c++"]
    assert [check.timeout for check in with_compiler][3:5] == [600, 900]


def test_two_checks_of_one_name_are_refused_naming_both_places():
    with pytest.raises(InputError, match=r"^\[tool.mlbuild\] checks: check 'disk' is declared by mlbuild already"):
        checks_for([recipe("busybox")], [Check("disk", "true", "x")], "x86_64")
    with pytest.raises(InputError, match=r"check 'applets' is declared by recipes/busybox.toml already"):
        checks_for([recipe("busybox"), recipe("busybox")], [], "x86_64")


def test_a_check_limited_to_some_arches_runs_only_in_their_boot_test():
    own = [Check("mine", "true", "^$"), Check("only-arm", "uname -m", "^aarch64$", arches=["arm64"])]
    fenced = recipe("busybox").model_copy(update={"checks": [Check("x86-only", "uname -m", "^x86_64$", arches=["x86_64"])]})
    system = [check.name for check in SYSTEM_CHECKS]
    assert [check.name for check in checks_for([fenced], own, "x86_64")] == ["x86-only", *system, "mine"]
    assert [check.name for check in checks_for([fenced], own, "arm64")] == [*system, "mine", "only-arm"]
    # A name is one check's on every arch: limiting it to another arch does not make room for a second.
    with pytest.raises(InputError, match=r"check 'disk' is declared by mlbuild already"):
        checks_for([], [Check("disk", "true", "x", arches=["arm64"])], "x86_64")


def test_a_recipe_s_checks_take_arches_too():
    data = tomllib.loads((REPO / "recipes" / "busybox.toml").read_text())
    data["checks"][0]["arches"] = ["arm64"]
    limited = Recipe.model_validate(data)
    assert data["checks"][0]["name"] not in [check.name for check in checks_for([limited], [], "x86_64")]
    assert data["checks"][0]["name"] in [check.name for check in checks_for([limited], [], "arm64")]


@pytest.mark.parametrize("field, value, expected", [
    ("arches", ["x86-64"], "String should match pattern"),  # which names exist is arches/'s: test_config, test_input_errors
    ("command", "echo a\necho b", "expected one line"),
    ("expect", "(unclosed", "expected a regular expression"),
    ("name", "two words", "String should match pattern"),
    ("timeout", -1, "greater than or equal to 0"),
])
def test_a_bad_check_is_refused(field, value, expected):
    fields = {"name": "x", "command": "true", "expect": "^$", field: value}
    with pytest.raises(ValueError, match=expected):
        GuestCheck(**fields)


def test_the_results_are_written_as_junit_xml_passed_or_failed(guest, tmp_path):
    report = tmp_path / "reports" / "boottest-x86_64.xml"
    checks = [Check("first", "echo one", r"^one$"), Check("second", "echo two", r"^three$"), Check("third", "true", "^$")]
    with pytest.raises(MlbuildError):
        boot_test("x86_64", guest, tmp_path / "serial.log", timeout=30, checks=checks, report=report)
    suite = ElementTree.parse(report).getroot()
    assert suite.tag == "testsuite" and suite.get("name") == "boottest-x86_64"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == ["boot", "first", "second", "third", "poweroff"]
    assert cases["first"].find("failure") is None and cases["first"].find("skipped") is None
    assert "check 'second' failed" in cases["second"].find("failure").get("message")
    assert cases["third"].find("skipped") is not None and cases["poweroff"].find("skipped") is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "2")

    boot_test("x86_64", guest, tmp_path / "serial.log", timeout=30, checks=checks[:1], report=report)
    suite = ElementTree.parse(report).getroot()
    assert [case.get("name") for case in suite.iter("testcase")] == ["boot", "first", "poweroff"]
    assert suite.get("failures") == "0" and not list(suite.iter("failure"))


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
    assert any(re.search(check.expect, line) for line in result.stdout.splitlines()), result.stdout


def test_guest_memory_grows_with_the_initramfs(tmp_path):
    small, large = tmp_path / "small.cpio", tmp_path / "large.cpio"
    small.write_bytes(b"\0" * 2**20)
    with open(large, "wb") as file:
        file.truncate(300 * 2**20)  # sparse
    assert guest_memory_mib(small) == 320
    assert guest_memory_mib(large) == 896
    assert guest_memory_mib(Path("/nonexistent")) == 256


def test_the_kernel_to_boot_is_where_its_recipe_says(project):
    """The synthetic project has no kernel: the boot says which declaration is missing; one declared, it is found."""
    from mlbuild.frontend.project import Project
    from mlbuild.frontend.tasks import _boot_files

    with pytest.raises(MlbuildError, match=r"build:target-x86_64: expected one recipe that declares the kernel to boot "
                                           r"\(\[arch.x86_64\] kernel = \.\.\.\), found none"):
        _boot_files(Project(project.root, environ={}), "x86_64")
    project.update_recipe("hello", arch={"x86_64": {"kernel": "boot/vmlinuz"}})
    kernel, initramfs, disk = _boot_files(Project(project.root, environ={}), "x86_64")
    assert kernel.parts[-2:] == ("boot", "vmlinuz") and initramfs.name == "initramfs.cpio.zst" and disk.name == "rootfs.ext4"


# --- the console: its size, and the user's terminal after QEMU ----------------------------------------

def test_the_console_size_goes_on_the_kernel_command_line_the_boot_test_gets_a_fixed_one(tmp_path):
    from mlbuild.boot.accel import Accelerator
    from mlbuild.boot.qemu import HEADLESS_CONSOLE_SIZE, qemu_command

    tcg = Accelerator("tcg", "tcg")

    def append(**keywords):
        from mlbuild.model.arches import load_arches
        from mlbuild.model.external import arch_files, trees

        command = qemu_command(load_arches(arch_files(trees(REPO, [])))["x86_64"], tmp_path / "bzImage", tmp_path / "initramfs", tmp_path / "disk", accelerator=tcg, **keywords)
        return command[command.index("-append") + 1]

    assert append(interactive=True, console_size=(33, 121)).endswith(" quiet mlbuild.rows=33 mlbuild.cols=121")
    assert "mlbuild.rows" not in append(interactive=True)  # no terminal: no size
    rows, cols = HEADLESS_CONSOLE_SIZE
    assert append(interactive=False).endswith(f" mlbuild.rows={rows} mlbuild.cols={cols}")
    # the check of it, as SYSTEM_CHECKS has it, matches what busybox's `stty size` prints
    check = next(check for check in SYSTEM_CHECKS if check.name == "console-size")
    assert re.search(check.expect, f"{rows} {cols}") and not re.search(check.expect, "24 80")


def run_on_a_pty(code: str, rows: int = 30, cols: int = 100) -> tuple[bytes, list]:
    """Run python code with a new pseudo-terminal as its stdin, stdout and stderr; (what it printed, the tty's termios after)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    process = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave,
                               env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    output = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                output += os.read(master, 65536)
            except OSError:
                break
        elif process.poll() is not None:
            break
    process.wait(timeout=30)
    attributes = termios.tcgetattr(slave)
    os.close(master)
    os.close(slave)
    return output, attributes


# What QEMU and SeaBIOS leave behind: a raw terminal (no echo, no line editing) with autowrap off.
MESSY_QEMU = "import sys, tty; tty.setraw(0); sys.stdout.write('\\033[?7l'); sys.stdout.flush()"


def test_the_terminal_is_restored_after_qemu_exits_autowrap_on_and_stty_sane():
    import termios

    untouched, raw = run_on_a_pty(f"import subprocess, sys; subprocess.run([sys.executable, '-c', {MESSY_QEMU!r}])")
    assert not raw[3] & termios.ICANON and not raw[3] & termios.ECHO  # the stand-in really leaves it raw
    assert b"\x1b[?7h" not in untouched

    output, after = run_on_a_pty("import sys\nfrom mlbuild.boot.qemu import run_interactive\n"
                                 f"run_interactive([sys.executable, '-c', {MESSY_QEMU!r}])")
    assert after[3] & termios.ICANON and after[3] & termios.ECHO  # stty sane
    assert output.index(b"\x1b[?7l") < output.rindex(b"\x1b[?7h"), output  # autowrap on again, after QEMU


def test_the_terminal_is_restored_when_qemu_fails_too_and_left_alone_without_one(tmp_path):
    import termios

    failing = MESSY_QEMU + "; sys.exit(1)"
    output, after = run_on_a_pty("import sys\nfrom mlbuild.boot.qemu import run_interactive\n"
                                 f"run_interactive([sys.executable, '-c', {failing!r}])")
    assert after[3] & termios.ICANON and b"exited with status 1" in output
    # Not a terminal (CI, a pipe): nothing written, no stty.
    result = subprocess.run([sys.executable, "-c", "from mlbuild.boot.qemu import run_interactive\nrun_interactive(['true'])"],
                            capture_output=True, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0 and b"\x1b" not in result.stdout + result.stderr


def test_the_terminal_size_is_the_one_of_standard_input():
    output, _ = run_on_a_pty("from mlbuild.boot.qemu import terminal_size; print(terminal_size())", rows=37, cols=141)
    assert b"(37, 141)" in output
    result = subprocess.run([sys.executable, "-c", "from mlbuild.boot.qemu import terminal_size; print(terminal_size())"],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.stdout == "None\n"
