"""Sandboxed build steps (sandbox = on|off|auto): no network, nothing of the project but the task's own folders.

The synthetic project's app script is replaced by one that does something undeclared: connect to a
TCP server the test runs on 127.0.0.1, read another task's output by a path outside its sysroot, or
write next to its source. Under the sandbox each fails with one line naming the task; without it,
each succeeds (so the test would notice a sandbox that does nothing).
"""

import os
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import APP_SH, x86

from mlbuild import sandbox

pytestmark = pytest.mark.skipif(bool(sandbox.why_not_available()), reason=f"no sandbox here: {sandbox.why_not_available()}")


class Listener:
    """A TCP server on 127.0.0.1 (a free port) that counts the connections it accepts."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self):
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not on Linux
        except OSError:
            pass
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def _app_script(project, undeclared: str) -> None:
    project.write("templates/build/app.sh.j2", undeclared + "\n" + APP_SH)


def _failure_line(result) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "build:app-x86_64" in line and "failed" in line]
    assert lines, result.stdout + result.stderr
    return lines[0]


def test_a_script_that_opens_a_socket_fails_in_the_sandbox_and_reaches_the_server_without_it(project, listener):
    _app_script(project, f"exec 3<>/dev/tcp/127.0.0.1/{listener.port}")
    sandboxed = project.doit("sandbox=on")
    assert sandboxed.returncode != 0
    assert "in the sandbox" in _failure_line(sandboxed)
    assert "Traceback" not in sandboxed.stdout + sandboxed.stderr
    assert listener.connections == 0
    assert x86("hello", "extra") <= sandboxed.executed  # the steps that do nothing undeclared build in the sandbox

    unsandboxed = project.doit("sandbox=off")
    assert unsandboxed.returncode == 0, unsandboxed.stdout + unsandboxed.stderr
    assert listener.connections == 1


def test_a_script_that_reads_another_tasks_output_outside_its_sysroot_fails_in_the_sandbox(project):
    # Its own sysroot holds hello (a declared dependency); build/out/ is another task's folder.
    _app_script(project, 'cat "$WORK/../../out/extra-x86_64/bin/extra" > /dev/null')
    sandboxed = project.doit("sandbox=on")
    assert sandboxed.returncode != 0
    assert "in the sandbox" in _failure_line(sandboxed)
    assert "No such file or directory" in project.log("build:app-x86_64")
    assert project.doit("sandbox=off").returncode == 0


def test_a_script_that_writes_next_to_its_source_fails_in_the_sandbox(project):
    _app_script(project, 'touch "$SRC/written-by-the-build"')
    sandboxed = project.doit("sandbox=on")
    assert sandboxed.returncode != 0
    assert "Read-only file system" in project.log("build:app-x86_64")
    assert not list(project.path("build").rglob("written-by-the-build"))
    assert project.doit("sandbox=off").returncode == 0
    assert list(project.path("build").rglob("written-by-the-build"))


@pytest.mark.slow
def test_sandboxed_builds_give_the_same_outputs_as_unsandboxed_ones(project, tmp_path):
    other = project.copy_to(tmp_path / "copy")
    assert project.doit("sandbox=on").returncode == 0
    assert other.doit("sandbox=off").returncode == 0
    for name in ("hello", "app", "extra"):
        assert project.path(f"target/x86_64/bin/{name}").read_bytes() == other.path(f"target/x86_64/bin/{name}").read_bytes()
    # The task log says which way each script ran.
    assert "build.sh in the sandbox (bubblewrap: no network" in project.log("build:hello-x86_64")
    assert "in the sandbox" not in other.log("build:hello-x86_64")


def test_sandbox_on_where_bubblewrap_cannot_run_is_one_line_and_auto_falls_back_with_one_warning(project, tmp_path):
    # A bwrap that fails as it does on hosts without unprivileged user namespaces.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    (fake / "bwrap").chmod(0o755)
    environment = {"PATH": f"{fake}:{os.environ['PATH']}"}
    on = project.doit("sandbox=on", env=environment)
    assert on.returncode != 0
    assert "Traceback" not in on.stdout + on.stderr
    errors = [line for line in (on.stdout + on.stderr).splitlines() if "sandbox = on" in line]
    assert errors and "No permissions to create new namespace" in errors[0], on.stdout + on.stderr
    assert not project.path("target/x86_64/bin/hello").exists()

    auto = project.doit("sandbox=auto", env=environment)
    assert auto.returncode == 0, auto.stdout + auto.stderr
    warnings = [line for line in auto.stderr.splitlines() if "sandbox = auto" in line]
    assert len(warnings) == 1, auto.stdout + auto.stderr
    assert "build scripts and hooks run without a sandbox" in warnings[0]


def test_a_folder_reached_through_a_symlink_is_bound_where_it_really_is():
    """A venv linked from another checkout (sys.prefix is then the link): bwrap cannot mount onto a link."""
    with tempfile.TemporaryDirectory(dir="/var/tmp") as folder:  # not in /tmp: the sandbox has a /tmp of its own
        _check_symlinked_binds(Path(folder))


def _check_symlinked_binds(tmp_path):
    real = tmp_path / "real-venv"
    real.mkdir()
    (real / "python").write_text("the interpreter\n")
    (tmp_path / "linked-venv").symlink_to(real)
    hidden = tmp_path / "project"
    hidden.mkdir()
    (hidden / "secret").write_text("not for the script\n")
    prefix = sandbox.command_prefix(hidden=[hidden], readable=[tmp_path / "linked-venv"], writable=[], network=False)
    at = prefix.index(str(real))
    assert prefix[at - 1:at + 2] == ["--ro-bind", str(real), str(real)] and str(tmp_path / "linked-venv") not in prefix
    shown = subprocess.run([*prefix, "cat", str(tmp_path / "linked-venv" / "python")], capture_output=True, text=True)
    assert (shown.returncode, shown.stdout) == (0, "the interpreter\n"), shown.stderr
    assert subprocess.run([*prefix, "cat", str(hidden / "secret")], capture_output=True).returncode != 0


# --- hooks (system/hooks.py) run in the same sandbox -------------------------------------------------

WELL_BEHAVED_HOOKS = {
    "post-build": '#!/bin/sh\nset -eu\ntest -d "$BUILD_DIR/state"\necho built > "$TARGET_DIR/etc/built-by-the-hook"\n',
    "post-image": '#!/bin/sh\nset -eu\ntest -f "$TARGET_DIR/etc/built-by-the-hook"\nls "$IMAGES_DIR" > "$IMAGES_DIR/contents.txt"\n',
}


def _add_hooks(project, hooks: dict[str, str]) -> None:
    for kind, text in hooks.items():
        project.write(f"hooks/{kind}.sh", text)
        os.chmod(project.path(f"hooks/{kind}.sh"), 0o755)
    keys = "".join(f'{kind.replace("-", "_")} = ["hooks/{kind}.sh"]\n' for kind in hooks)
    project.write("pyproject.toml", project.read("pyproject.toml") + keys)


def test_hooks_run_in_the_sandbox_writing_their_own_folder_and_reading_the_project(built):
    _add_hooks(built, WELL_BEHAVED_HOOKS)
    result = built.doit("sandbox=on")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("target", "images")
    assert built.read("target/x86_64/etc/built-by-the-hook") == "built\n"
    assert "initramfs.cpio" in built.read("build/images/x86_64/contents.txt")
    log = built.log("build:target-x86_64")
    assert "post-build hook hooks/post-build.sh in the sandbox (no network; writable only target/.x86_64.staging)" in log


@pytest.mark.parametrize("kind, victim", [
    ("post-build", "{tmp}/outside/victim"),  # outside the project (the sandbox's /tmp is its own)
    ("post-build", "{var_tmp}/victim"),  # outside the project, on a read-only /
    ("post-build", "$PROJECT_DIR/hooks/victim"),  # the project
    ("post-build", "$BUILD_DIR/out/hello-x86_64/victim"),  # another task's output
    ("post-image", "$TARGET_DIR/etc/victim"),  # the target, which the post-image hook only reads
])
def test_a_hook_that_writes_outside_its_folder_fails_in_the_sandbox_and_writes_without_it(built, tmp_path, kind, victim):
    (tmp_path / "outside").mkdir()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as var_tmp:
        path = victim.format(tmp=tmp_path, var_tmp=var_tmp)
        _add_hooks(built, {kind: f'#!/bin/sh\nset -eu\necho planted > "{path}"\n'})
        on_host = Path(path.replace("$PROJECT_DIR", str(built.root)).replace("$BUILD_DIR", str(built.root / "build"))
                       .replace("$TARGET_DIR", str(built.root / "target/x86_64")))
        sandboxed = built.doit("sandbox=on")
        assert sandboxed.returncode != 0
        task = "build:target-x86_64" if kind == "post-build" else "build:images-x86_64"
        lines = [line for line in (sandboxed.stdout + sandboxed.stderr).splitlines() if f"{kind} hook" in line and "failed" in line]
        assert lines and lines[0].startswith(f"{task}: {kind} hook hooks/{kind}.sh failed (exit status "), sandboxed.stdout + sandboxed.stderr
        assert "in the sandbox (no network; writable only" in lines[0]
        assert "Traceback" not in sandboxed.stdout + sandboxed.stderr
        assert not on_host.exists()

        unsandboxed = built.doit("sandbox=off")
        assert unsandboxed.returncode == 0, unsandboxed.stdout + unsandboxed.stderr
        assert on_host.read_text() == "planted\n"
