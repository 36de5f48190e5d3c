"""mlbuild.kconfig_check: every symbol a fragment requests must be in the final .config."""

import subprocess
import sys

from conftest import SRC, base_environment
from mlbuild.kconfig_check import dropped_symbols, main, read_symbols

FINAL = """\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_64BIT=y
CONFIG_PRINTK=y
CONFIG_CMDLINE="console=ttyS0"
# CONFIG_MODULES is not set
CONFIG_LOG_BUF_SHIFT=17
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_symbols_reads_values_line_numbers_and_is_not_set(tmp_path):
    symbols = read_symbols(write(tmp_path, ".config", FINAL))
    assert symbols == {
        "CONFIG_64BIT": ("y", 4),
        "CONFIG_PRINTK": ("y", 5),
        "CONFIG_CMDLINE": ('"console=ttyS0"', 6),
        "CONFIG_MODULES": ("n", 7),
        "CONFIG_LOG_BUF_SHIFT": ("17", 8),
    }
    assert read_symbols(write(tmp_path, "f", "CONFIG_X=n\n"))["CONFIG_X"] == ("n", 1)


def test_a_dropped_symbol_is_reported_with_fragment_line_requested_and_actual_value(tmp_path):
    final = write(tmp_path, ".config", FINAL)
    fragment = write(tmp_path, "qemu.config", "CONFIG_PRINTK=y\n\nCONFIG_VIRTIO_BLK=y\nCONFIG_LOG_BUF_SHIFT=14\n")
    assert dropped_symbols(final, [fragment]) == [
        "qemu.config:3: CONFIG_VIRTIO_BLK: requested y, got not set",
        "qemu.config:4: CONFIG_LOG_BUF_SHIFT: requested 14, got 17",
    ]


def test_is_not_set_in_a_fragment_is_satisfied_by_an_absent_or_unset_symbol(tmp_path):
    final = write(tmp_path, ".config", FINAL)
    fragment = write(tmp_path, "small.config", "# CONFIG_MODULES is not set\n# CONFIG_NEVER_HEARD_OF is not set\n")
    assert dropped_symbols(final, [fragment]) == []
    wants_off = write(tmp_path, "off.config", "# CONFIG_PRINTK is not set\n")
    assert dropped_symbols(final, [wants_off]) == ["off.config:1: CONFIG_PRINTK: requested n, got y"]


def test_a_later_fragment_overriding_an_earlier_one_is_fine(tmp_path):
    final = write(tmp_path, ".config", FINAL)
    base = write(tmp_path, "base.config", "CONFIG_MODULES=y\nCONFIG_LOG_BUF_SHIFT=14\n")
    override = write(tmp_path, "override.config", "# CONFIG_MODULES is not set\nCONFIG_LOG_BUF_SHIFT=17\n")
    assert dropped_symbols(final, [base, override]) == []
    # ...but the order matters: the last word is the one checked.
    assert dropped_symbols(final, [override, base]) == [
        "base.config:1: CONFIG_MODULES: requested y, got not set",
        "base.config:2: CONFIG_LOG_BUF_SHIFT: requested 14, got 17",
    ]


def test_main_exits_1_listing_the_problems_and_0_when_all_took_effect(tmp_path, capsys):
    final = write(tmp_path, ".config", FINAL)
    good = write(tmp_path, "good.config", "CONFIG_PRINTK=y\n# CONFIG_MODULES is not set\n")
    bad = write(tmp_path, "bad.config", "CONFIG_VIRTIO_NET=y\n")
    assert main([str(final), str(good)]) == 0
    assert capsys.readouterr().out == "mlbuild: all 2 fragment symbols took effect\n"
    assert main([str(final), str(good), str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("mlbuild: 1 symbol(s) requested by a fragment did not take effect in .config")
    assert err[1:] == ["  bad.config:1: CONFIG_VIRTIO_NET=y was dropped (got not set)"]
    assert main([str(final)]) == 2


def test_kconfig_check_runs_as_a_module_the_way_build_scripts_call_it(tmp_path):
    final = write(tmp_path, ".config", FINAL)
    bad = write(tmp_path, "bad.config", "CONFIG_VIRTIO_NET=y\n")
    result = subprocess.run([sys.executable, "-m", "mlbuild.kconfig_check", str(final), str(bad)],
                            capture_output=True, text=True, env=base_environment({"PYTHONPATH": str(SRC)}))
    assert result.returncode == 1
    assert "bad.config:1: CONFIG_VIRTIO_NET=y was dropped (got not set)" in result.stderr


# A Kconfig tree shaped like the kernel's block layer: VIRTIO_BLK sits inside `if BLK_DEV`.
KCONFIG = """\
config BLOCK
\tbool "Block layer"
\tdefault y

