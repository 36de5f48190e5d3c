"""Build scripts and hooks in a sandbox (bubblewrap): no network, and of the project only what the task declares.

A sandboxed script sees the host's / read-only (its programs and libraries are the host tools
it needs), with the project's folders and mlbuild's cache folder hidden behind empty ones, then
given back: its source read-only, mlbuild's Python read-only (kconfig_check), the target
toolchain read-only, and writable only its work folder (which holds its sysroot, the copy of
its dependencies' outputs), its output (staging) folder and the ccache folder. It has a network
namespace of its own: no route anywhere, not even to the host's 127.0.0.1 — unless distcc or a
ccache remote storage is configured, which need the network.

The user's post-build and post-image hooks (system/hooks.py) run in the same sandbox: / and
the project read-only, writable only the folder the hook works on.

`sandbox` in the configuration: "on" (bubblewrap must run), "off", or "auto" (on where
bubblewrap runs; elsewhere one warning line and no sandbox). On the ground floor because
both steps/ (build scripts) and system/ (hooks) build its command line.
"""

import shutil
import subprocess
import sys
import threading
from pathlib import Path

from mlbuild.errors import MlbuildError

_probe_lock = threading.Lock()
_probed: dict[str, str] = {}  # "reason" -> why bubblewrap cannot run here ("" if it can)


def why_not_available() -> str:
    """Why bubblewrap cannot run a sandbox on this machine; "" if it can. Probed once per process."""
    with _probe_lock:
        if "reason" not in _probed:
            _probed["reason"] = _probe()
        return _probed["reason"]


def _probe() -> str:
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (Debian package bubblewrap)"
    try:
        result = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net", "true"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap does not run: {error}"
    if result.returncode != 0:
        return f"bwrap does not run: {(result.stderr.strip().splitlines() or ['exit status %d' % result.returncode])[-1]}"
    return ""


_warned = threading.Event()


def enabled(config) -> bool:
    """Whether build scripts run sandboxed; an error for "on" where bubblewrap cannot run."""
    if config.sandbox == "off":
        return False
    reason = why_not_available()
    if not reason:
        return True
    if config.sandbox == "on":
        raise MlbuildError(f"configuration: sandbox = on, but {reason}; set sandbox = auto or off")
    if not _warned.is_set():
        _warned.set()
        print(f"mlbuild: warning: sandbox = auto: {reason}; build scripts and hooks run without a sandbox", file=sys.stderr, flush=True)
    return False


def command_prefix(hidden: list[Path], readable: list[Path], writable: list[Path], network: bool) -> list[str]:
    """The bwrap command line that runs a command with / read-only, hidden folders empty, and the given folders bound."""
    prefix = ["bwrap", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    if not network:
        prefix.append("--unshare-net")
    # bwrap mounts onto a path inside the new root and cannot mount onto a symlink there (a venv
    # linked from another checkout: "Can't bind mount ... No such file or directory"). Their targets
    # are what the script reaches through the links, so those are what is hidden or bound.
    hidden, readable, writable = ([folder.resolve() for folder in folders] for folders in (hidden, readable, writable))
    for folder in _outermost(hidden):
        prefix += ["--tmpfs", str(folder)]
    # Parents before children: a writable folder inside a readable one stays writable.
    for folder, option in sorted([(p, "--ro-bind") for p in readable] + [(p, "--bind") for p in writable],
                                 key=lambda item: len(item[0].parts)):
        prefix += [option, str(folder), str(folder)]
    return prefix + ["--"]


def _outermost(folders: list[Path]) -> list[Path]:
    """The folders not inside another one of the list (hiding a parent hides its children)."""
    unique = sorted({Path(folder) for folder in folders}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for folder in unique:
        if not any(folder.is_relative_to(outer) for outer in kept):
            kept.append(folder)
    return kept
