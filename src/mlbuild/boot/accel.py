"""Which QEMU accelerator boots a guest: KVM only where it is proven to run guest code, else TCG.

A /dev/kvm that opens is not enough: nested or paravirtualised KVM can accept
`-accel kvm` and then run a guest that never executes a useful instruction (an
empty console for ever). So `accel=auto` boots the target's own kernel once
under KVM, without an initramfs, and trusts KVM only if the kernel's banner
reaches the serial console within a few seconds. The verdict is remembered in
the build folder, keyed by this host's kernel, CPU, QEMU and /dev/kvm, and
probed again on any other host.
"""

import hashlib
import json
import os
import platform
import subprocess
import threading
import time
from pathlib import Path
from typing import NamedTuple

from mlbuild.errors import MlbuildError
from mlbuild.model.models import Arch

PROBE_SECONDS = 5.0
BANNER = b"Linux version"  # the kernel's first console line: guest code ran
KVM_DEVICE = Path("/dev/kvm")


class Accelerator(NamedTuple):
    name: str  # "kvm" or "tcg", as QEMU's -accel takes it
    reason: str  # one line for the user: what was chosen and why

    def qemu_options(self, arch: Arch) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg"] + (["-cpu", arch.qemu.cpu] if arch.qemu.cpu else [])


def _kvm_openable(device: Path) -> bool:
    try:
        descriptor = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(descriptor)
    return True


def host_key(arch: Arch, device: Path = KVM_DEVICE) -> str:
    """This host as far as KVM is concerned: kernel, CPU model and flags, QEMU binary, the KVM device."""
    parts = [arch.name, *platform.uname()]
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace").split("\n\n")[0]
        parts += [line for line in cpuinfo.splitlines() if line.split(":")[0].strip() in
                  {"vendor_id", "model name", "flags", "CPU implementer", "CPU part", "Features"}]
    except OSError:
        pass
    for path in (_which(arch.qemu.system), device):
        try:
            info = os.stat(path) if path else None
            parts.append(f"{path}:{info.st_size}:{info.st_mtime_ns}:{info.st_rdev}" if info else "absent")
        except OSError:
            parts.append(f"{path}:absent")
    return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()


def _which(program: str) -> str | None:
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder, program)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def probe_kvm(arch: Arch, kernel: Path, seconds: float = PROBE_SECONDS) -> tuple[bool, str]:
    """Boot the kernel under KVM with no initramfs; true when its banner reaches the console in time."""
    program = arch.qemu.system
    command = [program, "-M", arch.qemu.machine, "-accel", "kvm", "-cpu", "host", "-m", "128M",
               *(["-bios", arch.qemu.firmware] if arch.qemu.firmware else []),
               "-display", "none", "-nodefaults", "-serial", "stdio", "-monitor", "none", "-no-reboot",
               "-kernel", str(kernel), "-append", f"console={arch.console} panic=-1"]
    started = time.monotonic()
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as error:
        return False, f"kvm: {program} did not start ({error.strerror})"
    output = bytearray()
    seen = threading.Event()
    closed = threading.Event()  # QEMU closed its output: it ended, or is about to

    def read() -> None:
        for chunk in iter(lambda: process.stdout.read1(4096), b""):
            output.extend(chunk)
            if BANNER in output:
                seen.set()
                return
        closed.set()
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    seen.wait(seconds)
    elapsed = time.monotonic() - started
    # Output closed means QEMU is ending: wait for its status rather than take it for a hang
    # (on a loaded machine it is reaped a moment after its output closes).
    exited = process.poll()
    if exited is None and closed.is_set():
        try:
            exited = process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass  # closed its output and runs on: a hang after all
    if exited is None:
        process.kill()
    process.wait()
    if BANNER in output:
        return True, f"kvm: the guest kernel printed its banner after {elapsed:.1f} s"
    text = output.decode(errors="replace").strip()
    said = f" ({text.splitlines()[-1][:120]!r})" if text else ""
    if exited is not None:
        return False, f"kvm: {program} -accel kvm exited with status {exited}{said}, falling back to tcg"
    if text:
        return False, f"kvm: no kernel banner in {seconds:g} s{said}, falling back to tcg"
    return False, f"kvm: no console output in {seconds:g} s, falling back to tcg"


def choose(arch: Arch, host: str, setting: str, kernel: Path, remember_in: Path | None, device: Path = KVM_DEVICE) -> Accelerator:
    """The accelerator for booting `kernel` of `arch` on a build machine of arch `host` under the configured
    setting (auto, kvm or tcg)."""
    if setting == "tcg":
        return Accelerator("tcg", "tcg: as configured (accel=tcg)")
    if host != arch.name:
        why = f"kvm runs only the host's arch ({host}), the guest is {arch.name}"
    elif not device.exists():
        why = f"no {device} on this host"
    elif not _kvm_openable(device):
        why = f"{device} cannot be opened for reading and writing by this user"
    else:
        why = None
    if setting == "kvm":
        if why:
            raise MlbuildError(f"accel=kvm: {why}; use accel=auto or accel=tcg")
        return Accelerator("kvm", "kvm: as configured (accel=kvm)")
    if why:
        return Accelerator("tcg", f"tcg: {why}")
    key = host_key(arch, device)
    remembered = _recall(remember_in, key) if remember_in else None
    if remembered:
        return Accelerator(remembered["accel"], f"{remembered['reason']} (remembered for this host)")
    works, reason = probe_kvm(arch, kernel)
    accelerator = Accelerator("kvm" if works else "tcg", reason)
    if remember_in:
        _remember(remember_in, key, accelerator)
    return accelerator


def _recall(path: Path, key: str) -> dict | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: probe again
    if isinstance(entry, dict) and entry.get("host") == key and entry.get("accel") in ("kvm", "tcg") \
            and isinstance(entry.get("reason"), str):
        return entry
    return None


def _remember(path: Path, key: str, accelerator: Accelerator) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps({"host": key, "accel": accelerator.name, "reason": accelerator.reason}))
        os.replace(temporary, path)
    except OSError:
        pass  # only a cache: the next boot probes again
