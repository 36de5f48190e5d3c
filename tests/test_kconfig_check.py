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
    assert err[1:] == ["  bad.config:1: CONFIG_VIRTIO_NET: requested y, got not set"]
    assert main([str(final)]) == 2


def test_kconfig_check_runs_as_a_module_the_way_build_scripts_call_it(tmp_path):
    final = write(tmp_path, ".config", FINAL)
    bad = write(tmp_path, "bad.config", "CONFIG_VIRTIO_NET=y\n")
    result = subprocess.run([sys.executable, "-m", "mlbuild.kconfig_check", str(final), str(bad)],
                            capture_output=True, text=True, env=base_environment({"PYTHONPATH": str(SRC)}))
    assert result.returncode == 1
    assert "bad.config:1: CONFIG_VIRTIO_NET: requested y, got not set" in result.stderr
