"""The real small x86_64 system's exported script, run offline in a fresh folder, gives mlbuild's images bit for bit.

`mlbuild script build:images-x86_64 target_llvm=0` is run with no network at all (its own network
namespace) and no mlbuild or Python, from the populated download cache (where mlbuild keeps the
Debian tarballs under Debian's names) and the shared ccache (so the kernel, musl, compiler-rt,
libc++ and busybox it rebuilds are mostly cache hits). Slow: marked distribution. It uses the
repository's own build/, as tests/test_distribution.py does.
"""

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from test_distribution import REPO, doit
from mlbuild.trees import hash_tree

pytestmark = pytest.mark.distribution


def offline_prefix() -> list[str]:
    """A command prefix that runs a program in a network namespace of its own: no network whatever it tries."""
    for prefix in (["unshare", "--net"], ["unshare", "--net", "--map-root-user"],
                   ["bwrap", "--unshare-net", "--dev-bind", "/", "/"]):
        if shutil.which(prefix[0]) and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    pytest.skip("no way to run a program without a network here (unshare --net, bwrap --unshare-net)")


def _no_python(folder):
    """python, mlbuild and doit that fail loudly, first on PATH: any use of them shows."""
    folder.mkdir()
    for name in ("python", "python3", "mlbuild", "doit"):
        (folder / name).write_text(f"#!/bin/sh\necho 'the exported script ran {name}' >&2\nexit 99\n")
        (folder / name).chmod(0o755)
    return folder


def test_the_exported_script_of_the_small_system_runs_offline_elsewhere_and_gives_mlbuilds_images(tmp_path):
    code, _, output = doit("build:images-x86_64")
    assert code == 0, output[-5000:]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    exported = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "script", "build:images-x86_64", "target_llvm=0"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr
    assert str(REPO / "build") not in exported.stdout  # every path of the tree is $ROOT (PREFIX_MAP_FLAGS too)
    (tmp_path / "build.sh").write_text(exported.stdout)

    offline = offline_prefix()
    assert subprocess.run([*offline, "curl", "-sS", "-m", "5", "-o", "/dev/null", "http://deb.debian.org/"],
                          capture_output=True).returncode != 0, "the network is reachable in the offline namespace"
    out = tmp_path / "fresh"
    path = f"{_no_python(tmp_path / 'shims')}:{os.environ['PATH']}"
    run = subprocess.run([*offline, "bash", str(tmp_path / "build.sh"), str(out)], capture_output=True, text=True,
                         env={"PATH": path, "HOME": os.environ["HOME"], "TMPDIR": str(tmp_path)}, timeout=7200)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    assert "the exported script ran" not in run.stderr
    assert "trying" not in run.stderr  # every tarball came from the download cache, found by its checksum

    mlbuild_images = REPO / "build" / "images" / "x86_64"
    for image in ("initramfs.cpio", "rootfs.ext4", "initramfs.cpio.zst"):
        ours = hashlib.sha256((out / "images" / "x86_64" / image).read_bytes()).hexdigest()
        assert ours == hashlib.sha256((mlbuild_images / image).read_bytes()).hexdigest(), image
    # The whole tree too: the kernel (not in the runtime images) and the headers and static libraries.
    assert hash_tree(out / "target" / "x86_64") == hash_tree(REPO / "target" / "x86_64")
    shutil.rmtree(out)  # gigabytes of unpacked kernel and llvm-project
