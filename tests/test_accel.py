"""Choosing QEMU's accelerator on the three kinds of host: no KVM, KVM that runs guests, KVM that hangs.

QEMU is replaced by a small script first on PATH (and /dev/kvm by a file this user can open), so
that every situation, the hanging one above all, runs on every machine; the real KVM boot is in
tests/test_distribution.py, where a kernel has been built.
"""

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from mlbuild.boot import accel
from mlbuild.boot.accel import choose
from mlbuild.model.config import load_config
from mlbuild.errors import InputError, MlbuildError
from mlbuild.model.models import GuestCheck
from mlbuild.boot.qemu import boot_test
from mlbuild.model.arches import load_arches
from mlbuild.model.external import arch_files, trees

KNOWN = load_arches(arch_files(trees(Path(__file__).resolve().parents[1], [])))  # the project's arches/
MACHINE = KNOWN.machine_arch()  # the build machine's arch in mlbuild's names
HOST_ARCH = MACHINE if MACHINE in KNOWN else None
OTHER_ARCH = "arm64" if HOST_ARCH == "x86_64" else "x86_64"
needs_known_host = pytest.mark.skipif(HOST_ARCH is None, reason=f"QEMU has no KVM guest of this host's arch ({os.uname().machine})")

# A stand-in for qemu-system-*: under KVM it behaves as told ($FAKE_KVM: hang, banner or fail),
# under TCG it prints a kernel banner. Each call is logged.
FAKE_QEMU = """#!/bin/sh
echo "$*" >> "{log}"
case " $* " in
  *" -accel kvm "*|*" -enable-kvm "*)
    case "$FAKE_KVM" in
      hang) exec sleep 60 ;;
      fail) echo "qemu: failed to set MSR 0x48b" >&2; exit 1 ;;
    esac ;;
esac
echo "[    0.000000] Linux version 6.1.176 (fake)"
exec sleep 60
"""


