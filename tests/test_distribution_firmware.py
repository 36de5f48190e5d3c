"""The real system booted as a real machine boots it: disk.img through UEFI firmware (OVMF on x86_64, AAVMF on
arm64), no -kernel; root on the disk's partition, a file that survives a reboot, and the network.

Slow (the real kernels): `pytest -m "not distribution"` skips it. It builds in the repository's build/ and
target/ folders, as a user would (tests/test_distribution.py's way).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distribution

REPO = Path(__file__).resolve().parents[1]
ARCHES = ("x86_64", "arm64")
sys.path.insert(0, str(REPO / "src"))

from mlbuild.model.arches import load_arch  # noqa: E402


def doit(*args: str, timeout: int = 3600, **environ: str) -> tuple[int, str]:
    env = {"MLBUILD_TARGET_LLVM": "0", **os.environ, "PYTHONPATH": str(REPO / "src"), **environ}
    result = subprocess.run([sys.executable, "-m", "doit", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def disks():
    code, output = doit("-n", "2", "build")
    assert code == 0, output[-5000:]
    return {arch: REPO / "build" / "disks" / arch / "disk.img" for arch in ARCHES}


def _serial_tail(output: str, lines: int = 6) -> list[str]:
    """The last lines of the newest serial log this boot test names (build/logs/...)."""
    logs = re.findall(r"serial log: (\S+)", output)
    path = Path(logs[-1]) if logs else None
    return path.read_text().splitlines()[-lines:] if path and path.exists() else []


@pytest.mark.parametrize("arch", ARCHES)
def test_disk_img_is_a_gpt_disk_with_the_kernel_as_the_firmwares_loader(disks, arch):
    facts = load_arch(REPO / "arches" / f"{arch}.toml", arch)
    table = subprocess.run(["sfdisk", "-d", str(disks[arch])], capture_output=True, text=True, check=True,
                           env={**os.environ, "PATH": f"/usr/sbin:/sbin:{os.environ['PATH']}"}).stdout
    assert "label: gpt" in table and f"uuid={facts.root_partuuid.upper()}" in table
    kernel = next((REPO / "target" / arch / "boot").glob("*Image"))
    loader = subprocess.run(["mtype", "-i", f"{disks[arch]}@@1M", f"::EFI/BOOT/{facts.firmware.loader}"], capture_output=True,
                            check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    assert loader == kernel.read_bytes()
    # The kernel is its own EFI program: a PE/COFF image (MZ ... PE\0\0).
    assert loader[:2] == b"MZ" and b"PE\0\0" in loader[:4096]


@pytest.mark.parametrize("arch", ARCHES)
def test_the_disk_boots_through_firmware_with_its_root_on_the_partition_and_keeps_a_file_across_a_reboot(disks, arch):
    facts = load_arch(REPO / "arches" / f"{arch}.toml", arch)
    code, output = doit(f"boottest:{arch}", "boot=firmware", "accel=tcg", timeout=1800)
    print(output)
    assert code == 0, output[-6000:]
    assert "boot 1 of 2" in output and "boot 2 of 2" in output and f"{facts.firmware.loader} from build/boot/{arch}/disk.img" in output
    assert f"disk: root=PARTUUID={facts.root_partuuid}" in output
    assert output.count("root-device: /dev/root on / type ext4 (rw") == 2
    written = re.search(r"persist-write: ([0-9a-f]{32})", output).group(1)
    assert f"persisted: {written}" in output  # read in the second boot of the same disk copy
    assert re.search(r"network: [0-9a-f]{64}\s+-", output)  # fetched from the test's server on 127.0.0.1, hashed in the guest
    assert "kernel: Linux" in output and "poweroff: QEMU exited by itself" in output
    # The boot went through the firmware: its own messages, and no -kernel on QEMU's command line.
    log = (REPO / "build" / "logs" / f"boottest_{arch}.log")
    assert log.exists()
    console = log.read_text()
    assert "EFI stub" in console or "efi:" in console, console[-3000:]


def test_the_kernel_path_has_the_network_too(disks):
    code, output = doit("boottest:x86_64", "accel=tcg", timeout=900)
    assert code == 0, output[-5000:]
    assert re.search(r"network: [0-9a-f]{64}\s+-", output) and "disk: mlbuild" in output


def test_disk_img_is_rebuilt_bit_identical(disks):
    """Built again (not restored: rebuild=), disk.img has the same bytes."""
    before = disks["x86_64"].read_bytes()
    code, output = doit("build:disk-x86_64", "rebuild=build:disk-x86_64")
    assert code == 0, output[-3000:]
    assert "build:disk-x86_64" in output
    assert disks["x86_64"].read_bytes() == before
