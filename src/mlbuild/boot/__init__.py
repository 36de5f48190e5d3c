"""Booting a built system: QEMU's command line, the boot test's checks, and the choice of KVM or TCG.
"""