@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    """A fake QEMU first on PATH and a fake /dev/kvm this user can open; returns (device, call log)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "qemu-calls.log"
    log.touch()
    program = bin_dir / KNOWN[HOST_ARCH].qemu.system
    program.write_text(FAKE_QEMU.format(log=log))
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    device = tmp_path / "kvm"
    device.touch()
    return device, log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_tcg_when_configured_whatever_the_host(tmp_path):
    chosen = choose(KNOWN["x86_64"], MACHINE, "tcg", tmp_path / "bzImage", tmp_path / "accel.json")
    assert chosen == ("tcg", "tcg: as configured (accel=tcg)")
    assert chosen.qemu_options(KNOWN["x86_64"]) == ["-accel", "tcg"]
    assert choose(KNOWN["arm64"], MACHINE, "tcg", tmp_path / "Image", None).qemu_options(KNOWN["arm64"]) == ["-accel", "tcg", "-cpu", "cortex-a57"]


@needs_known_host
def test_without_kvm_auto_chooses_tcg_and_says_why_and_kvm_is_refused(tmp_path):
    missing = tmp_path / "no-such-kvm"
    chosen = choose(KNOWN[HOST_ARCH], MACHINE, "auto", tmp_path / "kernel", tmp_path / "accel.json", device=missing)
    assert chosen.name == "tcg"
    assert chosen.reason == f"tcg: no {missing} on this host"
    with pytest.raises(MlbuildError, match=r"accel=kvm: no .*no-such-kvm on this host; use accel=auto or accel=tcg"):
        choose(KNOWN[HOST_ARCH], MACHINE, "kvm", tmp_path / "kernel", None, device=missing)


@needs_known_host
def test_kvm_that_this_user_cannot_open_is_not_used(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root opens any file: permissions cannot make the device unusable")
    device = tmp_path / "kvm"
    device.touch(mode=0o000)
    chosen = choose(KNOWN[HOST_ARCH], MACHINE, "auto", tmp_path / "kernel", None, device=device)
    assert chosen.name == "tcg" and "cannot be opened" in chosen.reason


def test_a_guest_of_another_arch_never_uses_kvm(tmp_path):
    chosen = choose(KNOWN[OTHER_ARCH], MACHINE, "auto", tmp_path / "kernel", None)
    assert chosen.name == "tcg"
    assert f"the guest is {OTHER_ARCH}" in chosen.reason
    with pytest.raises(MlbuildError, match="accel=kvm: kvm runs only the host's arch"):
        choose(KNOWN[OTHER_ARCH], MACHINE, "kvm", tmp_path / "kernel", None)


@needs_known_host
def test_kvm_that_hangs_falls_back_to_tcg_and_the_verdict_is_remembered_for_this_host_only(fake_host, tmp_path, monkeypatch):
    device, log = fake_host
    monkeypatch.setenv("FAKE_KVM", "hang")
    remember = tmp_path / "state" / "accel.json"
    started = time.monotonic()
    chosen = choose(KNOWN[HOST_ARCH], MACHINE, "auto", tmp_path / "kernel", remember, device=device)
    took = time.monotonic() - started
    assert chosen == ("tcg", "kvm: no console output in 5 s, falling back to tcg")
    assert took >= accel.PROBE_SECONDS  # it waited the whole probe time (no upper bound: a loaded machine is slow to start QEMU)
    assert len(calls(log)) == 1 and "-accel kvm" in calls(log)[0]

    again = choose(KNOWN[HOST_ARCH], MACHINE, "auto", tmp_path / "kernel", remember, device=device)
    assert again == ("tcg", "kvm: no console output in 5 s, falling back to tcg (remembered for this host)")
    assert len(calls(log)) == 1, "the remembered verdict must not probe again"

    # Another host (here: another KVM device) never reuses it.
    other_device = tmp_path / "kvm-elsewhere"
    other_device.touch()
    monkeypatch.setenv("FAKE_KVM", "banner")
    elsewhere = choose(KNOWN[HOST_ARCH], MACHINE, "auto", tmp_path / "kernel", remember, device=other_device)
    assert elsewhere.name == "kvm" and "remembered" not in elsewhere.reason
    assert len(calls(log)) == 2


@needs_known_host
def test_kvm_that_runs_the_guest_kernel_is_used(fake_host, tmp_path, monkeypatch):
    device, log = fake_host
    monkeypatch.setenv("FAKE_KVM", "banner")
    chosen = choose(KNOWN[HOST_ARCH], MACHINE, "auto", tmp_path / "kernel", None, device=device)
    assert chosen.name == "kvm"
    assert chosen.reason.startswith("kvm: the guest kernel printed its banner after ")
    assert chosen.qemu_options(KNOWN[HOST_ARCH]) == ["-accel", "kvm", "-cpu", "host"]
    assert f"-kernel {tmp_path / 'kernel'}" in calls(log)[0]


@needs_known_host
def test_kvm_that_makes_qemu_exit_falls_back_with_qemus_words(fake_host, tmp_path, monkeypatch):
    device, _ = fake_host
    monkeypatch.setenv("FAKE_KVM", "fail")
    chosen = choose(KNOWN[HOST_ARCH], MACHINE, "auto", tmp_path / "kernel", None, device=device)
    assert chosen.name == "tcg"
    assert "exited with status 1" in chosen.reason and "failed to set MSR" in chosen.reason
    assert chosen.reason.endswith("falling back to tcg")


@needs_known_host
def test_a_damaged_remembered_verdict_is_probed_again(fake_host, tmp_path, monkeypatch):
    device, log = fake_host
    monkeypatch.setenv("FAKE_KVM", "banner")
    remember = tmp_path / "accel.json"
    remember.write_bytes(b"\x00\xffnot json")
    assert choose(KNOWN[HOST_ARCH], MACHINE, "auto", tmp_path / "kernel", remember, device=device).name == "kvm"
    assert len(calls(log)) == 1


def test_accel_is_a_configuration_key_like_every_other(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.mlbuild]\naccel = "tcg"\n')
    assert load_config(tmp_path, environ={}).accel == "tcg"
    assert load_config(tmp_path, {"accel": "kvm"}, environ={}).accel == "kvm"
    assert load_config(tmp_path, environ={"MLBUILD_ACCEL": "auto"}).accel == "auto"
    assert load_config(tmp_path / "nowhere", environ={}).accel == "auto"
    with pytest.raises(InputError, match="accel"):
        load_config(tmp_path, {"accel": "hvf"}, environ={})


SILENT_GUEST = "import time\ntime.sleep(60)\n"
CHATTY_GUEST = "import sys, time\nfor n in range(30):\n    print(f'boot line {n}', flush=True)\ntime.sleep(60)\n"


@pytest.mark.parametrize("guest, expected_tail", [
    (SILENT_GUEST, "(the console printed nothing)"),
    (CHATTY_GUEST, "last 20 console lines:\n" + "\n".join(f"  | boot line {n}" for n in range(10, 30))),
])
def test_a_boot_that_times_out_says_under_which_accelerator_after_how_long_and_what_it_printed(tmp_path, guest, expected_tail):
    script = tmp_path / "guest.py"
    script.write_text(guest)
    with pytest.raises(MlbuildError) as failure:
        boot_test("x86_64", [sys.executable, str(script)], tmp_path / "serial.log", timeout=2,
                  checks=[GuestCheck(name="never", command="true", expect="^x$")], accel="kvm")
    message = str(failure.value)
    assert message.startswith("boottest:x86_64: timed out waiting for the guest's 'mlbuild: system ready' (accel kvm, after 2.")
    assert message.endswith(expected_tail)
    assert "boot line 9\n" not in message
