"""Arches as data: arches/<name>.toml, validated, from the project or an external tree, with no Python change."""

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SRC, base_environment, x86
from mlbuild.boot.accel import Accelerator
from mlbuild.boot.qemu import check_installed, qemu_command
from mlbuild.errors import InputError, MlbuildError
from mlbuild.model.config import load_config
from mlbuild.model import host
from mlbuild.model.arches import load_arches
from mlbuild.model.external import arch_files, trees

KNOWN = load_arches(arch_files(trees(REPO, [])))

# A fourth arch, as a layer would add it: nothing of it is in mlbuild's Python.
PPC64LE = """\
name = "ppc64le"
order = 9
triple = "powerpc64le-unknown-linux-musl"
llvm_target = "PowerPC"
console = "hvc0"

[kernel]
arch = "powerpc"
image = "arch/powerpc/boot/zImage"

[qemu]
system = "qemu-system-ppc64"
package = "qemu-system-ppc"
machine = "pseries"
cpu = "power9"
memory = "512M"
disk = "virtio-blk-pci"
nic = "virtio-net-pci"
firmware = "/usr/share/qemu/slof.bin"
power_off = "poweroff -f"
"""


def test_every_arch_file_of_the_project_is_valid_and_its_qemu_is_installed_by_setup():
    assert KNOWN.names[:2] == ["x86_64", "arm64"]  # their order: lists, messages, the toolchain's sysroots
    # scripts/setup.sh installs host.toml's packages: each arch's QEMU must be one, and name its program.
    programs = host.package_of()
    for arch in KNOWN.values():
        assert arch.qemu.package in host.packages(), f"arches/{arch.name}.toml: qemu.package not in model/host.toml"
        assert programs.get(arch.qemu.system) == arch.qemu.package
    assert KNOWN["x86_64"].kernel.srcarch == "x86"
    # The build machine's arch: the one whose triple starts with `uname -m` (aarch64 is arm64).
    machine = platform.machine()
    assert KNOWN.machine_arch() == {"aarch64": "arm64"}.get(machine, machine)
    assert KNOWN.host().name == "host"


# The command lines booting x86_64 and arm64 were written in Python before their arch files: unchanged
# (but for the console size the boot test gives the guest, issue 27, and the network card, issue 30).
BEFORE = {
    ("x86_64", "tcg", False): "qemu-system-x86_64 -M q35 -m 256M -accel tcg -no-reboot -kernel /k -initrd /i "
                              "-append console=ttyS0 rdinit=/sbin/init panic=-1 quiet mlbuild.rows=50 mlbuild.cols=200 "
                              "-drive file=/d,if=virtio,format=raw,snapshot=on -netdev user,id=net0 -device e1000,netdev=net0 -display none -serial stdio -monitor none",
    ("x86_64", "kvm", True): "qemu-system-x86_64 -M q35 -m 256M -accel kvm -cpu host -no-reboot -kernel /k -initrd /i "
                             "-append console=ttyS0 rdinit=/sbin/init panic=-1 quiet "
                             "-drive file=/d,if=virtio,format=raw,snapshot=on -netdev user,id=net0 -device e1000,netdev=net0 -nographic",
    ("arm64", "tcg", False): "qemu-system-aarch64 -M virt -m 256M -accel tcg -cpu cortex-a57 -no-reboot -kernel /k -initrd /i "
                             "-append console=ttyAMA0 rdinit=/sbin/init panic=-1 quiet mlbuild.rows=50 mlbuild.cols=200 "
                             "-drive file=/d,if=none,format=raw,snapshot=on,id=disk -device virtio-blk-pci,drive=disk "
                             "-netdev user,id=net0 -device virtio-net-pci,netdev=net0 -display none -serial stdio -monitor none",
    ("arm64", "kvm", True): "qemu-system-aarch64 -M virt -m 256M -accel kvm -cpu host -no-reboot -kernel /k -initrd /i "
                            "-append console=ttyAMA0 rdinit=/sbin/init panic=-1 quiet "
                            "-drive file=/d,if=none,format=raw,snapshot=on,id=disk -device virtio-blk-pci,drive=disk "
                            "-netdev user,id=net0 -device virtio-net-pci,netdev=net0 -nographic",
}


