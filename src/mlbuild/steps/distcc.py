"""Compiles shared beyond this machine: ccache's remote storage and distcc behind ccache.

Both are configuration only (ccache_remote_storage, distcc_hosts): a build script
that compiles through ccache gets them without knowing. With distcc, ccache still
preprocesses and looks up locally and only a miss is sent (CCACHE_PREFIX=distcc);
the object comes back and is stored in ccache (and the remote storage) as usual.
"""

import re

# distcc's own default slots per host when a spec names no /LIMIT.
LOCAL_SLOTS, REMOTE_SLOTS = 2, 4
_OPTIONS = {"--randomize", "--localslots", "--localslots_cpp"}


def environment(config) -> dict:
    """Variables for every build script's ccache: remote storage and the distcc prefix, when configured."""
    found = {}
    if config.ccache_remote_storage:
        found["CCACHE_REMOTE_STORAGE"] = config.ccache_remote_storage
    if config.distcc_hosts:
        found["CCACHE_PREFIX"] = "distcc"
        found["DISTCC_HOSTS"] = config.distcc_hosts
        state = config.ccache_dir.with_name("distcc")  # distcc's lock files, beside ccache's; distcc does not make it
        state.mkdir(parents=True, exist_ok=True)
        found["DISTCC_DIR"] = str(state)
    return found


def distcc_slots(hosts: str) -> int:
    """How many compiles the hosts take at once: each host's /LIMIT, or distcc's default."""
    total = 0
    for spec in hosts.split():
        if spec in _OPTIONS or spec.startswith("--"):
            continue
        match = re.search(r"/(\d+)", spec)
        if match:
            total += int(match.group(1))
        else:
            total += LOCAL_SLOTS if spec.split(",")[0].split(":")[0] == "localhost" else REMOTE_SLOTS
    return total


def jobs(config) -> int:
    """make's -j: the configured jobs, or more when distcc hosts can take more compiles at once."""
    return max(config.jobs, distcc_slots(config.distcc_hosts)) if config.distcc_hosts else config.jobs
