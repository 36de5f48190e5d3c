"""Boot a target in QEMU: interactively (run:<arch>) or headless with checks (boottest:<arch>)."""

import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

from .accel import QEMU, Accelerator
from .arches import ARCHES
from .errors import MlbuildError

READY_MARKER = "mlbuild: system ready"  # printed by templates/target/etc/init.d/rcS
PANIC = re.compile(r"Kernel panic|end Kernel panic|Attempted to kill init")


class Check(NamedTuple):
    name: str
    command: str  # run by the guest's shell
    expected: str  # a regex one output line must match
    seconds: int = 0  # time allowed beyond the boot timeout (compiling under emulation is slow)


CHECKS = [
    Check("kernel", "uname -a", r"^Linux \S+ \d+\.\d+\.\d+.* (x86_64|aarch64)"),
    Check("applets", "busybox --list | wc -l", r"^\s*[1-9][0-9]{2,}\s*$"),
    Check("file", "echo written-and-read-back > /tmp/check && cat /tmp/check", r"^written-and-read-back$"),
    Check("disk", "mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/etc/hostname && umount /mnt", r"^\S+$"),
    Check("setuid", "stat -c '%A %U %G' /bin/busybox", r"^-rwsr-xr-x root root$"),
]

# For a target with LLVM in it (target_llvm): its compiler builds and runs C and C++ in the guest.
COMPILER_CHECKS = [
    Check("cc", "cd /tmp && printf '#include <stdio.h>\\nint main(void) { puts(\"hello from C\"); return 0; }\\n' > hello.c"
          " && cc hello.c -o hello && ./hello", r"^hello from C$", seconds=600),
    Check("c++", "cd /tmp && printf '#include <iostream>\\nint main() { std::cout << \"hello from C++\" << std::endl; }\\n' > hello.cpp"
          " && c++ hello.cpp -o hello++ && ./hello++", r"^hello from C\+\+$", seconds=900),
]


def checks_for(root: Path) -> list[Check]:
    """The guest checks for a target tree: the compiler ones when it has a cc."""
    has_cc = os.path.lexists(root / "usr/bin/cc")
    return CHECKS + (COMPILER_CHECKS if has_cc else [])


def guest_memory_mib(initramfs: Path) -> int:
    """RAM for the guest: the initramfs is held twice while it is unpacked into
    RAM, and a target with a compiler needs room to run it."""
    size_mib = initramfs.stat().st_size // 2**20 if initramfs.exists() else 0
    return max(256, -(-(2 * size_mib + 256) // 64) * 64)


def qemu_command(arch: str, kernel: Path, initramfs: Path, disk: Path, interactive: bool, accelerator: Accelerator) -> list[str]:
    facts = ARCHES[arch]
    program, machine = QEMU[arch]
    append = f"console={facts.console} rdinit=/sbin/init panic=-1 quiet"
    command = [program, "-M", machine, "-m", f"{guest_memory_mib(initramfs)}M", *accelerator.qemu_options(arch)]
    if arch == "x86_64":
        disk_options = ["-drive", f"file={disk},if=virtio,format=raw,snapshot=on"]
    else:
        disk_options = ["-drive", f"file={disk},if=none,format=raw,snapshot=on,id=disk",
                        "-device", "virtio-blk-pci,drive=disk"]
    command += ["-no-reboot", "-kernel", str(kernel), "-initrd", str(initramfs), "-append", append] + disk_options
    command += ["-nographic"] if interactive else ["-display", "none", "-serial", "stdio", "-monitor", "none"]
    return command


def run_interactive(command: list[str]) -> None:
    print("mlbuild: booting; leave the shell with `poweroff` (`reboot` on x86_64) or QEMU with Ctrl-A X", flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise MlbuildError(f"{command[0]} exited with status {result.returncode}")


class SerialConsole:
    """QEMU's serial port on pipes; everything read is also written to a log."""

    def __init__(self, command: list[str], log_path: Path):
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._reader, daemon=True)
        self.reader.start()

    def _reader(self):
        for raw in iter(self.process.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.log.write(line + "\n")
            self.log.flush()
            self.lines.put(line)
        self.lines.put(None)

    def send(self, text: str) -> None:
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def wait_for(self, pattern: str, deadline: float, what: str = "") -> list[str]:
        """Lines up to and including the first one matching pattern; fails on panic, exit or timeout."""
        collected = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.1, remaining)) if remaining > 0 else None
            except queue.Empty:
                line = None
            if line is None and (remaining <= 0 or self.process.poll() is not None):
                why = "timed out" if remaining <= 0 else f"QEMU exited (status {self.process.poll()})"
                raise MlbuildError(f"{why} waiting for {what or repr(pattern)}")
            if line is None:
                continue
            collected.append(line)
            self.seen.append(line)
            if PANIC.search(line):
                raise MlbuildError(f"kernel panic: {line.strip()}")
            if re.search(pattern, line):
                return collected

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.reader.join(timeout=5)  # it still writes to the log until QEMU's output ends
        self.log.close()


def boot_test(arch: str, command: list[str], log_path: Path, timeout: int, checks: list[Check], accel: str = "tcg") -> list[str]:
    """Boot, run the checks in the guest, power off; returns a line per passed check.
    A failure says under which accelerator, after how long, and what the console showed last."""
    console = SerialConsole(command, log_path)
    started = time.monotonic()
    deadline = started + timeout
    passed = []
    try:
        console.wait_for(re.escape(READY_MARKER), deadline, what=f"the guest's {READY_MARKER!r}")
        ready = time.monotonic() - started
        passed.append(f"shell ready after {ready:.1f} s")
        for name, guest_command, expected, seconds in checks:
            deadline += seconds
            check_started = time.monotonic()
            # The markers are split in the command so that the echoed command line never matches.
            console.send(f'echo "@@begin""-{name}"; {guest_command}; echo "@@end""-{name} rc=$?"')
            console.wait_for(f"^@@begin-{re.escape(name)}$", deadline)
            output = console.wait_for(f"^@@end-{re.escape(name)} rc=", deadline)
            status = output[-1].rsplit("rc=", 1)[1].strip()
            body = output[:-1]
            matched = next((line.strip() for line in body if re.search(expected, line)), None)
            if status != "0" or matched is None:
                raise MlbuildError(f"check {name!r} failed: `{guest_command}` gave exit status {status} and {body[-3:]!r}, expected a line matching {expected!r}")
            took = f" ({time.monotonic() - check_started:.1f} s)" if seconds else ""
            passed.append(f"{name}: {matched}{took}")
        console.send("poweroff -f" if arch == "arm64" else "reboot -f")
        try:
            console.process.wait(timeout=max(5, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise MlbuildError("the guest did not power off") from None
        passed.append(f"powered off after {time.monotonic() - started:.1f} s")
        return passed
    except MlbuildError as error:
        elapsed = time.monotonic() - started
        tail = (f"last {min(20, len(console.seen))} console lines:\n" + "\n".join(f"  | {line}" for line in console.seen[-20:])
                if console.seen else "(the console printed nothing)")
        raise MlbuildError(f"boottest:{arch}: {error} (accel {accel}, after {elapsed:.1f} s); serial log: {log_path}\n{tail}") from None
    finally:
        console.close()