@pytest.mark.parametrize("arch, accel, interactive", list(BEFORE), ids=["-".join(map(str, key)) for key in BEFORE])
def test_the_qemu_command_lines_of_x86_64_and_arm64_are_what_they_were(arch, accel, interactive):
    command = qemu_command(KNOWN[arch], Path("/k"), Path("/i"), Path("/d"), interactive, Accelerator(accel, ""))
    assert " ".join(command) == BEFORE[arch, accel, interactive]


def test_riscv64_boots_on_virt_with_its_disk_on_virtio_mmio_and_opensbi_by_default():
    command = qemu_command(KNOWN["riscv64"], Path("/k"), Path("/i"), Path("/d"), False, Accelerator("tcg", ""))
    assert " ".join(command) == ("qemu-system-riscv64 -M virt -m 256M -accel tcg -no-reboot -kernel /k -initrd /i "
                                 "-append console=ttyS0 rdinit=/sbin/init panic=-1 quiet mlbuild.rows=50 mlbuild.cols=200 "
                                 "-drive file=/d,if=none,format=raw,snapshot=on,id=disk -device virtio-blk-device,drive=disk "
                                 "-netdev user,id=net0 -device virtio-net-device,netdev=net0 -display none -serial stdio -monitor none")
    assert "riscv64" not in load_config(REPO, environ={}).arches  # not built by default (CI time)


def test_a_missing_qemu_is_one_line_naming_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no QEMU at all
    with pytest.raises(MlbuildError) as raised:
        check_installed(KNOWN["riscv64"])
    assert str(raised.value) == ("qemu-system-riscv64 (which boots riscv64) is not installed; "
                                 "on Debian/Ubuntu: apt-get install qemu-system-misc")


def _layer_with_ppc64le(project_root: Path) -> Path:
    layer = project_root.parent / "ppc-layer"
    (layer / "arches").mkdir(parents=True)
    (layer / "arches" / "ppc64le.toml").write_text(PPC64LE)
    return layer


def test_an_arch_added_by_an_external_tree_has_its_tasks_and_its_qemu_command(project):
    _layer_with_ppc64le(project.root)
    project.edit("pyproject.toml", "jobs = 2\n", 'jobs = 2\nexternal = ["../ppc-layer"]\n')
    project.edit("pyproject.toml", 'arches = ["x86_64"]', 'arches = ["x86_64", "ppc64le"]')
    result = project.doit("list", "--all")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines()}
    ppc = {f"build:{name}-ppc64le" for name in ("hello", "extra", "app", "target", "images")}
    assert ppc | x86("hello", "extra", "app", "target", "images") | {"run:ppc64le", "boottest:ppc64le"} <= listed

    from mlbuild.frontend.project import Project

    loaded = Project(project.root, environ={})
    assert loaded.config.arches == ["x86_64", "ppc64le"]
    command = " ".join(qemu_command(loaded.arches["ppc64le"], Path("/k"), Path("/i"), Path("/d"), False, Accelerator("tcg", "")))
    assert command == ("qemu-system-ppc64 -M pseries -m 512M -accel tcg -cpu power9 -bios /usr/share/qemu/slof.bin -no-reboot "
                       "-kernel /k -initrd /i -append console=hvc0 rdinit=/sbin/init panic=-1 quiet mlbuild.rows=50 mlbuild.cols=200 "
                       "-drive file=/d,if=none,format=raw,snapshot=on,id=disk -device virtio-blk-pci,drive=disk "
                       "-netdev user,id=net0 -device virtio-net-pci,netdev=net0 -display none -serial stdio -monitor none")


def test_without_arches_in_the_configuration_every_default_arch_file_is_built(project):
    project.edit("pyproject.toml", 'arches = ["x86_64"]\n', "")
    from mlbuild.frontend.project import Project

    assert Project(project.root, environ={}).config.arches == KNOWN.default_names == ["x86_64", "arm64"]  # riscv64: default = false


