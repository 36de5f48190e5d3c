"""`mlbuild size <arch>`: what each component adds to target/<arch> and the images, and what changed.

Like Buildroot's graph-size: sizes per component (from each component's own
output, which build:target-<arch> copies in), the largest files of the system
and who installed them, the initramfs and the disk image, the change since the
previous build of the target (build/stats/size-<arch>.json keeps the last two
different builds) and an SVG chart.
"""

import json
import os
from pathlib import Path

from mlbuild.errors import InputError
from mlbuild.model.graph import images_task, target_task
from mlbuild.trees import write_atomic

ASSEMBLY = "/etc and folders (mlbuild)"


def _files(root: Path) -> dict[str, int]:
    """Relative path -> bytes of every file and link below root."""
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = os.lstat(path).st_size
    return found


def measure(project, arch: str) -> dict:
    """Sizes of the built target of one arch, per component, per file and of its images."""
    name = target_task(arch)
    if name not in project.steps:
        raise InputError(f"size: no arch {arch!r} in this configuration (arches: {', '.join(project.config.arches)})")
    target = project.steps[name]
    if not target.output.is_dir():
        raise InputError(f"size: {project.relative(target.output)} is not built yet (doit {name})")
    files = _files(target.output)
    owners, components = {}, {}
    for step in target.components:
        own = _files(step.output) if step.output.is_dir() else {}
        components[step.recipe.name] = {"bytes": sum(own.values()), "files": len(own)}
        owners.update({path: step.recipe.name for path in own})
    rest = {path: size for path, size in files.items() if path not in owners}
    components[ASSEMBLY] = {"bytes": sum(rest.values()), "files": len(rest)}
    images = {}
    images_dir = project.steps[images_task(arch)].output
    for image in ("initramfs.cpio", "initramfs.cpio.zst", "initramfs.cpio.gz", "rootfs.ext4"):
        path = images_dir / image
        if path.exists():
            info = path.stat()
            images[image] = {"bytes": info.st_size, "allocated": info.st_blocks * 512}
    stamp = project.stamps.read(target.stamp) or {}
    largest = sorted(files.items(), key=lambda item: (-item[1], item[0]))[:20]
    return {
        "arch": arch,
        "output_hash": stamp.get("output_hash"),
        "total": {"bytes": sum(files.values()), "files": len(files)},
        "components": components,
        "largest": [{"path": path, "bytes": size, "component": owners.get(path, ASSEMBLY)} for path, size in largest],
        "images": images,
    }


def remember(project, snapshot: dict) -> dict | None:
    """Keep the snapshot; return the one of the previous, different build of this target (if any)."""
    path = project.build_dir / "stats" / f"size-{snapshot['arch']}.json"
    try:
        kept = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        kept = {}
    current = kept.get("current")
    if current and current.get("output_hash") != snapshot["output_hash"]:
        kept["previous"] = current
    kept["current"] = snapshot
    write_atomic(path, json.dumps(kept, indent=1, sort_keys=True).encode())
    return kept.get("previous")


def human_size(value: float) -> str:
    """Bytes for people in powers of 1024, named as such: 136 B, 15.6 KiB, 3.0 MiB, 1.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "?"


def _change(now: int, before: int | None) -> str:
    if before is None:
        return "new" if now else ""
    delta = now - before
    return "" if delta == 0 else ("+" if delta > 0 else "-") + human_size(abs(delta))


def report(snapshot: dict, previous: dict | None) -> list[str]:
    total = snapshot["total"]["bytes"]
    old = (previous or {}).get("components", {})
    lines = [f"target/{snapshot['arch']}: {human_size(total)} in {snapshot['total']['files']} files"
             + (f" ({_change(total, previous['total']['bytes']) or 'unchanged'} since the previous build)" if previous else "")]
    rows = [("component", "size", "share", "files", "change")]
    for name, entry in sorted(snapshot["components"].items(), key=lambda item: -item[1]["bytes"]):
        share = f"{100 * entry['bytes'] / total:.1f} %" if total else "-"
        before = old.get(name, {}).get("bytes") if previous else entry["bytes"]
        rows.append((name, human_size(entry["bytes"]), share, str(entry["files"]), _change(entry["bytes"], before)))
    if previous:
        for name in sorted(set(old) - set(snapshot["components"])):
            rows.append((name, "0 B", "-", "0", f"-{human_size(old[name]['bytes'])} (gone)"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    old_images = (previous or {}).get("images", {})
    for image, entry in snapshot["images"].items():
        change = _change(entry["bytes"], old_images.get(image, {}).get("bytes")) if previous else ""
        lines.append(f"{image}: {human_size(entry['bytes'])} ({human_size(entry['allocated'])} allocated)" + (f", {change}" if change else ""))
    lines.append("largest files:")
    for entry in snapshot["largest"][:10]:
        lines.append(f"  {human_size(entry['bytes']):>9}  /{entry['path']}  ({entry['component']})")
    return lines


def chart(snapshot: dict, output: Path) -> Path:
    """An SVG: size per component, and the largest files coloured by component."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: paths and names can be searched in the SVG

    components = sorted(snapshot["components"].items(), key=lambda item: item[1]["bytes"])
    palette = plt.get_cmap("tab20")
    colour = {name: palette(index % 20) for index, (name, _) in enumerate(reversed(components))}
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 1.5 + 0.35 * max(len(components), 10)))
    left.barh([name for name, _ in components], [entry["bytes"] / 2**20 for _, entry in components],
              color=[colour[name] for name, _ in components])
    left.set_xlabel("MiB")
    left.set_title(f"target/{snapshot['arch']} by component ({human_size(snapshot['total']['bytes'])})", fontsize=10)
    largest = list(reversed(snapshot["largest"][:10]))
    right.barh([f"/{entry['path']}" for entry in largest], [entry["bytes"] / 2**20 for entry in largest],
               color=[colour.get(entry["component"], "grey") for entry in largest])
    right.set_xlabel("MiB")
    right.set_title("largest files (colour: component)", fontsize=10)
    right.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, format="svg", metadata={"Date": None})
    plt.close(figure)
    return output


def cmd_size(project, args) -> int:
    """Size of each component's part of target/<arch> and the images, the change since the last build, an SVG chart."""
    snapshot = measure(project, args.arch)
    previous = remember(project, snapshot)
    print("\n".join(report(snapshot, previous)))
    output = Path(args.output) if args.output else project.build_dir / "stats" / f"size-{args.arch}.svg"
    chart(snapshot, output)
    print(f"wrote {project.relative(output)}")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("size", help=cmd_size.__doc__)
    parser.add_argument("arch", help="one of the configured arches (arches/<name>.toml)")
    parser.add_argument("-o", "--output", help="SVG chart to write (default: build/stats/size-<arch>.svg)")
    parser.set_defaults(handler=cmd_size)
