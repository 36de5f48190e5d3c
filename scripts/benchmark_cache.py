#!/usr/bin/env python3
"""Measure the artifact cache on the real system and record it in docs/performance.md (section artifact-cache).

    scripts/benchmark_cache.py warm --cache-dir DIR [--from-tree TREE] [--backends file,http,s3]
        For each backend: a fresh clone of this repository in a temporary folder, empty build
        folders and an empty local ccache, the artifact cache warm (DIR, filled by a build
        with cache=file://DIR; served by nginx for http, copied into SeaweedFS for s3 with
        `mlbuild cache push` from TREE), then `doit build target_llvm=0` for both arches:
        wall time, tasks restored and built, compiles (calls ccache saw), time in fetch tasks.
        --targets and --target-llvm 1 measure other builds the same way, e.g. the system with
        clang inside: --targets build:images-arm64 --target-llvm 1.
        --trust KEYFILE: the entries are signed with that secret key (`mlbuild cache sign` it into DIR
        first) and every restore checks them, as every cache but the per-user folder does; without it
        the builds run with cache_require_signatures=0 (not checked).
    scripts/benchmark_cache.py pack --tree DIR [--repeat 3]
        mlbuild's pack and checked restore of DIR against `tar -c | zstd -3` and `zstd -d | tar -x`,
        in turn, wall and CPU time.

Servers run on 127.0.0.1 (tests/servers.py) and are stopped afterwards.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "tests"), str(REPO / "src")]

from benchmark import machine, record  # noqa: E402  (one writer of docs/performance.md)

PYTHON = sys.executable


def fresh_clone(base: Path, origin: Path) -> Path:
    """A new clone of origin (the tree that warmed the cache: same commit, same signatures)."""
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    return clone


def run_build(clone: Path, cache: str, ccache_dir: Path, extra_env: dict, targets: list[str], target_llvm: int,
              settings: list[str] = ()) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLBUILD_", "CCACHE_"))}
    # verbose: restores and runs are read from the `X: restored from` and `.  task` lines
    env.update(PYTHONPATH=str(clone / "src"), MLBUILD_VERBOSE="1", **extra_env)
    started = time.monotonic()
    result = subprocess.run([PYTHON, "-m", "doit", *targets, f"target_llvm={target_llvm}", f"cache={cache}", f"ccache_dir={ccache_dir}", *settings],
                            cwd=clone, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"build failed in {clone}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    restored = [line for line in result.stdout.splitlines() if ": restored from " in line]
    ran = [line[3:] for line in result.stdout.splitlines() if line.startswith(".  ")]
    logs = clone / "build" / "logs"
    scripts_run = sum(1 for log in logs.glob("build_*.log") if "# running" in log.read_text(errors="replace"))
    fetch_seconds = 0.0
    for log in logs.glob("fetch_*.log"):
        fetch_seconds += _seconds(log)
    stats = subprocess.run(["ccache", "--print-stats"], env={**env, "CCACHE_DIR": str(ccache_dir)}, capture_output=True, text=True).stdout
    counts = dict(line.split("\t") for line in stats.splitlines() if "\t" in line)
    compiles = sum(int(counts.get(key, 0)) for key in ("direct_cache_hit", "preprocessed_cache_hit", "cache_miss"))
    # Executed and not restored: built here (fetch tasks are never cached: left out).
    built = sorted({task for task in ran if task.startswith("build:")} - {line.split(": restored from ")[0] for line in restored})
    return {"wall": wall, "restored": len(restored), "executed": len(ran), "scripts_run": scripts_run, "built": built,
            "compiles": compiles, "fetch_seconds": fetch_seconds, "faults": [l for l in result.stderr.splitlines() if "artifact cache" in l]}


def _seconds(log: Path) -> float:
    match = re.search(r"# output hash \w+; ([0-9.]+) s", log.read_text(errors="replace"))
    return float(match.group(1)) if match else 0.0


def trust_settings(key: Path | None) -> tuple[list[str], str]:
    """The key=value settings that make the builds verify (or not check) signatures, and a sentence saying which."""
    if key is None:
        return ["cache_require_signatures=0"], "Signatures not checked (cache_require_signatures = false)."
    from mlbuild.engine.cache.signing import load_signer

    signer = load_signer(str(key), REPO)
    return ([f"cache_trusted_keys={signer.public}", f"cache_signing_key={key}"],
            f"Every entry signed ({signer.name}) and its signature checked before the restore, as for every cache but the per-user folder.")


def bench_warm(cache_dir: Path, from_tree: Path | None, backends: list[str], cold_seconds: float | None, targets: list[str],
               target_llvm: int, key: Path | None = None) -> None:
    import servers

    command = f"doit {' '.join(targets)} target_llvm={target_llvm}"
    title = "Artifact cache" if target_llvm == 0 else f"Artifact cache, with clang inside: `{command}`"
    settings, trust = trust_settings(key)
    lines = [f"## {title}", "", f"Fresh clone, empty build folders and local ccache, artifact cache warm on a loopback server; "
             f"`{command}`. {trust} {machine()}", "",
             "| cache | wall | tasks restored | build scripts run | compiles | of which fetch tasks |",
             "| --- | --- | --- | --- | --- | --- |"]
    fragment_rows = []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"mlbuild-bench-{backend}-") as folder:
            base = Path(folder)
            clone = fresh_clone(base, from_tree or REPO)
            env, stop = {}, None
            if backend in ("file", "fragment"):
                url = cache_dir.as_uri()
                if backend == "fragment":  # one change: busybox and what contains it rebuild, the rest restores
                    (clone / "fragments").mkdir(exist_ok=True)
                    (clone / "fragments" / "busybox.config").write_text("# CONFIG_CAL is not set\n")
            elif backend == "http":
                server = servers.start_nginx(base / "nginx")
                shutil.rmtree(server.root / "cache")
                (server.root / "cache").symlink_to(cache_dir)
                url, stop = f"{server.url}/cache", server.process
            else:
                server = servers.start_seaweedfs(base / "s3")
                server.client().create_bucket(Bucket="bench")
                url, stop, env = f"s3://bench/mlbuild?endpoint_url={server.endpoint}", server.process, server.env()
                if from_tree is None:
                    sys.exit("--from-tree: a built tree to push from is needed for s3")
                push_env = {**os.environ, **env, "PYTHONPATH": str(from_tree / "src"), "MLBUILD_CACHE": url, "MLBUILD_TARGET_LLVM": str(target_llvm)}
                pushed = subprocess.run([PYTHON, "-m", "mlbuild.frontend.cli", "cache", "push", *settings], cwd=from_tree, env=push_env,
                                        capture_output=True, text=True)
                print(pushed.stdout, pushed.stderr)
            try:
                figures = run_build(clone, url, base / "ccache", env, targets, target_llvm, settings)
            finally:
                if stop is not None:
                    servers.stop(stop)
            print(backend, json.dumps(figures))
            if backend == "fragment":
                fragment_rows.append(f"A busybox fragment (`# CONFIG_CAL is not set` in fragments/busybox.config) in another "
                                     f"fresh clone against the file cache: {figures['wall']:.0f} s; built: "
                                     f"{', '.join(sorted(figures['built'])) or 'nothing'}; {figures['restored']} tasks restored.")
                continue
            lines.append(f"| {backend} | {figures['wall']:.0f} s | {figures['restored']} | {figures['scripts_run']} | "
                         f"{figures['compiles']} | {figures['fetch_seconds']:.0f} s |")
    lines += ["", *fragment_rows] if fragment_rows else []
    if from_tree is not None and cold_seconds:
        with tempfile.TemporaryDirectory(prefix="mlbuild-push-") as folder:
            push_env = {**os.environ, "PYTHONPATH": str(from_tree / "src"), "MLBUILD_CACHE": Path(folder).as_uri(), "MLBUILD_TARGET_LLVM": "0"}
            started = time.monotonic()
            subprocess.run([PYTHON, "-m", "mlbuild.frontend.cli", "cache", "push", *settings], cwd=from_tree, env=push_env, check=True,
                           capture_output=True)
            push = time.monotonic() - started
            size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
        lines += ["", f"Cost of a read-write cache in a cold build: packing and storing every output of the small system "
                      f"({size / 2**20:.0f} MiB of archives) takes {push:.0f} s (`mlbuild cache push` into an empty file:// cache), "
                      f"{push / cold_seconds * 100:.1f} % of the {cold_seconds:.0f} s cold build it came from "
                      f"(that build pushed as it went: {1 + push / cold_seconds:.3f} × a build without a cache)."]
    lines += ["", "Compiles are the calls the empty local ccache saw. Fetch tasks are not cached (their tarballs are, in the "
              "download cache, shared by the clones of a machine); with a cache they only verify the tarball, and a source is "
              "unpacked only by a build that really runs (docs/usage.md)."]
    # Each kind of build has a section of its own, so measuring one leaves the others' figures in place.
    record("artifact-cache" if target_llvm == 0 and targets == ["build"] else f"artifact-cache {command}", lines)


def _clock() -> tuple[float, float]:
    """Wall time, and CPU time (user + system) of this process and its finished children."""
    times = os.times()
    return time.monotonic(), times.user + times.system + times.children_user + times.children_system


def _since(start: tuple[float, float]) -> tuple[float, float]:
    now = _clock()
    return now[0] - start[0], now[1] - start[1]


def bench_pack(tree: Path, repeat: int) -> None:
    """mlbuild's pack and checked restore against tar and zstd on one tree, in turn, repeat times each.

    The machine is shared: the two alternate (which goes first swaps each round), and the
    ratios of each round are what to read, with CPU time beside wall time."""
    import statistics
    from mlbuild.engine.cache.archive import pack, restore, tree_entries
    from mlbuild.trees import hash_tree, remove_tree

    size = sum(p.lstat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    figures = {key: [] for key in ("ours pack", "ours unpack", "plain pack", "plain unpack")}
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="mlbuild-pack-") as folder:
        base = Path(folder)
        output_hash = hash_tree(tree)

        def ours() -> None:
            clock = _clock()
            entries = tree_entries(tree)
            pack(tree, base / "a.tar.zst", entries)
            figures["ours pack"].append(_since(clock))
            clock = _clock()
            restore(base / "a.tar.zst", base / "out", {"entries": entries, "output_hash": output_hash}, hash_tree, "bench")
            figures["ours unpack"].append(_since(clock))
            sizes["ours"] = (base / "a.tar.zst").stat().st_size, len(entries)
            remove_tree(base / "out")
            (base / "a.tar.zst").unlink()

        def plain() -> None:
            clock = _clock()
            subprocess.run(f"tar -C {tree} -cf - . | zstd -q -3 -o {base / 'b.tar.zst'}", shell=True, check=True)
            figures["plain pack"].append(_since(clock))
            (base / "plain").mkdir()
            clock = _clock()
            subprocess.run(f"zstd -q -d -c {base / 'b.tar.zst'} | tar -C {base / 'plain'} -xf -", shell=True, check=True)
            figures["plain unpack"].append(_since(clock))
            sizes["plain"] = (base / "b.tar.zst").stat().st_size, 0
            remove_tree(base / "plain")
            (base / "b.tar.zst").unlink()

        for round_ in range(repeat):
            for run in ((ours, plain) if round_ % 2 == 0 else (plain, ours)):
                run()
    mib = size / 2**20

    def cell(key: str, index: int) -> str:
        values = [figure[index] for figure in figures[key]]
        middle = statistics.median(values)
        return f"{middle:.1f} s ({mib / middle:.0f} MiB/s)" if index == 0 else f"{middle:.1f} s"

    def ratio(what: str, index: int) -> str:
        pairs = [a[index] / b[index] for a, b in zip(figures[f"ours {what}"], figures[f"plain {what}"]) if b[index]]
        return f"{statistics.median(pairs):.2f} (rounds {min(pairs):.2f}–{max(pairs):.2f})"

    record(f"artifact-pack {tree.name}", [
        "## Artifact cache: pack and restore against tar and zstd", "",
        f"Pack and restore of `{tree.name}` ({mib:.0f} MiB in {sizes['ours'][1]} entries), {repeat} rounds, the two in turn,",
        f"medians. {machine()}, load average {os.getloadavg()[0]:.1f} at the end. Command: `scripts/benchmark_cache.py pack --tree … --repeat {repeat}`.", "",
        "| | pack, wall | pack, CPU | unpack, wall | unpack, CPU | archive |", "| --- | --- | --- | --- | --- | --- |",
        f"| mlbuild (hash every file, deterministic tar, zstd -3; restore: checked unpack, verify every file and the tree hash) | "
        f"{cell('ours pack', 0)} | {cell('ours pack', 1)} | {cell('ours unpack', 0)} | {cell('ours unpack', 1)} | {sizes['ours'][0] / 2**20:.1f} MiB |",
        f"| `tar -c \\| zstd -3`, `zstd -d \\| tar -x` | {cell('plain pack', 0)} | {cell('plain pack', 1)} | "
        f"{cell('plain unpack', 0)} | {cell('plain unpack', 1)} | {sizes['plain'][0] / 2**20:.1f} MiB |",
        f"| ratio mlbuild / tar+zstd | {ratio('pack', 0)} | {ratio('pack', 1)} | {ratio('unpack', 0)} | {ratio('unpack', 1)} | |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    warm = verbs.add_parser("warm")
    warm.add_argument("--cache-dir", type=Path, required=True)
    warm.add_argument("--from-tree", type=Path)
    warm.add_argument("--backends", default="file,http,s3,fragment",
                      help="file, http (nginx), s3 (SeaweedFS); fragment: file, in a clone with a busybox fragment added")
    warm.add_argument("--targets", default="build", help="what doit builds, space-separated (default: build, both arches)")
    warm.add_argument("--target-llvm", type=int, choices=(0, 1), default=0, help="target_llvm of the build (default 0)")
    warm.add_argument("--cold-seconds", type=float, help="wall time of the cold build of --from-tree, to state the push cost against")
    warm.add_argument("--trust", type=Path, help="the secret key the entries are signed with: restores check them (default: not checked)")
    pack = verbs.add_parser("pack")
    pack.add_argument("--tree", type=Path, required=True)
    pack.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.verb == "warm":
        bench_warm(args.cache_dir.resolve(), args.from_tree and args.from_tree.resolve(), args.backends.split(","), args.cold_seconds, args.targets.split(),
                   args.target_llvm, args.trust and args.trust.resolve())
    else:
        bench_pack(args.tree.resolve(), args.repeat)


if __name__ == "__main__":
    main()
