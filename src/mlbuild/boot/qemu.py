"""Boot a target in QEMU: interactively (run:<arch>) or headless with checks (boottest:<arch>)."""

import os
import shutil
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterable, NamedTuple
from xml.etree import ElementTree

from mlbuild.boot import network
from mlbuild.boot.accel import Accelerator
from mlbuild.errors import InputError, MlbuildError
from mlbuild.model.models import Arch, FirmwareFlash, GuestCheck, Recipe
from mlbuild.system.compression import unpacked_size

READY_MARKER = "mlbuild: system ready"  # printed by templates/target/etc/init.d/rcS
PANIC = re.compile(r"Kernel panic|end Kernel panic|Attempted to kill init")
# After `poweroff` QEMU must end by itself within this: init's shutdown (TERM, a second, KILL, a second,
# unmount) then the kernel's power off (ACPI S5 on x86_64, PSCI on arm64). A guest that only halts fails.
POWEROFF_SECONDS = 20
# The console size the boot test gives the guest (and checks): wide, so that typed commands do not wrap.
HEADLESS_CONSOLE_SIZE = (50, 200)


# Checks of the system as a whole, whatever its components: a writable /tmp, the disk image, the console's
# size and /etc/os-release.
# The components' own checks come from their recipes ([[checks]]), the user's from [[tool.mlbuild.checks]].
SYSTEM_CHECKS = [
    GuestCheck(name="file", command="echo written-and-read-back > /tmp/check && cat /tmp/check", expect=r"^written-and-read-back$"),
    GuestCheck(name="disk", command="mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/etc/hostname && umount /mnt", expect=r"^\S+$"),
    # templates/target/etc/init.d/rcS sets the console's size from the kernel command line (qemu_command).
    GuestCheck(name="console-size", command="stty size",
               expect=rf"^{HEADLESS_CONSOLE_SIZE[0]} {HEADLESS_CONSOLE_SIZE[1]}$"),
    # templates/target/etc/os-release.j2: who the system is (steps/target.py gives the version and the build id).
    GuestCheck(name="os-release", command='. /etc/os-release && echo "$ID $VERSION_ID $BUILD_ID"',
               expect=r"^mlbuild [0-9a-z._-]+ [0-9a-f]{16}$"),
]


def checks_for(recipes: Iterable[Recipe], own: Iterable[GuestCheck], arch: str) -> list[GuestCheck]:
    """The checks of the recipes in arch's target (in build order), the system's, then the user's; those
    limited to other arches (`arches = [...]`) left out. A name is one check's on every arch."""
    checks, origin = [], {}
    sources = [(f"recipes/{recipe.name}.toml", recipe.checks) for recipe in recipes]
    sources += [("mlbuild", SYSTEM_CHECKS), ("[tool.mlbuild] checks", own)]
    for where, declared in sources:
        for check in declared:
            if check.name in origin:
                raise InputError(f"{where}: check {check.name!r} is declared by {origin[check.name]} already; give it another name")
            origin[check.name] = where
            if check.arches is None or arch in check.arches:
                checks.append(check)
    return checks


class CheckResult(NamedTuple):
    name: str
    seconds: float
    failure: str | None = None  # None: passed
    skipped: bool = False


