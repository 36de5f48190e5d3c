"""The guest's network (boot/network.py) and the firmware boot's command line (boot/qemu.py): the boot test's
HTTP server on 127.0.0.1 and the relay QEMU's guestfwd runs, both real; QEMU's options as the arch files say."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlbuild.boot import network
from mlbuild.boot.accel import Accelerator
from mlbuild.boot.qemu import firmware_checks, firmware_command, firmware_files, firmware_flash, network_check, SYSTEM_CHECKS
from mlbuild.errors import MlbuildError
from mlbuild.model.arches import load_arch

REPO = Path(__file__).resolve().parents[1]
X86_64 = load_arch(REPO / "arches" / "x86_64.toml", "arches/x86_64.toml")
ARM64 = load_arch(REPO / "arches" / "arm64.toml", "arches/arm64.toml")
RISCV64 = load_arch(REPO / "arches" / "riscv64.toml", "arches/riscv64.toml")


def test_the_relay_carries_one_http_exchange_between_its_standard_streams_and_the_loopback_server():
    data = os.urandom(300_000)
    with network.FileServer(data) as server:
        # What QEMU's guestfwd does with `cmd:`: the guest's connection on the program's stdin and stdout.
        request = f"GET {network.CHECK_PATH} HTTP/1.0\r\nHost: {network.GUEST_SERVER}\r\n\r\n".encode()
        result = subprocess.run([sys.executable, network.__file__, str(server.port)], input=request, capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        head, _, body = result.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") and body == data
        assert hashlib.sha256(body).hexdigest() == server.sha256 and server.requests == 1
        # Any other path is not served.
        other = subprocess.run([sys.executable, network.__file__, str(server.port)], input=b"GET /etc/passwd HTTP/1.0\r\n\r\n",
                               capture_output=True, timeout=60)
        assert other.stdout.startswith(b"HTTP/1.0 404") and server.requests == 1


def test_the_nic_options_restrict_the_boot_tests_network_to_one_forward():
    assert network.nic_options("e1000", "user") == ["-netdev", "user,id=net0", "-device", "e1000,netdev=net0"]
    assert network.nic_options(None, "user") == ["-nic", "user"]  # the machine's own card
    assert network.nic_options("e1000", "none") == ["-nic", "none"]
    _, option, _, device = network.nic_options("virtio-net-device", "restricted", 4321)  # virtio-mmio: riscv64
    assert device == "virtio-net-device,netdev=net0"
    assert option.startswith("user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:")
    assert option.endswith(f"{network.__file__} 4321")


def test_the_network_check_hashes_the_fetched_file_in_the_guest():
    check = network_check("wget -q -O -", "ab" * 32)
    # After waiting for a default route (udhcpc may still be at work in the background when the shell is ready).
    assert check.command.endswith("; done; wget -q -O - http://10.0.2.100/mlbuild-network-check | sha256sum")
    assert "/proc/net/route" in check.command and "\t" not in check.command
    import re
    assert re.search(check.expect, f"{'ab' * 32}  -") and not re.search(check.expect, f"{'cd' * 32}  -")


def test_the_firmware_boot_has_no_kernel_option_its_code_read_only_and_a_copy_of_the_variables(tmp_path):
    flash = firmware_flash(X86_64)  # OVMF: installed here (scripts/setup.sh: ovmf)
    disk_image = tmp_path / "disk.img"
    disk_image.write_bytes(b"\0" * 4096)
    flash, disk, variables = firmware_files(X86_64, disk_image, tmp_path / "boot", writable_copy=True)
    assert variables.read_bytes() == Path(flash.vars).read_bytes() and variables.parent == tmp_path / "boot"
    assert disk == tmp_path / "boot" / "disk.img" and disk.read_bytes() == disk_image.read_bytes()
    command = firmware_command(X86_64, flash, variables, disk, snapshot=False, interactive=False,
                               accelerator=Accelerator("tcg", ""), network_options=["-nic", "none"])
    text = " ".join(command)
    assert "-kernel" not in command and "-initrd" not in command and "-append" not in command
    assert f"-drive if=pflash,format=raw,unit=0,readonly=on,file={flash.code}" in text
    assert f"-drive if=pflash,format=raw,unit=1,file={variables}" in text
    assert f"-drive file={disk},if=virtio,format=raw -nic none" in text  # written: two boots see it
    arm = firmware_command(ARM64, firmware_flash(ARM64), variables, disk, snapshot=True, interactive=True,
                           accelerator=Accelerator("tcg", ""), network_options=[])
    assert "/usr/share/AAVMF/AAVMF_CODE.fd" in " ".join(arm) and f"file={disk},if=none,format=raw,snapshot=on,id=disk" in " ".join(arm)


def test_an_arch_without_firmware_files_is_refused_in_one_line(tmp_path):
    with pytest.raises(MlbuildError, match=r"arches/riscv64.toml: no UEFI firmware for QEMU is known for riscv64"):
        firmware_flash(RISCV64)
    absent = X86_64.model_copy(update={"firmware": X86_64.firmware.model_copy(update={"flash": [
        X86_64.firmware.flash[0].model_copy(update={"code": str(tmp_path / "none.fd")})]})})
    with pytest.raises(MlbuildError, match=r"no UEFI firmware for x86_64 is installed .*apt-get install ovmf"):
        firmware_flash(absent)


def test_the_firmware_boot_checks_the_root_partition_instead_of_the_initramfs():
    checks = {check.name: check for check in firmware_checks(X86_64, list(SYSTEM_CHECKS))}
    assert X86_64.root_partuuid in checks["disk"].expect and "/proc/cmdline" in checks["disk"].command
    assert "stty rows 50 cols 200" in checks["console-size"].command
    assert "root-device" in checks and "vda2" in checks["root-device"].command
    assert X86_64.firmware_cmdline == f"root=PARTUUID={X86_64.root_partuuid} rootwait rw console=tty0 console=ttyS0"
    assert ARM64.firmware_cmdline.endswith("rw console=ttyAMA0") and X86_64.root_partuuid != ARM64.root_partuuid
