"""`mlbuild stats`: a recorded run as a table, or as an SVG timeline with its critical path."""

import time
from pathlib import Path

from mlbuild.reporting import stats
from mlbuild.errors import InputError
from mlbuild.reporting.progress import duration
from mlbuild.reporting.size import human_size


def _size(value: int | None) -> str:
    return "-" if value is None else human_size(value)


def load(project, run_id: str | None) -> dict:
    run = stats.load_run(project.build_dir, run_id)
    if run is None:
        what = f"no recorded run {run_id!r}" if run_id else "no recorded run yet (a build that runs a task records one)"
        raise InputError(f"stats: {what} in {project.relative(stats.stats_dir(project.build_dir) / 'runs')}")
    return run


def table(run: dict) -> list[str]:
    """One line per task that ran, in start order, then the critical path and what each task on it costs."""
    records = [r for r in run["tasks"] if "duration" in r]
    analysis = stats.analyse(run)
    on_path = set(analysis["critical_path"])
    begin = min((r["start"] for r in records), default=run["started"])
    header = ("task", "outcome", "start", "duration", "CPU", "peak RSS", "ccache h/m", "output", "if free", "")
    rows = [header]
    for r in records:
        ccache = f"{r['ccache_hits']}/{r['ccache_misses']}" if "ccache_hits" in r else "-"
        rss = _size(r["peak_rss_kb"] * 1024) if "peak_rss_kb" in r else "-"
        rows.append((r["task"], r["outcome"], f"+{duration(r['start'] - begin)}", duration(r["duration"]),
                     duration(r.get("cpu")) if "cpu" in r else "-", rss, ccache, _size(r.get("output_bytes")),
                     f"-{duration(analysis['shrink'][r['task']])}" if r["task"] in analysis["shrink"] else "",
                     "critical" if r["task"] in on_path else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run["started"]))
    best = stats.floor(run)
    efficiency = f" ({100 * best['efficiency']:.0f} %)" if best["efficiency"] is not None else ""
    lines = [f"run {run['run']} ({started}, -n {run.get('parallel', 1)}, {run['outcome']}): wall {duration(run['wall'])}, "
             f"floor {duration(best['floor'])}{efficiency}, CPU {duration(run['cpu'])}, {len(records)} tasks ran, "
             f"{len(run.get('up_to_date', []))} up to date"]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    lines.append("if free: how much the wall time would shrink if that task took no time (same -n, same order)")
    lines.append(floor_line(best))
    if analysis["critical_path"]:
        lines.append("critical path (the chain of dependent tasks that set the wall time):")
        for task in analysis["critical_path"]:
            lines.append(f"  {task}: the build would shrink by {duration(analysis['shrink'][task])} if it took no time")
    return lines


def floor_line(best: dict) -> str:
    """How the floor was found: the larger of its two lower bounds, and the efficiency it gives."""
    line = (f"floor {duration(best['floor'])}: the larger of the CPU-bound critical path "
            f"({duration(best['path_seconds'])}, {len(best['path'])} tasks) and CPU ÷ jobs "
            f"({duration(best['cpu_seconds'])}, {best['jobs']} jobs)")
    if best["efficiency"] is not None:
        line += f"; efficiency {100 * best['efficiency']:.0f} % (floor ÷ wall)"
    return line


def job_slots(records: list[dict]) -> dict[str, int]:
    """A row per task for the timeline: the lowest slot free when it started (doit's job slots)."""
    ends: list[float] = []
    slots = {}
    for record in sorted(records, key=lambda r: (r["start"], r["task"])):
        for slot, end in enumerate(ends):
            if end <= record["start"] + 1e-6:
                break
        else:
            slot = len(ends)
            ends.append(0.0)
        ends[slot] = record["end"]
        slots[record["task"]] = slot
    return slots


def plot(run: dict, output: Path) -> Path:
    """A Gantt chart of the run per job slot; the critical path in red, each of its tasks labelled with its shrink."""
    import matplotlib

    matplotlib.use("svg")  # no display needed, and the SVG backend alone
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: task names can be searched in the SVG

    records = [r for r in run["tasks"] if "end" in r]
    if not records:
        raise InputError(f"stats: run {run['run']} has no finished task to plot")
    analysis = stats.analyse(run)
    on_path, shrink = set(analysis["critical_path"]), analysis["shrink"]
    slots = job_slots(records)
    begin = min(r["start"] for r in records)
    rows = max(max(slots.values()) + 1, run.get("parallel") or 1)  # a slot that never ran a task is idle throughout
    figure, axes = plt.subplots(figsize=(12, 1.2 + 0.9 * rows))
    # Idle job slots first, under the tasks: shaded spans where a slot ran nothing (each an SVG group "idle-<slot>").
    for row, spans in stats.idle_spans(records, slots, rows).items():
        if spans:
            bars = axes.broken_barh([(start - begin, stop - start) for start, stop in spans], (row - 0.35, 0.7),
                                    facecolors="#f2f2f2", edgecolors="#bbbbbb", hatch="//", linewidth=0.5)
            bars.set_gid(f"idle-{row + 1}")
    colours = {"built": "#4c78a8", "restored": "#59a14f", "failed": "#e15759", "interrupted": "#bab0ac"}
    for record in records:
        left, width = record["start"] - begin, max(record["end"] - record["start"], 1e-3)
        critical = record["task"] in on_path
        axes.barh(slots[record["task"]], width, left=left, height=0.7,
                  color=colours.get(record["outcome"], "#9c755f"),
                  edgecolor="#d62728" if critical else "white", linewidth=2.5 if critical else 0.5)
        label = record["task"] + (f"  (−{duration(shrink[record['task']])} if free)" if critical else "")
        axes.text(left + width / 2, slots[record["task"]], label, ha="center", va="center", fontsize=7,
                  color="white" if not critical else "black", clip_on=True)
    axes.set_yticks(range(rows), [f"slot {slot + 1}" for slot in range(rows)])
    axes.invert_yaxis()
    axes.set_xlabel("seconds since the first task started")
    best = stats.floor(run)
    title = f"mlbuild run {run['run']}: wall {duration(run['wall'])}, floor {duration(best['floor'])}"
    if best["efficiency"] is not None:
        title += f" ({100 * best['efficiency']:.0f} %)"
    title += f", -n {run.get('parallel', 1)}; hatched: idle job slot"
    if analysis["critical_path"]:
        title += "; red outline: critical path"
    axes.set_title(title, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, format="svg", metadata={"Date": None})  # no date: the same run gives the same file
    plt.close(figure)
    return output


def cmd_stats(project, args) -> int:
    """Statistics of a recorded run: a table, or with --plot an SVG timeline with the critical path."""
    run = load(project, args.run)
    if args.plot is not None:
        output = Path(args.plot) if args.plot else project.build_dir / "stats" / f"{run['run']}.svg"
        plot(run, output)
        print(f"wrote {project.relative(output)}")
        return 0
    print("\n".join(table(run)))
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("stats", help=cmd_stats.__doc__)
    parser.add_argument("--run", help="the run id (or its start) from build/stats/runs/; default: the newest")
    parser.add_argument("--plot", nargs="?", const="", default=None, metavar="SVG",
                        help="write an SVG timeline (default: build/stats/<run>.svg)")
    parser.set_defaults(handler=cmd_stats)
