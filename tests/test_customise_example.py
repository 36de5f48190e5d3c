"""docs/usage.md's "Customise your system" example, read from the document and run on the synthetic project."""

import hashlib
import re
import subprocess

from conftest import ARCH, REPO, x86
from test_customise import cpio_entries, ext4, ext4_mode


def example_block(kind: str) -> str:
    """The fenced block right after `<!-- customise-example: kind -->` in docs/usage.md."""
    text = (REPO / "docs/usage.md").read_text()
    match = re.search(rf"<!-- customise-example: {kind} -->\n```\w+\n(.*?)```\n", text, re.S)
    assert match, f"docs/usage.md has no customise-example: {kind} block"
    return match.group(1)


def test_the_documented_example_builds_into_the_tree_and_both_images(built):
    subprocess.run(["sh", "-eu", "-c", example_block("shell")], cwd=built.root, check=True, timeout=30)
    # The synthetic system has no busybox: alice's default shell /bin/sh gets a stand-in.
    built.path("overlay/bin").mkdir()
    built.path("overlay/bin/sh").symlink_to("hello")
    built.write("pyproject.toml", built.read("pyproject.toml") + example_block("toml"))

    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("target", "images")
    target = built.path(f"target/{ARCH}")
    logo = b"\x89PNG\r\n\x1a\n\x00\x01\x02\xff"
    assert (target / "usr/share/logo.png").read_bytes() == logo
    assert (target / "etc/issue").read_text() == "Welcome to mlbuild on x86_64\n"
    assert "${#name}" in (target / "usr/bin/greet").read_text()
    assert (target / "etc/passwd").read_text().splitlines()[-1] == "alice:x:1000:1000::/home/alice:/bin/sh"
    assert (target / "etc/shadow").read_text().splitlines()[-1].startswith("alice:$6$mlbuildsalt$")
    assert (target / "home/alice").is_dir()

    # The boot check, as the guest would run it, against the built tree (this system cannot boot: no kernel).
    from mlbuild.frontend.project import Project

    loaded = Project(built.root, environ={})
    check = next(check for check in loaded.config.checks if check.name == "greet")
    assert check.command == "greet mlbuild"
    output = subprocess.run([target / "usr/bin/greet", "mlbuild"], capture_output=True, text=True, timeout=10).stdout
    assert re.search(check.expect, output, re.M), output
    from mlbuild.boot.qemu import checks_for
    from mlbuild.frontend.tasks import _target_recipes

    assert "greet" in [c.name for c in checks_for(_target_recipes(loaded, ARCH), loaded.config.checks, ARCH)]

    images = built.path(f"build/images/{ARCH}")
    cpio = cpio_entries(images / "initramfs.cpio")
    assert cpio["usr/share/logo.png"][1] == logo
    assert cpio["usr/bin/greet"][0] & 0o777 == 0o755
    assert cpio["etc/shadow"][0] & 0o777 == 0o600
    assert ext4_mode(images / "rootfs.ext4", "/etc/shadow") & 0o777 == 0o600
    assert ext4(images / "rootfs.ext4", "cat /etc/issue") == "Welcome to mlbuild on x86_64\n"
    # The post-image hook's checksums match the images it ran on.
    sums = dict(reversed(line.split()) for line in (images / "SHA256SUMS").read_text().splitlines())
    for name in ("initramfs.cpio", "rootfs.ext4"):
        assert sums[name] == hashlib.sha256((images / name).read_bytes()).hexdigest()
    assert built.doit().executed == set()
