#!/usr/bin/env python3
"""Measure mlbuild's engine and record the figures in docs/performance.md.

    scripts/benchmark.py engine [--recipes 2000]   synthetic graph: load+plan, no-op run, peak RSS
    scripts/benchmark.py noop                      the real project: no-op `doit` and `doit list` (build it first)
    scripts/benchmark.py distribution              the real system: cold build (empty ccache), then warm
                                                   (build folders wiped, ccache kept), boot times
    scripts/benchmark.py llvm --task build:toolchain
    scripts/benchmark.py llvm --task build:clang-x86_64 target_llvm=1
                                                   one LLVM build (hours): wall time, peak memory of the
                                                   largest process and of the whole machine, ninja steps,
                                                   ccache; says whether it started cold or resumed
    scripts/benchmark.py task --task build:linux-x86_64 kernel_config=defconfig
                                                   any one build task the same way, with its output's size
                                                   and largest file
    scripts/benchmark.py unpack [--repeat 5]       the kernel tarball from the download cache: GNU tar
                                                   alone against mlbuild's checked unpack
    scripts/benchmark.py script [--repeat 1] [key=value ...]
                                                   `doit -n <jobs> build` against the linear script
                                                   `mlbuild script build` exports (the same work, one step
                                                   after another), both cold: a new build folder, sources
                                                   unpacked by each, an empty ccache; wall and CPU per
                                                   component and overall, alternating which goes first
    scripts/benchmark.py unpack-two [--repeat 3] [--where FOLDER]
                                                   linux and llvm-project unpacked at once (two processes),
                                                   GNU tar against mlbuild's checked unpack, in FOLDER
                                                   (default build/; /dev/shm for tmpfs)
    scripts/benchmark.py reporting [--recipes 500]  the progress display, summary and statistics: no-op
                                                   and cold build against doit's own reporter
    scripts/benchmark.py reporting-real [--arch x86_64] [--repeat 2]
                                                   the same on the real small system of one arch: a cold
                                                   build (work folders removed, ccache warm, no artifact cache)
    scripts/benchmark.py sandbox-real [--arch x86_64] [--repeat 2]
                                                   that cold build with every build script under bubblewrap
                                                   against without (sandbox=on against off)
    scripts/benchmark.py cache-real [--arch x86_64] [--repeat 2]
                                                   that cold build pushing every output into an empty
                                                   read-write artifact cache against no cache

Each run replaces its own section of docs/performance.md (between marker comments).
"""

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import ninja_time  # noqa: E402  (where an LLVM build's time goes)

DOC = REPO / "docs" / "performance.md"


