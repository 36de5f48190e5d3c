"""ccache for every build script: its environment (one cache shared by all checkouts) and what a run hit."""

import subprocess
from pathlib import Path

from mlbuild.steps import distcc


def ccache_environment(project) -> dict:
    """One cache, paths relative to the project (hits in another checkout too); remote storage and distcc when configured."""
    return {
        "CCACHE_DIR": str(project.config.ccache_dir),
        "CCACHE_BASEDIR": str(project.root),
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_COMPILERCHECK": "content",
        # ccache rewrites --sysroot=<path below the project> to a relative path but hashes
        # -resource-dir=<path> as it is, so no compile with it hit in another checkout (busybox:
        # 1 % hits). The resource dir is always $SYSROOT/usr/lib/clang/<major> (_toolchain.sh.j2,
        # the LLVM templates): --sysroot, which is hashed, already decides it.
        "CCACHE_IGNOREOPTIONS": "-resource-dir=*",
        **distcc.environment(project.config),
    }


def ccache_summary(stats_log: Path, environment: dict) -> str:
    """The log's last line about ccache: hits and misses of this run alone (from CCACHE_STATSLOG)."""
    if not stats_log.exists():
        return "# ccache: no compilations"
    result = subprocess.run(["ccache", "--show-log-stats", "-v"], env=environment, capture_output=True, text=True)
    counts = {}
    for line in result.stdout.splitlines():
        words = line.split()
        for key in ("Hits:", "Misses:"):
            if line.strip().startswith(key) and len(words) >= 2 and words[1].isdigit():
                counts.setdefault(key[:-1].lower(), words[1])
    return f"# ccache: {counts.get('hits', '?')} hits, {counts.get('misses', '?')} misses"