def test_an_external_trees_arch_file_replaces_the_projects_of_that_name(project):
    layer = project.root.parent / "layer"
    (layer / "arches").mkdir(parents=True)
    arm64 = (REPO / "arches" / "arm64.toml").read_text()
    assert 'cpu = "cortex-a57"' in arm64
    (layer / "arches" / "arm64.toml").write_text(arm64.replace('cpu = "cortex-a57"', 'cpu = "cortex-a72"'))
    project.edit("pyproject.toml", "jobs = 2\n", 'jobs = 2\nexternal = ["../layer"]\n')
    from mlbuild.frontend.project import Project

    assert Project(project.root, environ={}).arches["arm64"].qemu.cpu == "cortex-a72"


COPIED = ["recipes", "arches", "templates", "dodo.py", "pyproject.toml"]


def test_the_real_project_gets_a_new_arch_from_a_layer_with_its_kernel_and_no_python_change(tmp_path):
    """The whole small system for a fourth arch: its arch file, and what the kernel recipe needs for it
    (the layer's recipes/linux.toml: ours plus [arch.ppc64le], and its config fragment)."""
    root = tmp_path / "project"
    root.mkdir()
    for name in COPIED:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, root / name)
    layer = _layer_with_ppc64le(root)
    linux = (REPO / "recipes" / "linux.toml").read_text()
    (layer / "recipes").mkdir()
    (layer / "recipes" / "linux.toml").write_text(linux + '\n[arch.ppc64le]\nfiles = ["linux/qemu-ppc64le.config"]\nkernel = "boot/zImage"\n')
    (layer / "templates" / "linux").mkdir(parents=True)
    (layer / "templates" / "linux" / "qemu-ppc64le.config").write_text("CONFIG_PPC_PSERIES=y\nCONFIG_HVC_CONSOLE=y\n")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("[tool.mlbuild]\n", '[tool.mlbuild]\nexternal = ["../ppc-layer"]\n', 1))

    result = subprocess.run([sys.executable, "-m", "doit", "list", "--all", "arches=ppc64le", "target_llvm=0"], cwd=root,
                            env=base_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines()}
    small = {f"build:{name}-ppc64le" for name in ("linux", "linux-headers", "musl", "compiler-rt", "busybox", "target", "images")}
    assert small | {"boottest:ppc64le", "run:ppc64le", "menuconfig:linux-ppc64le"} <= listed

    from mlbuild.frontend.project import Project

    loaded = Project(root, {"arches": "ppc64le", "target_llvm": "0"}, environ={})
    loaded.render_all()  # every template renders for it
    kernel = loaded.steps["build:linux-ppc64le"]
    assert "ARCH=powerpc LLVM=1" in kernel.script and "SRCARCH=powerpc " in kernel.script
    assert "kmake zImage\n" in kernel.script
    assert 'cp "$build"/arch/powerpc/boot/zImage "$OUT/boot/"zImage\n' in kernel.script
    assert "qemu-ppc64le.config" in kernel.files and "CONFIG_PPC_PSERIES=y" in kernel.files["qemu-ppc64le.config"]
    assert "powerpc64le-unknown-linux-musl" in loaded.steps["build:musl-ppc64le"].script


# --- a malformed arch file: one line naming the file and the field ---------------------------

