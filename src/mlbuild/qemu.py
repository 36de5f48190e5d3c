"""Boot a target in QEMU: interactively (run:<arch>) or headless with checks (boottest:<arch>)."""

import os
import platform
import queue
import re
import subprocess
import threading
import time
from functools import cache
from pathlib import Path

from .arches import ARCHES
from .errors import MlbuildError

READY_MARKER = "mlbuild: system ready"  # printed by templates/target/etc/init.d/rcS
PANIC = re.compile(r"Kernel panic|end Kernel panic|Attempted to kill init")

# name, command run in the guest, regex its output must match
CHECKS = [
    ("kernel", "uname -a", r"^Linux \S+ \d+\.\d+\.\d+.* (x86_64|aarch64)"),
    ("applets", "busybox --list | wc -l", r"^\s*[1-9][0-9]{2,}\s*$"),
    ("file", "echo written-and-read-back > /tmp/check && cat /tmp/check", r"^written-and-read-back$"),
    ("disk", "mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/etc/hostname && umount /mnt", r"^\S+$"),
    ("setuid", "stat -c '%A %U %G' /bin/busybox", r"^-rwsr-xr-x root root$"),
]


@cache
def _kvm_usable(arch: str) -> bool:
    """KVM for this arch, if it really works: nested virtualisation can offer
    /dev/kvm and still abort QEMU at start ("failed to set MSR"), so try it."""
    host = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())
    if host != arch or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    probe = [QEMU[arch][0], "-M", QEMU[arch][1], "-accel", "kvm", "-cpu", "host",
             "-display", "none", "-nodefaults", "-monitor", "none", "-S"]
    try:
        subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=1.5)
    except subprocess.TimeoutExpired:
        return True  # still running, stopped at its first instruction: KVM works
    except OSError:
        return False
    return False


QEMU = {"x86_64": ("qemu-system-x86_64", "q35"), "arm64": ("qemu-system-aarch64", "virt")}


def qemu_command(arch: str, kernel: Path, initramfs: Path, disk: Path, interactive: bool) -> list[str]:
    facts = ARCHES[arch]
    append = f"console={facts.console} rdinit=/sbin/init panic=-1 quiet"
    if arch == "x86_64":
        command = ["qemu-system-x86_64", "-M", "q35", "-m", "256M"]
        disk_options = ["-drive", f"file={disk},if=virtio,format=raw,snapshot=on"]
    else:
        command = ["qemu-system-aarch64", "-M", "virt", "-m", "256M"]
        disk_options = ["-drive", f"file={disk},if=none,format=raw,snapshot=on,id=disk",
                        "-device", "virtio-blk-pci,drive=disk"]
    command += ["-enable-kvm", "-cpu", "host"] if _kvm_usable(arch) else (["-cpu", "cortex-a57"] if arch == "arm64" else [])
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
        threading.Thread(target=self._reader, daemon=True).start()

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

    def wait_for(self, pattern: str, deadline: float) -> list[str]:
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
                raise MlbuildError(f"{why} waiting for {pattern!r}")
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
        self.log.close()


def boot_test(arch: str, command: list[str], log_path: Path, timeout: int, extra_checks=()) -> list[str]:
    """Boot, run CHECKS in the guest, power off; returns a line per passed check."""
    console = SerialConsole(command, log_path)
    started = time.monotonic()
    deadline = started + timeout
    passed = []
    try:
        console.wait_for(re.escape(READY_MARKER), deadline)
        ready = time.monotonic() - started
        passed.append(f"shell ready after {ready:.1f} s")
        for name, guest_command, expected in [*CHECKS, *extra_checks]:
            # The markers are split in the command so that the echoed command line never matches.
            console.send(f'echo "@@begin""-{name}"; {guest_command}; echo "@@end""-{name} rc=$?"')
            console.wait_for(f"^@@begin-{name}$", deadline)
            output = console.wait_for(f"^@@end-{name} rc=", deadline)
            status = output[-1].rsplit("rc=", 1)[1].strip()
            body = [line for line in output[:-1]]
            if status != "0" or not any(re.search(expected, line) for line in body):
                raise MlbuildError(f"check {name!r} failed: `{guest_command}` gave exit status {status} and {body[-3:]!r}, expected a line matching {expected!r}")
            passed.append(f"{name}: {body[0].strip() if body else ''}")
        console.send("poweroff -f" if arch == "arm64" else "reboot -f")
        try:
            console.process.wait(timeout=max(5, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise MlbuildError("the guest did not power off") from None
        passed.append(f"powered off after {time.monotonic() - started:.1f} s")
        return passed
    except MlbuildError as error:
        tail = "\n".join(console.seen[-20:])
        raise MlbuildError(f"boottest:{arch}: {error}; serial log: {log_path}\n{tail}") from None
    finally:
        console.close()
