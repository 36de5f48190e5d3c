"""`mlbuild legal-info <arch>`: what shipping the system requires, in one folder (like Buildroot's legal-info).

    build/legal-info/<arch>/
      manifest.csv          one line per component: version, license, license files, source archive, site, sha256, patches
      sources/<src>-<v>/    the exact source tarball (as verified by its sha256) and the patches applied to it
      licenses/<name>-<v>/  the license texts found in the source (COPYING, LICENSE*, LICENSES/…)
      sbom.spdx.json        the SPDX 3.0.1 document (mlbuild sbom)
      README

The folder is written beside its place and renamed into it: an interrupted run leaves the old one.
"""

import csv
import io
import os
import re
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from mlbuild.exports import materials, sbom
from mlbuild.sources.download import fetch
from mlbuild.sources.transfer import Limits
from mlbuild.errors import MlbuildError
from mlbuild.trees import remove_tree, replace_tree

# A license text: by its name (at the top of the source or one folder down), or anywhere under LICENSES/.
LICENSE_NAME = re.compile(r"^(COPYING|COPYRIGHT|LICEN[CS]E|NOTICE|UNLICENSE)([._-].*)?$", re.IGNORECASE)
MAX_LICENSE_BYTES = 1 << 20


def license_members(archive: Path, strip_components: int):
    """(path in the source, bytes) of each license text in a source tarball."""
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.isreg() or member.size > MAX_LICENSE_BYTES:
                continue
            parts = PurePosixPath(member.name).parts[strip_components:]
            if not parts or ".." in parts or parts[0] in ("/", ""):
                continue
            if (len(parts) <= 2 and LICENSE_NAME.match(parts[-1])) or (len(parts) > 1 and parts[0] == "LICENSES"):
                handle = tar.extractfile(member)
                if handle is not None:
                    yield "/".join(parts), handle.read()


def license_files(folder: Path):
    """(path in the source, bytes) of each license text in an unpacked source folder (a local override)."""
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(name for name in dirs if name != ".git")
        for name in sorted(names):
            path = Path(top, name)
            parts = path.relative_to(folder).parts
            if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_LICENSE_BYTES:
                continue
            if (len(parts) <= 2 and LICENSE_NAME.match(parts[-1])) or (len(parts) > 1 and parts[0] == "LICENSES"):
                yield "/".join(parts), path.read_bytes()


def collect(project, arch: str, folder: Path, log=print) -> list[dict]:
    """Write the legal-info folder of an arch; returns the manifest's rows."""
    staging = folder.with_name(f".{folder.name}.staging")
    remove_tree(staging)
    (staging / "sources").mkdir(parents=True)
    (staging / "licenses").mkdir()
    rows, copied_sources = [], {}
    try:
        for component in materials.components(project, arch):
            recipe, source_recipe, override = component.recipe, component.source_recipe, component.override
            source_folder = f"{source_recipe.name}-{source_recipe.version}"
            if override and source_recipe.name not in copied_sources:
                # Like Buildroot's legal-info for an overridden package: the source is not saved.
                log(f"warning: {source_recipe.name}: built from the local override {override.text}: its source is not saved")
                copied_sources[source_recipe.name] = None, None, list(license_files(override.path))
            elif source_recipe.name not in copied_sources:  # a source several components share is read once
                archive, source = _copy_source(project, component, staging / "sources" / source_folder, log)
                copied_sources[source_recipe.name] = archive, source, list(license_members(archive, source.strip_components))
            archive, source, texts = copied_sources[source_recipe.name]
            license_folder = staging / "licenses" / f"{recipe.name}-{recipe.version}"
            for name, data in texts:
                path = license_folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            where = archive.name if archive else f"the local override {override.text}"
            if not texts:
                log(f"warning: {recipe.name}: no license text found in {where} (declared: {recipe.license})")
            rows.append({
                "package": recipe.name, "version": recipe.version, "license": recipe.license,
                "license files": " ".join(name for name, _ in texts),
                "source archive": f"sources/{source_folder}/{archive.name}" if archive else "",
                "source site": materials.download_location(source) if source else f"local override {override.text}",
                "sha256": source.sha256 if source else "",
                "patches": "" if override else " ".join(patch.name for patch in component.patches),
            })
        _write_manifest(staging / "manifest.csv", rows)
        sbom.write(project, arch, staging / "sbom.spdx.json")
        (staging / "README").write_text(
            f"Legal information for the {arch} system built by mlbuild.\n\n"
            "manifest.csv   each component: version, license (SPDX), license files, source archive, source site, sha256, patches\n"
            "sources/       the exact source archives and the patches applied to them, as built\n"
            "licenses/      the license texts found in each source\n"
            "sbom.spdx.json the SPDX 3.0.1 software bill of materials (JSON-LD; mlbuild sbom)\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        replace_tree(staging, folder)
    except BaseException:
        remove_tree(staging)
        raise
    return rows


def _copy_source(project, component, destination: Path, log):
    """The verified tarball (from the download cache, downloading it if needed) and the patches, into destination."""
    config = project.config
    source_recipe = component.source_recipe
    archive = fetch(source_recipe, config.download_dir, config.mirrors, lambda line: None, offline=config.offline,
                    limits=Limits.of(config))
    source = next(s for s in source_recipe.sources if s.sha256 == archive.parent.name)
    destination.mkdir(parents=True)
    copy = destination / archive.name
    try:
        os.link(archive, copy)
    except OSError:
        shutil.copyfile(archive, copy)
    for patch in component.patches:
        shutil.copyfile(patch, destination / patch.name)
    count = len(component.patches)
    log(f"  {source_recipe.name}: {archive.name} and {count} {'patch' if count == 1 else 'patches'}")
    return copy, source


def _write_manifest(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["package"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def cmd_legal_info(project, args) -> int:
    """Collect license texts, exact source tarballs and patches of an arch's system into one folder."""
    folder = Path(args.output).resolve() if args.output else project.build_dir / "legal-info" / args.arch
    try:
        rows = collect(project, args.arch, folder)
    except tarfile.TarError as error:
        raise MlbuildError(f"legal-info {args.arch}: cannot read a source archive: {error}") from None
    print(f"{project.relative(folder)}/: {len(rows)} components, their sources, patches and license texts")
    return 0


def add_parser(commands) -> None:
    parser = commands.add_parser("legal-info", help=cmd_legal_info.__doc__)
    parser.add_argument("arch", help="one of the configured arches (arches/<name>.toml)")
    parser.add_argument("-o", "--output", help="the folder to write (default: build/legal-info/<arch>/)")
    parser.set_defaults(handler=cmd_legal_info)
