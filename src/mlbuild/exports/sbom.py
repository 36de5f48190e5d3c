"""`mlbuild sbom <arch>`: the SBOM of what the arch's system is made of, as SPDX 3.0.1 JSON-LD
(spdx3.py, the default) or SPDX 2.3 JSON (spdx2.py, `--format spdx-2.3`).
"""

from pathlib import Path

from mlbuild.exports import spdx2, spdx3
# The components and their download locations (materials.py), offered here as this module always has.
from mlbuild.exports.materials import components, download_location

__all__ = ["FORMATS", "components", "download_location", "default_path", "write", "cmd_sbom", "add_parser"]
FORMATS = {"spdx-3.0": ("SPDX 3.0.1", "spdx.json"), "spdx-2.3": ("SPDX 2.3", "spdx-2.3.json")}  # name -> (said, file suffix)


def default_path(project, arch: str, format: str) -> Path:
    return project.build_dir / "sbom" / f"{arch}.{FORMATS[format][1]}"


def write(project, arch: str, path: Path, format: str = "spdx-3.0") -> list[str]:
    """Write the arch's SBOM in a format, validated (nothing is written otherwise); returns notes for the user."""
    if format == "spdx-2.3":
        spdx2.write(project, arch, path)
        return []
    return spdx3.write(project, arch, path).unrecorded


def cmd_sbom(project, args) -> int:
    """Write the SBOM of an arch's system (SPDX 3.0.1, or 2.3): components, versions, sources, sha256, package URLs, licenses, patches."""
    path = Path(args.output).resolve() if args.output else default_path(project, args.arch, args.format)
    notes = write(project, args.arch, path, args.format)
    print(f"{project.relative(path)}: {FORMATS[args.format][0]}, {len(components(project, args.arch))} components, validated")
    for note in notes:
        print(f"note: {note}")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("sbom", help=cmd_sbom.__doc__)
    parser.add_argument("arch", help="one of the configured arches (arches/<name>.toml)")
    parser.add_argument("--format", choices=list(FORMATS), default="spdx-3.0",
                        help="spdx-3.0: SPDX 3.0.1 JSON-LD (the default); spdx-2.3: SPDX 2.3 JSON")
    parser.add_argument("-o", "--output", help="the file to write (default: build/sbom/<arch>.spdx.json, "
                                               "<arch>.spdx-2.3.json for SPDX 2.3)")
    parser.set_defaults(handler=cmd_sbom)