def timed(command: list[str], cwd: Path, env: dict, repeat: int) -> tuple[list[float], int]:
    """Wall times of `repeat` runs and the peak RSS (KiB) of the largest one."""
    times, peak = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            sys.exit(f"benchmark: {' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return times, peak


def doit(*args: str) -> list[str]:
    return [sys.executable, "-m", "doit", *args]


def environment() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src")
    # Builds here are measured as built: no artifact cache (scripts/benchmark_cache.py measures that).
    env["MLBUILD_CACHE"] = ""
    return env


def make_synthetic(root: Path, count: int) -> None:
    """count recipes, each depending on up to two earlier ones, built for both arches."""
    rng = random.Random(42)
    (root / "recipes").mkdir(parents=True)
    (root / "templates" / "build").mkdir(parents=True)
    (root / "templates" / "target" / "etc").mkdir(parents=True)
    source = root / "src.tar.gz"
    subprocess.run(["tar", "czf", source, "-C", REPO, "pyproject.toml"], check=True)
    sha = subprocess.run(["sha256sum", source], capture_output=True, text=True, check=True).stdout.split()[0]
    (root / "templates" / "build" / "file.sh.j2").write_text('mkdir -p "$OUT/share/"{{ recipe.name }}\necho {{ vars.text }} > "$OUT/share/"{{ recipe.name }}/{{ arch }}\n')
    (root / "templates" / "target" / "etc" / "hostname.j2").write_text("bench\n")
    for index in range(count):
        deps = sorted({f"r{rng.randrange(index)}" for _ in range(2)}) if index else []
        (root / "recipes" / f"r{index}.toml").write_text(
            f'name = "r{index}"\nversion = "1.0"\nsummary = "synthetic"\nhomepage = "https://example.org/"\n'
            f'license = "MIT"\nbuild = "file"\ndepends = {deps!r}\n'.replace("'", '"')
            + ('source = "r0"\n' if index else f'[[sources]]\nurl = "file://{source}"\nsha256 = "{sha}"\nstrip_components = 0\n')
            + f'[vars]\ntext = "recipe {index}"\n'
        )
    (root / "pyproject.toml").write_text(
        f'[tool.mlbuild]\narches = ["x86_64", "arm64"]\ndownload_dir = "{root}/dl"\nccache_dir = "{root}/ccache"\n'
    )
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    shutil.copytree(REPO / "arches", root / "arches")  # x86_64's and arm64's facts (the project's data)


def record(section: str, lines: list[str]) -> None:
    DOC.parent.mkdir(exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Performance\n\nFigures recorded by `scripts/benchmark.py` on the machine named in each section.\n"
    begin, end = f"<!-- {section} begin -->", f"<!-- {section} end -->"
    block = "\n".join([begin, *lines, end])
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print("\n".join(lines))


def machine() -> str:
    return f"{platform.node() or 'host'}: {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


def figure(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}, n={len(times)})"


def bench_engine(count: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_synthetic(root, count)
        env = environment()
        load, load_rss = timed([sys.executable, "-c", "from mlbuild.frontend.project import Project; Project(__import__('pathlib').Path('.'))"], root, env, repeat)
        listing, list_rss = timed(doit("list", "--all"), root, env, repeat)
        started = time.perf_counter()
        # verbose: tasks are counted by their `.  task` lines; the no-ops below run quiet, as users do
        first = subprocess.run(doit("-n", "2"), cwd=root, env={**env, "MLBUILD_VERBOSE": "1"}, capture_output=True, text=True)
        build_time = time.perf_counter() - started
        if first.returncode != 0:
            sys.exit(f"benchmark: first build failed:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}")
        noop, noop_rss = timed(doit(), root, env, repeat)
        tasks = sum(line.startswith(".  ") for line in first.stdout.splitlines())
    record("engine", [
        f"## Engine: synthetic graph of {count} recipes × 2 arches",
        "",
        f"Machine: {machine()}. Command: `scripts/benchmark.py engine --recipes {count}`.",
        "",
        "| measure | figure | target |",
        "| --- | --- | --- |",
        f"| load recipes, validate, build graph and steps | {figure(load)}, peak RSS {load_rss // 1024} MB | ≤ 2 s |",
        f"| `doit list --all` | {figure(listing)}, peak RSS {list_rss // 1024} MB | ≤ 2 s |",
        f"| no-op `doit` (everything up to date) | {figure(noop)}, peak RSS {noop_rss // 1024} MB | ≤ 2 s, ≤ 200 MB |",
        f"| first build, `doit -n 2` ({tasks} tasks ran) | {build_time:.1f} s | — |",
    ])


def bench_noop(repeat: int) -> None:
    env = environment()
    noop, noop_rss = timed(doit(), REPO, env, repeat)
    listing, list_rss = timed(doit("list"), REPO, env, repeat)
    record("noop", [
        "## The real project: no-op",
        "",
        f"Machine: {machine()}. Command: `scripts/benchmark.py noop`, after a full build.",
        "",
        "| measure | figure | target |",
        "| --- | --- | --- |",
        f"| no-op `doit` | {figure(noop)}, peak RSS {noop_rss // 1024} MB | ≤ 0.5 s |",
        f"| `doit list` | {figure(listing)}, peak RSS {list_rss // 1024} MB | ≤ 0.5 s |",
    ])


def task_seconds(logs: Path) -> dict[str, float]:
    """Each task's own time, from the last line of its log."""
    seconds = {}
    for log in logs.glob("build_*.log"):
        match = re.search(r"; ([0-9.]+) s$", log.read_text().rstrip().splitlines()[-1])
        if match:
            seconds[log.stem.removeprefix("build_")] = float(match.group(1))
    return seconds


def build_once(env: dict, label: str) -> tuple[float, int, dict[str, float]]:
    for folder in ("out", "work", "images", "logs"):
        shutil.rmtree(REPO / "build" / folder, ignore_errors=True)
    for stamp in (REPO / "build" / "state").glob("build_*"):  # sources stay unpacked
        stamp.unlink()
    shutil.rmtree(REPO / "target", ignore_errors=True)
    started = time.perf_counter()
    result = subprocess.run(doit("-n", "2", "build"), cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"benchmark: the {label} build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, task_seconds(REPO / "build" / "logs")


def bench_distribution() -> None:
    with tempfile.TemporaryDirectory() as ccache:
        env = {**environment(), "MLBUILD_CCACHE_DIR": ccache}
        subprocess.run(doit("fetch"), cwd=REPO, env=env, check=True, capture_output=True)
        cold_wall, cold_rss, cold = build_once(env, "cold")
        warm_wall, warm_rss, warm = build_once(env, "warm")
    boots = {}
    for arch in ("x86_64", "arm64"):
        result = subprocess.run(doit(f"boottest:{arch}"), cwd=REPO, env=environment(), capture_output=True, text=True)
        ready = re.search(r"shell ready after ([0-9.]+) s", result.stdout)
        off = re.search(r"powered off after ([0-9.]+) s", result.stdout)
        boots[arch] = (ready.group(1) if ready else "failed", off.group(1) if off else "failed")
    lines = [
        "## The real system: cold and warm builds",
        "",
        f"Machine: {machine()}. Command: `scripts/benchmark.py distribution` (`doit -n 2 build`, both arches,",
        "`make -j2` inside each task, so tasks overlap: per-task figures are wall seconds under that load).",
        "Cold: empty ccache, empty build folders (sources already unpacked). Warm: build folders wiped again, ccache kept.",
        "",
        "| task | cold (s) | warm (s) | warm / cold |",
        "| --- | ---: | ---: | ---: |",
    ]
    for task in sorted(cold):
        ratio = f"{warm.get(task, 0) / cold[task]:.0%}" if cold[task] else "—"
        lines.append(f"| {task} | {cold[task]:.1f} | {warm.get(task, 0):.1f} | {ratio} |")
    lines += [
        f"| **whole build, wall** | **{cold_wall:.0f}** | **{warm_wall:.0f}** | **{warm_wall / cold_wall:.0%}** (target ≤ 30 %) |",
        "",
        f"Peak memory of the largest single process (a compiler or linker): {max(cold_rss, warm_rss) // 1024} MB.",
        "",
        "| QEMU boot test | shell ready (s) | powered off (s) |",
        "| --- | ---: | ---: |",
        *[f"| {arch} | {ready} | {off} |" for arch, (ready, off) in boots.items()],
    ]
    record("distribution", lines)


def memory_in_use_kib() -> int:
    """The machine's memory in use: MemTotal - MemAvailable."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])


class MemorySampler:
    """The machine's memory in use, sampled every few seconds in a thread."""

    def __init__(self, interval: float = 2.0):
        self.peak_kib, self.interval = 0, interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stopped.wait(self.interval):
            self.peak_kib = max(self.peak_kib, memory_in_use_kib())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


def bench_llvm(task: str, settings: list[str], kind: str = "llvm") -> None:
    sys.path.insert(0, str(REPO / "src"))
    from mlbuild.model.arches import HOST
    from mlbuild.frontend.project import Project

    project = Project(REPO, dict(setting.split("=", 1) for setting in settings))
    if task not in project.steps:
        sys.exit(f"benchmark: no task {task!r} with {settings or 'the default settings'}; `doit list --all` shows them")
    measured = project.steps[task]  # whose output is sized
    step = measured  # whose log, build folder and ninja steps are read
    if step.work is None:  # build:toolchain gathers the stage-1 sysroots and build:llvm-host, which does the work
        step = next((project.steps[dep] for dep in step.deps if getattr(project.steps[dep], "arch", None) == HOST), None)
        if step is None:
            sys.exit(f"benchmark: {task} builds nothing itself and has no host build among its dependencies; "
                     "name the task that compiles (`doit list --all`)")
    resumed = step.work is not None and (step.work / "build" / "build.ninja").exists()
    idle_kib = memory_in_use_kib()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with MemorySampler() as memory:
        result = subprocess.run(doit(task, *settings), cwd=REPO, env=environment(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    largest = after.ru_maxrss
    log = project.log_path(step.name).read_text(errors="replace")
    totals = re.findall(r"^\[1/(\d+)\]", log, re.MULTILINE)  # one per ninja run
    ccache = re.findall(r"^# ccache: .*$", log, re.MULTILINE)
    binaries = sorted(measured.output.rglob("bin/clang*"))  # with the multicall driver, a link to bin/llvm
    clang = binaries[0].resolve() if binaries else None
    size = f"{clang.stat().st_size / 2**20:.0f} MB" if clang else "—"
    files = [path for path in measured.output.rglob("*") if path.is_file() and not path.is_symlink()] if measured.output.is_dir() else []
    largest_file = max(files, key=lambda path: path.stat().st_size, default=None)
    hours, minutes = divmod(round(wall / 60), 60)
    lines = [
        f"## {'LLVM' if kind == 'llvm' else 'Build'}: `doit {' '.join([task, *settings])}`",
        "",
        f"Machine: {machine()}. Command: `scripts/benchmark.py {kind} --task {' '.join([task, *settings])}`.",
        "",
        "| measure | result |",
        "| --- | --- |",
        f"| result | {'built' if result.returncode == 0 else f'failed (exit status {result.returncode}); log: {project.relative(project.log_path(step.name))}'} |",
        f"| started | {'resumed: the build folder of an interrupted run was kept' if resumed else 'cold: no build folder'} |",
        f"| ninja steps run | {' + '.join(totals) if totals else '—'} |",
        f"| wall time | {hours} h {minutes:02d} min ({wall:.0f} s) |",
        f"| CPU time (user + system, every process) | {cpu / 60:.0f} min ({cpu:.0f} s; load average {os.getloadavg()[0]:.1f} at the end) |",
        f"| peak memory, largest process | {largest // 1024} MB |",
        f"| peak memory in use, whole machine | {memory.peak_kib // 1024} MB ({idle_kib // 1024} MB before the build) |",
        f"| ccache | {ccache[-1].removeprefix('# ccache: ') if ccache else '—'} |",
        *([f"| size of clang ({clang.relative_to(measured.output.resolve()) if clang else 'not built'}) | {size} |"] if kind == "llvm" else []),
        f"| output ({project.relative(measured.output)}/) | {len(files):,} files, {sum(path.stat().st_size for path in files) / 2**20:.1f} MB"
        + (f"; largest {largest_file.relative_to(measured.output)}, {largest_file.stat().st_size:,} bytes |" if largest_file else " |"),
    ]
    folder = step.work / "build" if step.work is not None else None
    if kind == "llvm" and folder is not None and (folder / ".ninja_log").exists():
        lines += ["", "Where the time goes (`scripts/ninja_time.py`: each ninja step's own time, summed by part of the tree, "
                  "every step of the build folder once, an interrupted run's included):", "", *ninja_time.table(folder)]
    record(f"llvm {task}" if kind == "llvm" else f"task {' '.join([task, *settings])}", lines)  # a failed run too: its time and memory up to the failure
    if result.returncode != 0:
        sys.exit(f"benchmark: {task} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def wall_and_cpu(command: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """One run's wall time and CPU time (user + system of the command and everything it ran)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"benchmark: {' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def bench_reporting(count: int, repeat: int) -> None:
    """The cost of the progress display, the summary and the statistics: mlbuild's reporter against doit's own."""
    # Plain lines as in a pipe; no artifact cache: every task of a cold build runs.
    plain = {**environment(), "MLBUILD_PROGRESS": "plain", "MLBUILD_CACHE": ""}
    theirs = ["--reporter", "console"]
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {"noop": {"mlbuild": [], "console": []},
                                                               "cold": {"mlbuild": [], "console": []}}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_synthetic(root, count)
        first = subprocess.run(doit("-n", "2"), cwd=root, env={**plain, "MLBUILD_VERBOSE": "1"}, capture_output=True, text=True)
        if first.returncode != 0:
            sys.exit(f"benchmark: first build failed:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}")
        tasks = sum(line.startswith(".  ") for line in first.stdout.splitlines())
        # In turn (a b a b …), so a machine whose load drifts weighs on both alike.
        for _ in range(repeat):
            for label, extra in (("mlbuild", []), ("console", theirs[:])):
                figures["noop"][label].append(wall_and_cpu(doit(*extra), root, plain))
        for _ in range(max(1, repeat // 2)):
            for label, extra in (("mlbuild", []), ("console", theirs[:])):
                shutil.rmtree(root / "build" / "state")  # every task runs again
                figures["cold"][label].append(wall_and_cpu(doit("-n", "2", *extra), root, plain))
        # What every executed task costs besides (stats.measured): its output's size and the log's ccache line.
        sys.path.insert(0, str(REPO / "src"))
        from mlbuild.reporting import stats
        outputs = sorted((root / "build" / "out").iterdir())
        started = time.perf_counter()
        for output in outputs:
            stats.tree_size(output)
            stats.ccache_counts(root / "build" / "logs" / f"build_{output.name}.log")
        per_task_ms = (time.perf_counter() - started) / len(outputs) * 1000

    def row(what: str, kind: str) -> list[str]:
        mine, doits = figures[kind]["mlbuild"], figures[kind]["console"]
        lines = []
        for index, name in ((0, "wall"), (1, "CPU")):
            a, b = [f[index] for f in mine], [f[index] for f in doits]
            ratios = [x / y for x, y in zip(a, b) if y]
            lines.append(f"| {what}, {name} | {figure(a)} | {figure(b)} | {statistics.median(ratios):.3f} "
                         f"(pairs {min(ratios):.3f}–{max(ratios):.3f}) | ≤ 1.02 |")
        return lines

    record("reporting", [
        f"## Progress, summary and statistics: their overhead ({count} recipes × 2 arches, {tasks} tasks)",
        "",
        f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f} at the end. Command: `scripts/benchmark.py reporting --recipes {count}`:",
        "the synthetic graph of `engine`, with mlbuild's reporter (plain lines, as in a pipe) against doit's own",
        "(`--reporter console`), run in turn; the ratio is the median of the pairs' ratios. Both run each task's",
        "measurement (stats.measured), whose own cost per task is the last row.",
        "",
        "| measure | mlbuild's reporter | doit's console reporter | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        *row("no-op `doit`", "noop"),
        *row("cold `doit -n 2` (every task runs)", "cold"),
        f"| per executed task: output size and ccache line | {per_task_ms:.2f} ms | — | — | — |",
    ])


# Two ways of running the same cold build of one arch's small system, compared side by side:
# (label, extra doit arguments, extra environment) of A, then of B, and what the section says.
COLD_PAIRS = {
    "reporting": (("mlbuild's reporter", [], {}), ("doit's console reporter", ["--reporter", "console"], {}),
                  "Progress, summary and statistics: their overhead", "with mlbuild's reporter (plain lines) against doit's own "
                  "(`--reporter console`)"),
    "sandbox": (("sandbox on", [], {"MLBUILD_SANDBOX": "on"}), ("sandbox off", [], {"MLBUILD_SANDBOX": "off"}),
                "The sandbox: its overhead", "with every build script under bubblewrap (`sandbox=on`) against none "
                "(`sandbox=off`)"),
    # {empty}: a new empty folder for each run, so that every task is built and pushed, none restored.
    "cache": (("read-write cache", [], {"MLBUILD_CACHE": "{empty}"}), ("no cache", [], {}),
              "The artifact cache: what pushing costs a cold build", "with a read-write file:// artifact cache "
              "(empty: every output is packed and stored) against none"),
}


TARGETS = {"reporting": "≤ 1.02", "sandbox": "≤ 1.03", "cache": "≤ 1.05"}


def bench_cold_pair(kind: str, arch: str, repeat: int) -> None:
    """A cold build of the real small system of one arch two ways (ccache warm, no artifact cache), alternating."""
    (label_a, args_a, env_a), (label_b, args_b, env_b), title, how = COLD_PAIRS[kind]
    plain = {**environment(), "MLBUILD_PROGRESS": "plain", "MLBUILD_CACHE": "", "MLBUILD_TARGET_LLVM": "0"}
    target = [f"build:images-{arch}"]
    first = subprocess.run(doit("-n", "2", *target), cwd=REPO, env=plain, capture_output=True, text=True)
    if first.returncode != 0:
        sys.exit(f"benchmark: the first build failed:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}")
    state = REPO / "build" / "state"
    stamps = sorted(state.glob(f"build_*-{arch}.json"))  # fetch tasks stay done: unpacking is the same for both
    figures: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    for index in range(repeat):
        for label in (("a", "b") if index % 2 == 0 else ("b", "a")):
            for stamp in stamps:
                stamp.unlink(missing_ok=True)
            for folder in [*(REPO / "build" / "work").glob(f"*-{arch}"), *(REPO / "build" / "out").glob(f"*-{arch}")]:
                shutil.rmtree(folder)  # cold: every compile runs again (through the warm ccache)
            extra, env = (args_a, env_a) if label == "a" else (args_b, env_b)
            with tempfile.TemporaryDirectory(prefix="mlbuild-bench-cache-") as empty:
                env = {key: value.replace("{empty}", Path(empty).as_uri()) for key, value in env.items()}
                figures[label].append(wall_and_cpu(doit("-n", "2", *extra, *target), REPO, {**plain, **env}))
    lines = []
    for index, name in ((0, "wall"), (1, "CPU")):
        a, b = [f[index] for f in figures["a"]], [f[index] for f in figures["b"]]
        ratios = [x / y for x, y in zip(a, b) if y]
        lines.append(f"| cold `doit -n 2 build:images-{arch}`, {name} | {figure(a)} | {figure(b)} | "
                     f"{statistics.median(ratios):.3f} (pairs {min(ratios):.3f}–{max(ratios):.3f}) | "
                     f"{TARGETS[kind]} |")
    record(f"{kind} {arch}", [
        f"## {title} on the real {arch} small system",
        "",
        f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f} at the end. Command: `scripts/benchmark.py {kind}-real"
        f" --arch {arch} --repeat {repeat}`: a cold build of the arch's {len(stamps)} build tasks (their stamps, work and",
        f"output folders removed; the sources stay unpacked, ccache is warm, no artifact cache), {how}, alternating which goes first.",
        "",
        f"| measure | {label_a} | {label_b} | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        *lines,
    ])


def component(task: str, arches: set[str]) -> str:
    """The component a task works on: its recipe, or "system" for the arch's target, images and disk."""
    name = task.split(":", 1)[-1]
    for arch in arches:
        name = name.removesuffix(f"-{arch}")
    return "system (target, images, disk)" if name in ("target", "images", "disk") else name


def mlbuild_cold(folder: Path, settings: list[str]) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """doit build into folder (build and target folders, ccache there, no artifact cache): wall, CPU, per task."""
    keys = [f"build_dir={folder / 'build'}", f"target_dir={folder / 'target'}", f"ccache_dir={folder / 'ccache'}", "cache="]
    env = {**environment(), "MLBUILD_PROGRESS": "plain"}
    wall, cpu = wall_and_cpu(doit("build", *keys, *settings), REPO, env)
    run = json.loads(sorted((folder / "build" / "stats" / "runs").glob("*.json"))[-1].read_text())
    return wall, cpu, {r["task"]: (r["duration"], r["cpu"]) for r in run["tasks"] if "duration" in r}


def script_cold(folder: Path, settings: list[str]) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """The exported linear script of the same build, run into folder with an empty ccache: wall, CPU, per step."""
    exported = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "script", "build", *settings],
                              cwd=REPO, env=environment(), capture_output=True, text=True)
    if exported.returncode != 0:
        sys.exit(f"benchmark: mlbuild script build failed:\n{exported.stderr[-2000:]}")
    (folder / "build.sh").write_text(exported.stdout)
    times = folder / "step-times.tsv"
    env = {**os.environ, "MLBUILD_CCACHE_DIR": str(folder / "ccache"), "MLBUILD_STEP_TIMES": str(times)}
    wall, cpu = wall_and_cpu(["bash", str(folder / "build.sh"), str(folder / "tree")], folder, env)
    steps = {}
    for line in times.read_text().splitlines():
        task, step_wall, step_cpu = line.split("\t")
        steps[task] = (int(step_wall) / 1000, int(step_cpu) / 1000)
    return wall, cpu, steps


def bench_script(repeat: int, settings: list[str]) -> None:
    """mlbuild's cold default build against the linear script it exports for the same tasks, alternated."""
    fetched = subprocess.run(doit("fetch", *settings), cwd=REPO, env=environment(), capture_output=True, text=True)
    if fetched.returncode != 0:  # both sides find the tarballs in the download cache: no network in the figures
        sys.exit(f"benchmark: doit fetch failed:\n{fetched.stdout[-2000:]}\n{fetched.stderr[-2000:]}")
    arches = {path.stem for path in (REPO / "arches").glob("*.toml")}
    runs: dict[str, list] = {"mlbuild": [], "script": []}
    load = os.getloadavg()[0]
    for index in range(repeat):
        for label in (("mlbuild", "script") if index % 2 == 0 else ("script", "mlbuild")):
            (REPO / "build").mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=f"bench-{label}-", dir=REPO / "build") as folder:
                measure = mlbuild_cold if label == "mlbuild" else script_cold
                runs[label].append(measure(Path(folder), settings))
                print(f"benchmark: {label} cold: {runs[label][-1][0]:.0f} s wall, {runs[label][-1][1]:.0f} s CPU", flush=True)
    jobs = subprocess.run([sys.executable, "-m", "mlbuild.frontend.cli", "settings", "--all", *settings], cwd=REPO,
                          env=environment(), capture_output=True, text=True).stdout
    jobs = (re.findall(r"^jobs=(\d+)", jobs, re.M) or ["?"])[0]

    def per_component(run) -> dict[str, list[float]]:
        totals: dict[str, list[float]] = {}
        for task, (wall, cpu) in run[2].items():
            total = totals.setdefault(component(task, arches), [0.0, 0.0])
            total[0] += wall
            total[1] += cpu
        return totals

    def median_of(label: str, index: int, name: str | None = None) -> float:
        if name is None:
            return statistics.median(run[index] for run in runs[label])
        return statistics.median(per_component(run).get(name, [0.0, 0.0])[index] for run in runs[label])

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.3f}" if b else "—"

    names = sorted(set().union(*(per_component(run) for label in runs for run in runs[label])))
    rows = []
    for name in names:
        wall_m, wall_s, cpu_m, cpu_s = (median_of(label, index, name) for label, index in
                                        (("mlbuild", 0), ("script", 0), ("mlbuild", 1), ("script", 1)))
        rows.append(f"| {name} | {wall_m:.1f} | {wall_s:.1f} | {ratio(wall_m, wall_s)} | {cpu_m:.1f} | {cpu_s:.1f} | {ratio(cpu_m, cpu_s)} |")
    wall_m, wall_s, cpu_m, cpu_s = (median_of(label, index) for label, index in
                                    (("mlbuild", 0), ("script", 0), ("mlbuild", 1), ("script", 1)))
    shown = " ".join(settings)
    record("script", [
        "## The same work two ways: the dependency graph against the linear script it exports",
        "",
        f"Machine: {machine()}, load average {load:.1f} at the start. Command: `scripts/benchmark.py script --repeat {repeat}"
        f"{' ' + shown if shown else ''}`: `doit build{' ' + shown if shown else ''}` ({jobs} jobs) against `bash build.sh` from",
        "`mlbuild script build` (the same tasks, one after another, each `make` with the same -j), both cold: a new build",
        "folder (every source unpacked, every step run), an empty ccache of its own, no artifact cache; the tarballs in the",
        "download cache. Per component: the sum of its tasks' own wall time (mlbuild's tasks overlap, so per-component walls",
        "do not add up to the whole) and CPU (user + system of everything the task ran, from mlbuild's statistics and the",
        "script's MLBUILD_STEP_TIMES); unpacking is in the first build task under mlbuild (lazy) and in the fetch step in",
        "the script. Medians over the runs.",
        "",
        "| component | mlbuild wall (s) | script wall (s) | wall ratio | mlbuild CPU (s) | script CPU (s) | CPU ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        f"| **whole build** | **{wall_m:.0f}** | **{wall_s:.0f}** | **{ratio(wall_m, wall_s)}** (aim ≤ 1.0) | "
        f"**{cpu_m:.0f}** | **{cpu_s:.0f}** | **{ratio(cpu_m, cpu_s)}** (aim ≤ 1.03) |",
    ])


def cached_tarball(recipe: str) -> Path:
    """The recipe's tarball in the download cache (any of its alternatives' checksums)."""
    cache = Path(os.environ.get("MLBUILD_DOWNLOAD_DIR", Path.home() / ".cache" / "mlbuild" / "downloads"))
    shas = re.findall(r'^sha256 = "([0-9a-f]{64})"', (REPO / "recipes" / f"{recipe}.toml").read_text(), re.M)
    found = [path for sha in shas for path in sorted((cache / sha).glob("*")) if path.is_file()]
    if not found:
        sys.exit(f"benchmark: no {recipe} tarball in {cache}; run `.venv/bin/doit fetch:{recipe}` first")
    return found[0]


UNPACK_ONE = """\
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from mlbuild.sources.unpack import unpack
unpack(Path(sys.argv[2]), Path(sys.argv[3]), 1)
"""


def bench_unpack_two(repeat: int, where: Path) -> None:
    """linux and llvm-project at once, each in its own process: GNU tar against mlbuild's unpack, alternated."""
    archives = [cached_tarball("linux"), cached_tarball("llvm-project")]
    figures: dict[str, list[tuple[float, float]]] = {"gnu": [], "mlbuild": []}
    load = os.getloadavg()[0]
    where.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="unpack-two-", dir=where) as folder:
        for index in range(repeat):
            for label in (("gnu", "mlbuild") if index % 2 == 0 else ("mlbuild", "gnu")):
                destinations = [Path(folder) / label / archive.name for archive in archives]
                if label == "gnu":
                    for destination in destinations:
                        destination.mkdir(parents=True)
                    commands = [["tar", "-xf", str(archive), "-C", str(destination), "--strip-components=1"]
                                for archive, destination in zip(archives, destinations)]
                else:
                    commands = [[sys.executable, "-c", UNPACK_ONE, str(REPO / "src"), str(archive), str(destination)]
                                for archive, destination in zip(archives, destinations)]
                subprocess.run(["sync"], check=True)  # the previous round's writeback out of this one's figures
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                running = [subprocess.Popen(command) for command in commands]
                if any(process.wait() != 0 for process in running):
                    sys.exit(f"benchmark: an unpack failed ({label})")
                subprocess.run(["sync"], check=True)  # written to the disk, as a build's next step would find it
                wall = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                figures[label].append((wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)))
                shutil.rmtree(Path(folder) / label)
                print(f"benchmark: {label}: {wall:.1f} s wall, {figures[label][-1][1]:.1f} s CPU", flush=True)
    rows = []
    for label, how in (("gnu", "GNU tar alone (`tar -xf`, no checks), two at once"),
                       ("mlbuild", "`mlbuild.sources.unpack` (every check, GNU tar writing), two at once")):
        walls, cpus = [f[0] for f in figures[label]], [f[1] for f in figures[label]]
        rows.append(f"| {how} | {figure(walls)} | {statistics.median(cpus):.1f} s |")
    wall_ratio = statistics.median(f[0] for f in figures["mlbuild"]) / statistics.median(f[0] for f in figures["gnu"])
    cpu_ratio = statistics.median(f[1] for f in figures["mlbuild"]) / statistics.median(f[1] for f in figures["gnu"])
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(where)], capture_output=True, text=True).stdout.strip()
    record(f"unpack-two {kind}", [
        f"## Unpacking linux and llvm-project at once, on {kind} ({where})",
        "",
        f"Machine: {machine()}; load average {load:.1f} at the start. Command: `scripts/benchmark.py unpack-two --repeat {repeat}"
        f" --where {where}`: {archives[0].name} ({archives[0].stat().st_size // 1000000} MB) and {archives[1].name}"
        f" ({archives[1].stat().st_size // 1000000} MB), each in a process of its own, started together; the wall time",
        "runs until both have ended and `sync` has written their files; CPU is user + system of every process.",
        "The two ways alternate which goes first; each round unpacks into new folders.",
        "",
        "| how | wall time | CPU time (median) |",
        "| --- | --- | --- |",
        *rows,
        f"| ratio of the medians | {wall_ratio:.2f} × | {cpu_ratio:.2f} × |",
    ])