def _set(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


BAD_ARCH_FILES = {
    "missing-field": (lambda t: _set(t, 'machine = "q35"\n', ""),
                      "arches/x86_64.toml: qemu.machine: required field is missing"),
    "wrong-type": (lambda t: _set(t, "order = 1 ", 'order = "1" '),
                   "arches/x86_64.toml: order: Input should be a valid integer, got '1'"),
    "unknown-field": (lambda t: _set(t, 'machine = "q35"\n', 'machine = "q35"\nmemroy = "512M"\n'),
                      "arches/x86_64.toml: qemu.memroy: unknown field (did you mean 'memory'?)"),
    "option-smuggled-into-cpu": (lambda t: _set(t, 'machine = "q35"\n', 'machine = "q35"\ncpu = "max -bios /tmp/evil"\n'),
                                 "arches/x86_64.toml: qemu.cpu: expected one word of letters, digits and _ . + - "
                                 "(a program, machine or device name), got 'max -bios /tmp/evil'"),
    "bad-triple": (lambda t: _set(t, '"x86_64-unknown-linux-musl"', '"x86_64 linux"'),
                   "arches/x86_64.toml: triple: expected a target triple (arch-vendor-os-env: lowercase letters, digits, _ "
                   "and .), got 'x86_64 linux'"),
    "kernel-image-outside": (lambda t: _set(t, '"arch/x86/boot/bzImage"', '"arch/x86/../../../etc/passwd"'),
                             "arches/x86_64.toml: kernel.image: expected a path inside the kernel's build tree, without '..'"),
    "disk-with-options": (lambda t: _set(t, 'disk = "if=virtio"', 'disk = "virtio-blk-pci,drive=x"'),
                          "arches/x86_64.toml: qemu.disk: expected a QEMU device model (virtio-blk-pci) or if=<interface> "
                          "of -drive (if=virtio), got 'virtio-blk-pci,drive=x'"),
    "memory-too-small": (lambda t: _set(t, 'machine = "q35"\n', 'machine = "q35"\nmemory = "8M"\n'),
                         "arches/x86_64.toml: qemu.memory: expected whole mebibytes, at least 16M (such as 256M), got 8388608 bytes"),
    "memory-not-a-size": (lambda t: _set(t, 'machine = "q35"\n', 'machine = "q35"\nmemory = "lots"\n'),
                          "arches/x86_64.toml: qemu.memory: expected a number of bytes with an optional K, M, G or T "
                          "(powers of 1024), then an optional i and B, such as 1048576, 500M, 20GiB or 1.5T, got 'lots'"),
    "power-off-two-lines": (lambda t: _set(t, 'power_off = "poweroff"', 'power_off = "sync\\npoweroff"'),
                            "arches/x86_64.toml: qemu.power_off: String should match pattern '^[^\\n\\r]+$', got 'sync\\npoweroff'"),
    "name-not-the-files": (lambda t: _set(t, 'name = "x86_64"', 'name = "amd64"'),
                           "arches/x86_64.toml: name: expected 'x86_64' (the file's name), got 'amd64'"),
    "not-toml": (lambda t: _set(t, "[kernel]", "[kernel"),
                 "arches/x86_64.toml: not valid TOML: Expected ']' at the end of a table declaration (at line 10, column 8)"),
}


@pytest.mark.parametrize("case", BAD_ARCH_FILES, ids=list(BAD_ARCH_FILES))
def test_a_malformed_arch_file_is_one_line_naming_the_file_and_the_field(case, project):
    change, message = BAD_ARCH_FILES[case]
    path = project.root / "arches" / "x86_64.toml"
    path.write_text(change(path.read_text()))
    result = project.doit("list")
    assert (result.returncode, result.stderr) == (2, f"mlbuild: {message}\n")


@pytest.mark.parametrize("name, message", [
    ("Sparc 64", "arches/Sparc 64.toml: expected an arch's name: up to 32 lowercase letters, digits and _, a letter first "
                 "as the file's name, got 'Sparc 64'"),
    ("host", "arches/host.toml: 'host' is the build machine's pseudo-arch (host recipes); choose another name"),
])
def test_an_arch_file_of_a_bad_name_is_refused(name, message, project):
    (project.root / "arches" / f"{name}.toml").write_text((project.root / "arches" / "arm64.toml").read_text())
    result = project.doit("list")
    assert (result.returncode, result.stderr) == (2, f"mlbuild: {message}\n")


def test_a_project_without_arch_files_says_so(project):
    shutil.rmtree(project.root / "arches")
    result = project.doit("list")
    assert result.returncode == 2
    assert result.stderr == ("mlbuild: arches/: no arch file; expected at least one arches/<name>.toml "
                             "(the project's or an external tree's)\n")


def test_an_arch_no_file_describes_is_refused_in_the_configuration_and_in_recipes(project):
    from mlbuild.frontend.project import Project

    known = ", ".join(KNOWN.names)
    with pytest.raises(InputError) as raised:
        Project(project.root, {"arches": "x86_64,ppc64le"}, environ={})
    assert str(raised.value) == f"command line: arches: unsupported arch 'ppc64le', expected one of: {known}"
    project.update_recipe("app", arch={"ppc64le": {"vars": {"a": "b"}}})
    with pytest.raises(InputError) as raised:
        Project(project.root, environ={})
    assert str(raised.value) == f"recipes/app.toml: arch: unsupported arch 'ppc64le', expected one of: {known}"