menuconfig BLK_DEV
\tbool "Block devices"
\tdepends on BLOCK

if BLK_DEV
source "drivers/Kconfig"
endif

config CRC32
\tbool

config EXT4_FS
\tbool "ext4"
\tselect CRC32

config LOG_BUF_SHIFT
\tint "Log buffer size"
\trange 12 25
\tdefault 17
"""
DRIVERS = """\
config VIRTIO
\tbool "virtio"
\tmodules

config VIRTIO_BLK
\tbool "virtio block"
\tdepends on VIRTIO
"""
EXPLAINED_FINAL = "CONFIG_BLOCK=y\n# CONFIG_BLK_DEV is not set\nCONFIG_EXT4_FS=y\nCONFIG_CRC32=y\nCONFIG_LOG_BUF_SHIFT=17\n"


def kconfig_tree(tmp_path):
    (tmp_path / "drivers").mkdir()
    write(tmp_path, "Kconfig", KCONFIG)
    write(tmp_path / "drivers", "Kconfig", DRIVERS)  # `modules`, as Linux >= 5.13 writes it
    return tmp_path / "Kconfig"


def run_check(tmp_path, fragment_text, kconfig):
    final = write(tmp_path, ".config", EXPLAINED_FINAL)
    fragment = write(tmp_path, "qemu.config", fragment_text)
    args = ["--kconfig", str(kconfig)] if kconfig else []
    env = {k: v for k, v in base_environment({"PYTHONPATH": str(SRC)}).items() if k != "srctree"}
    return subprocess.run([sys.executable, "-m", "mlbuild.kconfig_check", *args, str(final), str(fragment)],
                          capture_output=True, text=True, env=env, cwd=tmp_path.parent)  # not the tree: srctree comes from the Kconfig path


def test_a_dropped_symbol_is_explained_by_its_unmet_dependencies_and_what_to_add(tmp_path):
    result = run_check(tmp_path, "CONFIG_VIRTIO=y\nCONFIG_VIRTIO_BLK=y\n", kconfig_tree(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()[1:]
    assert lines == [
        "  qemu.config:1: CONFIG_VIRTIO=y was dropped (got not set): it depends on BLK_DEV, which is n; add CONFIG_BLK_DEV=y",
        "  qemu.config:2: CONFIG_VIRTIO_BLK=y was dropped (got not set): it depends on VIRTIO, which is n, "
        "and on BLK_DEV, which is n; add CONFIG_VIRTIO=y and CONFIG_BLK_DEV=y",
    ]


def test_selected_out_of_range_promptless_and_unknown_symbols_are_explained(tmp_path):
    result = run_check(tmp_path, "# CONFIG_CRC32 is not set\nCONFIG_LOG_BUF_SHIFT=40\nCONFIG_NO_SUCH=y\n", kconfig_tree(tmp_path))
    lines = result.stderr.splitlines()[1:]
    assert lines[0] == "  qemu.config:1: CONFIG_CRC32=n was dropped (got y): it is selected by EXT4_FS"
    assert lines[1] == "  qemu.config:2: CONFIG_LOG_BUF_SHIFT=40 was dropped (got 17): its value must be in its range (12..25)"
    assert lines[2] == "  qemu.config:3: CONFIG_NO_SUCH=y was dropped (got not set): NO_SUCH does not exist in this Kconfig (misspelt, or from another version)"


def test_an_unreadable_kconfig_leaves_the_check_standing_and_says_why_in_one_line(tmp_path):
    broken = write(tmp_path, "Kconfig", "config BROKEN\n\tbool \"x\"\n\tdepends on (((\n")
    result = run_check(tmp_path, "CONFIG_VIRTIO_BLK=y\n", broken)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[1] == "  qemu.config:1: CONFIG_VIRTIO_BLK=y was dropped (got not set)"
    assert lines[2].startswith(f"  (not explained: kconfiglib could not read {broken}: ")
    assert "Traceback" not in result.stderr