def write_junit(path: Path, arch: str, results: list[CheckResult]) -> None:
    """The boot test's results as JUnit XML, which CI systems show per check."""
    suite = ElementTree.Element("testsuite", name=f"boottest-{arch}", tests=str(len(results)),
                                failures=str(sum(1 for r in results if r.failure)),
                                skipped=str(sum(1 for r in results if r.skipped)),
                                time=f"{sum(r.seconds for r in results):.3f}")
    for result in results:
        case = ElementTree.SubElement(suite, "testcase", classname=f"boottest.{arch}", name=result.name, time=f"{result.seconds:.3f}")
        if result.failure:
            ElementTree.SubElement(case, "failure", message=result.failure.splitlines()[0]).text = result.failure
        elif result.skipped:
            ElementTree.SubElement(case, "skipped", message="not run: an earlier step failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    ElementTree.ElementTree(suite).write(temporary, encoding="utf-8", xml_declaration=True)
    temporary.replace(path)


def guest_memory_mib(initramfs: Path, least: int = 256) -> int:
    """RAM for the guest, at least `least` MiB (the arch's qemu.memory): the initramfs is held twice while
    it is unpacked into RAM (compressed, then its files), and a target with a compiler needs room to run it."""
    if not initramfs.exists():
        return least
    held = initramfs.stat().st_size
    unpacked = unpacked_size(initramfs)
    size_mib = (held + unpacked) // 2**20
    return max(least, -(-(size_mib + 256) // 64) * 64)


def check_installed(arch: Arch) -> None:
    """QEMU's program for the arch is there; else one line naming it and its package."""
    if shutil.which(arch.qemu.system) is None:
        raise MlbuildError(f"{arch.qemu.system} (which boots {arch.name}) is not installed; "
                           f"on Debian/Ubuntu: apt-get install {arch.qemu.package}")


def firmware_checks(arch: Arch, checks: list[GuestCheck]) -> list[GuestCheck]:
    """The checks of a boot through firmware from disk.img: the root is the disk's partition (not an initramfs):
    "disk" becomes "root is partition 2 by PARTUUID", and the console's size is set by the check itself (the
    command line is the kernel's own: no mlbuild.rows there)."""
    replaced = {
        "disk": GuestCheck(name="disk", command="grep -o 'root=PARTUUID=[0-9a-f-]*' /proc/cmdline",
                           expect=rf"^root=PARTUUID={arch.root_partuuid}$"),  # hex digits and -
        "console-size": GuestCheck(name="console-size", command=f"stty rows {HEADLESS_CONSOLE_SIZE[0]} cols {HEADLESS_CONSOLE_SIZE[1]} && stty size",
                                   expect=rf"^{HEADLESS_CONSOLE_SIZE[0]} {HEADLESS_CONSOLE_SIZE[1]}$"),
    }
    chosen = [replaced.get(check.name, check) for check in checks]
    return chosen + [ROOT_DEVICE_CHECK]


# / is the ext4 partition 2 of the virtio disk, mounted read-write by the kernel (it shows as /dev/root).
ROOT_DEVICE_CHECK = GuestCheck(name="root-device", command='[ "$(mountpoint -d /)" = "$(cat /sys/class/block/vda2/dev)" ] && mount | grep " on / "',
                               expect=r"^/dev/root on / type ext4 \(rw")


def persistence_checks(token: str) -> tuple[GuestCheck, GuestCheck]:
    """A file written on the disk in a first boot, then read in a second boot of the same disk."""
    return (GuestCheck(name="persist-write", command=f"echo {token} > /root/persisted && sync && cat /root/persisted", expect=f"^{token}$"),
            GuestCheck(name="persisted", command="cat /root/persisted", expect=f"^{token}$"))


def network_check(fetch: str, sha256: str) -> GuestCheck:
    """The guest fetches the boot test's file over HTTP (boot/network.py) with the system's fetch command and hashes it."""
    # First up to 20 s for a route (a card with its address): rcS's udhcpc goes on in the background after
    # its first tries, and on a loaded host the lease can come after the shell is ready. Any route, not the
    # default one: the boot test's restricted network gives no gateway. (No tab typed: a shell completes it.)
    wait = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do " \
           "grep -q '^[a-z0-9]*.[0-9A-F]\\{8\\}.' /proc/net/route && break; sleep 1; done; "
    return GuestCheck(name="network", command=f"{wait}{fetch} http://{network.GUEST_SERVER}{network.CHECK_PATH} | sha256sum",
                      expect=rf"^{sha256}\s+-?$", timeout=50)


def firmware_flash(arch: Arch) -> FirmwareFlash:
    """The arch's UEFI firmware files for QEMU's flash (arches/<arch>.toml: firmware.flash): the first pair installed."""
    firmware = arch.firmware
    if firmware is None or not firmware.flash:
        raise MlbuildError(f"arches/{arch.name}.toml: no UEFI firmware for QEMU is known for {arch.name} (firmware.flash); "
                           "boot it with boot=kernel")
    for flash in firmware.flash:
        if Path(flash.code).is_file() and Path(flash.vars).is_file():
            return flash
    package = f"; on Debian/Ubuntu: apt-get install {firmware.package}" if firmware.package else ""
    raise MlbuildError(f"no UEFI firmware for {arch.name} is installed (looked for {', '.join(f.code for f in firmware.flash)}){package}")


def firmware_files(arch: Arch, disk_image: Path, folder: Path, writable_copy: bool) -> tuple[FirmwareFlash, Path, Path]:
    """(flash, disk, variables) of one firmware boot: the variables file copied from its template into folder
    (the guest's firmware writes it), and with writable_copy the disk too (a boot that must see an earlier
    boot's writes); else the disk image itself, which QEMU then opens with snapshot=on."""
    flash = firmware_flash(arch)
    if not disk_image.is_file():
        raise MlbuildError(f"{disk_image} is missing; build it: doit build:disk-{arch.name}")
    folder.mkdir(parents=True, exist_ok=True)
    variables = folder / "efivars.fd"
    shutil.copyfile(flash.vars, variables)
    disk = disk_image
    if writable_copy:
        disk = folder / disk_image.name
        shutil.copyfile(disk_image, disk)
    return flash, disk, variables


def _disk_options(arch: Arch, disk: Path, snapshot: bool) -> list[str]:
    qemu = arch.qemu
    extra = ",snapshot=on" if snapshot else ""
    if qemu.disk.startswith("if="):  # one of -drive's own interfaces attaches it
        return ["-drive", f"file={disk},{qemu.disk},format=raw{extra}"]
    return ["-drive", f"file={disk},if=none,format=raw{extra},id=disk", "-device", f"{qemu.disk},drive=disk"]


def firmware_command(arch: Arch, flash: FirmwareFlash, variables: Path, disk: Path, snapshot: bool, interactive: bool,
                     accelerator: Accelerator, network_options: list[str]) -> list[str]:
    """QEMU's command line that boots the disk through UEFI firmware: no -kernel, the firmware finds
    EFI/BOOT/<loader> on the disk's EFI system partition. Its code is read-only flash, its variables a copy."""
    qemu = arch.qemu
    machine = ",".join([qemu.machine, *arch.firmware.machine_options])
    command = [qemu.system, "-M", machine, "-m", f"{qemu.memory >> 20}M", *accelerator.qemu_options(arch),
               "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={flash.code}",
               "-drive", f"if=pflash,format=raw,unit=1,file={variables}",
               "-no-reboot", *_disk_options(arch, disk, snapshot), *network_options]
    command += ["-nographic"] if interactive else ["-display", "none", "-serial", "stdio", "-monitor", "none"]
    return command


def qemu_command(arch: Arch, kernel: Path, initramfs: Path, disk: Path, interactive: bool, accelerator: Accelerator,
                 console_size: tuple[int, int] | None = None, network_options: list[str] | None = None) -> list[str]:
    """QEMU's command line for the arch's machine and devices (arches/<arch>.toml: qemu).

    console_size: (rows, columns) of the user's terminal, for the guest's rcS to set with stty (a
    serial line carries no size); headless, HEADLESS_CONSOLE_SIZE. Dotted names on the kernel command
    line are parameters of no module to the kernel: ignored, not passed to init; rcS reads /proc/cmdline."""
    qemu = arch.qemu
    append = f"console={arch.console} rdinit=/sbin/init panic=-1 quiet"
    if not interactive:
        console_size = HEADLESS_CONSOLE_SIZE
    if console_size:
        append += f" mlbuild.rows={int(console_size[0])} mlbuild.cols={int(console_size[1])}"
    command = [qemu.system, "-M", qemu.machine, "-m", f"{guest_memory_mib(initramfs, qemu.memory >> 20)}M",
               *accelerator.qemu_options(arch)]
    if qemu.firmware:
        command += ["-bios", qemu.firmware]
    disk_options = _disk_options(arch, disk, snapshot=True)
    if network_options is None:
        network_options = network.nic_options(qemu.nic, "user")
    command += ["-no-reboot", "-kernel", str(kernel), "-initrd", str(initramfs), "-append", append] + disk_options + network_options
    command += ["-nographic"] if interactive else ["-display", "none", "-serial", "stdio", "-monitor", "none"]
    return command


def terminal_size() -> tuple[int, int] | None:
    """(rows, columns) of the terminal on standard input, or None when it is not one."""
    try:
        if not sys.stdin.isatty():
            return None
        size = os.get_terminal_size(sys.stdin.fileno())
    except (OSError, ValueError):
        return None
    return (size.lines, size.columns) if size.lines > 0 and size.columns > 0 else None


def restore_terminal() -> None:
    """Undo what the guest's firmware and kernel left on the user's terminal: autowrap off (SeaBIOS
    turns it off), raw mode (QEMU's -nographic). Only when standard input is a terminal."""
    try:
        if not sys.stdin.isatty():
            return
    except ValueError:
        return
    sys.stdout.write("\033[?7h")  # DECAWM: wrap long lines again
    sys.stdout.flush()
    subprocess.run(["stty", "sane"], stdin=sys.stdin, check=False)


def run_interactive(command: list[str]) -> None:
    print("mlbuild: booting; leave with `poweroff` or `reboot` in the guest, or Ctrl-A X (QEMU's console)", flush=True)
    try:
        result = subprocess.run(command)
    finally:
        restore_terminal()
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

    def drain(self) -> None:
        """Take what the console printed and nobody waited for (after `poweroff`) into `seen`."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.seen.append(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.reader.join(timeout=5)  # it still writes to the log until QEMU's output ends
        self.log.close()


def boot_test(arch: str, command: list[str], log_path: Path, timeout: int, checks: list[GuestCheck],
              accel: str = "tcg", report: Path | None = None, poweroff_seconds: float = POWEROFF_SECONDS,
              power_off: str = "poweroff") -> list[str]:
    """Boot, run the checks in the guest, power off; returns a line per passed check.
    The power off is a check too: `poweroff`, as a user types it, must end QEMU by itself (exit
    status 0) within poweroff_seconds; QEMU is killed only after that, and the test fails.
    A failure says under which accelerator, after how long, and what the console showed last.
    With `report`, the results are also written there as JUnit XML, passed or not."""
    console = SerialConsole(command, log_path)
    started = time.monotonic()
    deadline = started + timeout
    passed: list[str] = []
    results: list[CheckResult] = []
    step, step_started = "boot", started
    try:
        console.wait_for(re.escape(READY_MARKER), deadline, what=f"the guest's {READY_MARKER!r}")
        ready = time.monotonic() - started
        results.append(CheckResult("boot", ready))
        passed.append(f"shell ready after {ready:.1f} s")
        for check in checks:
            name, step, step_started = check.name, check.name, time.monotonic()
            deadline += check.timeout
            # The markers are split in the command so that the echoed command line never matches.
            # The begin marker may follow a prompt: a shell that starts (or prompts again) after the
            # command was typed, and so after the terminal echoed it, prints its prompt right before it.
            console.send(f'echo "@@begin""-{name}"; {check.command}; echo "@@end""-{name} rc=$?"')
            console.wait_for(f"@@begin-{re.escape(name)}$", deadline, what=f"check {name!r} to start")
            output = console.wait_for(f"^@@end-{re.escape(name)} rc=", deadline, what=f"check {name!r} to end")
            status = output[-1].rsplit("rc=", 1)[1].strip()
            body = output[:-1]
            matched = next((line.strip() for line in body if re.search(check.expect, line)), None)
            if status != "0" or matched is None:
                raise MlbuildError(f"check {name!r} failed: `{check.command}` gave exit status {status} and {body[-3:]!r}, "
                                   f"expected a line matching {check.expect!r}")
            took = time.monotonic() - step_started
            results.append(CheckResult(name, took))
            passed.append(f"{name}: {matched}" + (f" ({took:.1f} s)" if check.timeout else ""))
        step, step_started = "poweroff", time.monotonic()
        console.send(power_off)  # arches/<arch>.toml's qemu.power_off: what a user types
        try:
            status = console.process.wait(timeout=poweroff_seconds)
        except subprocess.TimeoutExpired:
            raise MlbuildError(f"QEMU was still running {poweroff_seconds:g} s after `{power_off}` (the guest halted "
                               "without powering off the machine?)") from None
        if status != 0:
            raise MlbuildError(f"QEMU exited with status {status} after `{power_off}` (expected 0)")
        took = time.monotonic() - step_started
        results.append(CheckResult("poweroff", took))
        passed.append(f"poweroff: QEMU exited by itself {took:.1f} s after `{power_off}` ({time.monotonic() - started:.1f} s in all)")
        return passed
    except MlbuildError as error:
        elapsed = time.monotonic() - started
        console.drain()
        tail = (f"last {min(20, len(console.seen))} console lines:\n" + "\n".join(f"  | {line}" for line in console.seen[-20:])
                if console.seen else "(the console printed nothing)")
        message = f"boottest:{arch}: {error} (accel {accel}, after {elapsed:.1f} s); serial log: {log_path}\n{tail}"
        results.append(CheckResult(step, time.monotonic() - step_started, failure=message))
        done = {result.name for result in results}
        results += [CheckResult(name, 0.0, skipped=True) for name in [c.name for c in checks] + ["poweroff"] if name not in done]
        raise MlbuildError(message) from None
    finally:
        console.close()
        if report is not None:
            write_junit(report, arch, results)