def bench_unpack(repeat: int) -> None:
    """The kernel tarball: GNU tar alone against mlbuild.sources.unpack (checks in Python, GNU tar writing), alternated."""
    sys.path.insert(0, str(REPO / "src"))
    from mlbuild.sources.unpack import unpack

    archive = cached_tarball("linux")

    def cpu() -> float:  # this process and its children (xz, tar), user + system
        return sum(usage.ru_utime + usage.ru_stime for usage in
                   (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))

    times: dict[str, list[float]] = {"gnu": [], "mlbuild": []}
    cpus: dict[str, list[float]] = {"gnu": [], "mlbuild": []}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="unpack-bench-") as folder:
        for index in range(repeat):
            for label in (("gnu", "mlbuild") if index % 2 == 0 else ("mlbuild", "gnu")):  # alternate: no order bias
                destination = Path(folder) / label
                started, used = time.perf_counter(), cpu()
                if label == "gnu":
                    destination.mkdir()
                    subprocess.run(["tar", "-xf", archive, "-C", destination, "--strip-components=1"], check=True)
                else:
                    unpack(archive, destination, 1)
                times[label].append(time.perf_counter() - started)
                cpus[label].append(cpu() - used)
                shutil.rmtree(destination)
    gnu, checked = times["gnu"], times["mlbuild"]
    ratio = statistics.median(checked) / statistics.median(gnu)
    release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    system = (re.findall(r'^PRETTY_NAME="?([^"\n]*)', release, re.M) or ["unknown system"])[0]
    record("unpack", [
        f"## Unpacking the kernel tarball ({archive.name}, {archive.stat().st_size // 1000000} MB)",
        "",
        f"Machine: {machine()}, {system}; load average {load:.1f} at the start (the machine is shared).",
        f"Command: `scripts/benchmark.py unpack --repeat {repeat}`; the two alternate, each into a new folder.",
        "`mlbuild.sources.unpack` runs xz, then Python (reads and checks every header, writes a fresh one; file data",
        "moves by splice), then GNU tar into a new folder, then compares the tree with the checked list",
        "(docs/security.md). Before, tarfile.extract took 60 s where GNU tar took 11.5 s (idle machine).",
        "",
        "| how | wall time | CPU time (user + system, all processes) |",
        "| --- | --- | --- |",
        f"| GNU tar alone (`tar -xf`, no checks) | {figure(gnu)} | {statistics.median(cpus['gnu']):.1f} s |",
        f"| `mlbuild.sources.unpack` (every check, GNU tar writing) | {figure(checked)} | {statistics.median(cpus['mlbuild']):.1f} s |",
        f"| ratio of the medians | {ratio:.2f} × (target ≤ 1.5 ×) | "
        f"{statistics.median(cpus['mlbuild']) / statistics.median(cpus['gnu']):.2f} × |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["engine", "noop", "distribution", "llvm", "reporting", "reporting-real", "sandbox-real", "cache-real", "unpack", "unpack-two", "task", "script"])
    parser.add_argument("--arch", default="x86_64", help="reporting-real, sandbox-real: the arch whose small system is built")
    parser.add_argument("--task", default="build:toolchain", help="llvm: the task to build")
    parser.add_argument("settings", nargs="*", help="llvm, task, script: doit key=value settings, e.g. target_llvm=1")
    parser.add_argument("--recipes", type=int, default=2000)
    parser.add_argument("--where", type=Path, default=REPO / "build", help="unpack-two: the folder to unpack into")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_intermixed_args()
    if args.what == "engine":
        bench_engine(args.recipes, args.repeat)
    elif args.what == "noop":
        bench_noop(args.repeat)
    elif args.what in ("llvm", "task"):
        bench_llvm(args.task, args.settings, args.what)
    elif args.what == "unpack":
        bench_unpack(args.repeat)
    elif args.what == "unpack-two":
        bench_unpack_two(args.repeat if "--repeat" in sys.argv else 3, args.where)
    elif args.what == "script":
        bench_script(args.repeat if "--repeat" in sys.argv else 1, args.settings)
    elif args.what == "reporting":
        bench_reporting(min(args.recipes, 500), args.repeat)
    elif args.what in ("reporting-real", "sandbox-real", "cache-real"):
        bench_cold_pair(args.what.removesuffix("-real"), args.arch, args.repeat)
    else:
        bench_distribution()


if __name__ == "__main__":
    main()
