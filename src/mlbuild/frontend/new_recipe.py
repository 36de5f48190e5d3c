"""`mlbuild new NAME SOURCE`: a recipe for a new component, written from its source tarball (as Yocto's `devtool add`).

SOURCE is a URL, a local tarball, or debian:PACKAGE=VERSION (Debian's source archive, through the
private apt state sources/download.py keeps: no deb-src line needed). The tarball goes into the
download cache under its sha256, computed here: the checksum the recipe records (a Debian tarball
has been checked by apt against the archive's signed index; a URL's is the file as downloaded
now). The safe unpacker (sources/unpack.py) unpacks it into a temporary folder to see how it
builds, and recipes/NAME.toml is written on the matching infrastructure of templates/build/infra/,
each field with a comment saying where its value came from; what only the user can know is
marked FILL-IN. Then `mlbuild check` runs on the project with it.
"""

import json
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import NamedTuple

from pydantic import ValidationError

from mlbuild.credentials import redact
from mlbuild.errors import InputError, MlbuildError
from mlbuild.model.graph import RESERVED
from mlbuild.model.models import PATTERN_HINTS, Recipe, Source

FILL_IN = "FILL-IN"
_NAME = re.compile(r"^[a-z0-9][a-z0-9+_.-]*$")
_ARCHIVE = re.compile(r"\.(tar(\.(gz|xz|bz2|zst|lz|lzma|Z))?|tgz|tbz2?|txz)$")
# Folders whose C++ files do not make a C project a C++ one (zlib's contrib/iostream3).
_ASIDE = {"contrib", "test", "tests", "testing", "example", "examples", "doc", "docs", "bench", "benchmarks", "demo", "demos"}


class Line(NamedTuple):
    """One field of the recipe: its TOML key, value, and the comment saying where the value came from."""

    key: str
    value: object
    comment: str


class Fetched(NamedTuple):
    path: Path  # the tarball in the download cache
    source: dict  # the [[sources]] entry: url or debian, sha256
    origin: str  # where it came from, for the messages and the entry's comment
    fields: dict  # version, summary, homepage, license: Line each, from what the source says


class BuildSystem(NamedTuple):
    build: str  # the infrastructure: infra/configure-make, infra/cmake, infra/kconfig
    why: str  # what was found, said in the build line's comment
    vars: list  # Line each
    tools: list
    depends: list  # recipe names, before filtering to the project's
    menuconfig: bool = False
    note: str = ""  # a comment above the build line: what may still need doing


def cmd_new(project, args) -> int:
    """Write recipes/NAME.toml for a new component from its source tarball, then `mlbuild check`."""
    name, spec = args.name, args.source
    recipe_file = project.root / "recipes" / f"{name}.toml"
    _check_name(project, name, recipe_file)
    cache = project.config.download_dir
    fetched = _fetch(spec, name, cache)
    print(f"new: {fetched.path.name} from {fetched.origin}, in the download cache (sha256 {fetched.source['sha256']})")
    project.build_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=project.build_dir, prefix=f".new-{name}-") as scratch:
        tree = Path(scratch) / "source"
        from mlbuild.sources.unpack import unpack

        unpack(fetched.path, tree, 0, f"new: {fetched.path.name}")
        top = [entry for entry in tree.iterdir()]
        strip = 1 if len(top) == 1 and top[0].is_dir() and not top[0].is_symlink() else 0
        root = top[0] if strip else tree
        system = detect(root, _infrastructures(project), f"{fetched.path.name} (sha256 {fetched.source['sha256']})", name)
        licenses = _license_files(root)
    source = {**fetched.source, **({"strip_components": 0} if strip == 0 else {})}
    text = recipe_text(project, name, spec, fetched, source, system, licenses)
    _validate(text, recipe_file)
    _write_new(recipe_file, text)
    print(f"new: it builds with {system.why}: {system.build}")
    print(f"wrote {project.relative(recipe_file)}")
    _check_with_it(project, args, recipe_file)
    todo = [line.key for line in fetched.fields.values() if FILL_IN in line.comment]
    if todo:
        print(f"next: fill in {', '.join(todo)} (marked {FILL_IN} in {project.relative(recipe_file)}), "
              f"then `doit build:{name}-{project.config.arches[0]}`")
    else:
        print(f"next: `doit build:{name}-{project.config.arches[0]}`")
    return 0


def _check_name(project, name: str, recipe_file: Path) -> None:
    if not _NAME.match(name) or len(name) > 64:
        raise InputError(f"new: {name!r}: expected lowercase letters, digits and + _ . - (a safe name), "
                         "the recipe's name and its file's")
    if name in RESERVED:
        raise InputError(f"new: {name!r} is reserved for an aggregate task (reserved: {', '.join(sorted(RESERVED))})")
    if recipe_file.exists() or recipe_file.is_symlink():
        raise InputError(f"new: {project.relative(recipe_file)} exists: not overwritten (remove it first, or choose another name)")
    if name in project.recipe_files:  # an external tree's recipe of that name would replace the new one
        raise InputError(f"new: {project.recipe_label(name)} already defines {name!r}: choose another name")


def _fetch(spec: str, name: str, cache: Path) -> Fetched:
    """The source into the download cache, and what it says about the component."""
    from mlbuild.sources import download

    if spec.startswith("debian:"):
        package = spec.removeprefix("debian:")
        _validate_source({"debian": package, "sha256": "0" * 64}, f"new: {spec}")
        try:
            got = download.debian_new(package, cache)
        except MlbuildError as error:
            raise MlbuildError(f"new: {spec}: {error}") from None
        sha = got.path.parent.name
        return Fetched(got.path, {"debian": package, "sha256": sha}, f"Debian source {package}",
                       _debian_fields(package, got))
    if "://" in spec:
        url = spec
        _validate_source({"url": url, "sha256": "0" * 64}, f"new: {spec}")
        origin = spec
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(f"new: {spec}: expected a URL, debian:PACKAGE=VERSION or a tarball file "
                             f"({'not a file' if path.exists() else 'no such file'})")
        url = path.resolve().as_uri()
        origin = f"local file {path}"
    filename = download.local_name(url) or download.FALLBACK_NAME
    try:
        got = download.download(url, filename, None, cache)
    except MlbuildError as error:
        raise MlbuildError(f"new: {redact(spec)}: {error}") from None
    return Fetched(got, {"url": url, "sha256": got.parent.name}, origin, _tarball_fields(url, filename, name))


def _validate_source(entry: dict, label: str) -> None:
    from mlbuild.model.validation import describe

    try:
        Source.model_validate(entry)
    except ValidationError as error:
        raise InputError(describe(error, label, Source, PATTERN_HINTS)) from None


def _debian_fields(package: str, got) -> dict:
    from mlbuild.sources import debian_metadata

    version = got.record.get("Version", package.partition("=")[2])
    upstream = debian_metadata.upstream_version(version)
    fields = {"version": Line("version", upstream, f"Debian's {version} without epoch, revision and repacking mark")}
    said = debian_metadata.summary(got.record)
    fields["summary"] = (Line("summary", said[0], f"Debian's description of {said[1]}") if said else
                         Line("summary", f"{FILL_IN}: what {package.partition('=')[0]} is, in one line", f"{FILL_IN}: Debian's lists here have no description"))
    homepage = got.record.get("Homepage", "")
    fields["homepage"] = (Line("homepage", homepage, "the Homepage of Debian's source package") if re.match(r"^https?://", homepage) else
                          Line("homepage", f"https://{FILL_IN}.invalid/", f"{FILL_IN}: Debian's source package names no homepage"))
    spdx, words = debian_metadata.license_of(got.copyright)
    if spdx:
        fields["license"] = Line("license", spdx, f"debian/copyright, Files: *: {words}")
    else:
        why = f"Debian says {words!r}, which is no SPDX expression" if words else "Debian's packaging has no machine-readable debian/copyright"
        fields["license"] = Line("license", "NOASSERTION", f"{FILL_IN}: the SPDX expression of its license ({why})")
    return fields


def _tarball_fields(url: str, filename: str, name: str) -> dict:
    base = _ARCHIVE.sub("", filename)
    base = re.sub(r"[.-](src|source|orig)$", "", base)
    found = re.match(r"^(.*?)[-_]v?([0-9][A-Za-z0-9+_.~-]*)$", base)
    version = (Line("version", found[2], f"from the tarball's name, {filename}") if found and len(found[2]) <= 64 else
               Line("version", FILL_IN, f"{FILL_IN}: the release (not found in the tarball's name, {filename})"))
    site = re.match(r"^(https?://[^/]+/)", url)
    homepage = (Line("homepage", site[1], f"{FILL_IN}: the project's page (this is where the tarball came from)") if site else
                Line("homepage", f"https://{FILL_IN}.invalid/", f"{FILL_IN}: the project's page"))
    return {
        "version": version,
        "summary": Line("summary", f"{FILL_IN}: what {name} is, in one line", f"{FILL_IN}: shown by `doit list`"),
        "homepage": homepage,
        "license": Line("license", "NOASSERTION", f"{FILL_IN}: the SPDX expression of its license"),
    }


def _infrastructures(project) -> set[str]:
    """The infrastructures the project has: templates/build/infra/<kind>.sh.j2 (an external tree's too)."""
    return {f"infra/{path.name.removesuffix('.sh.j2')}" for folder in project.template_dirs
            for path in (folder / "build" / "infra").glob("*.sh.j2")}


def detect(root: Path, infrastructures: set[str], label: str, name: str) -> BuildSystem:
    """How the unpacked source at root builds: the first of configure, CMakeLists.txt, Kconfig, meson.build, a Makefile."""
    def have(infra: str) -> bool:
        return infra in infrastructures

    cxx = _has_cxx(root)
    runtimes = ["llvm-runtimes"] if cxx else []
    configure = root / "configure"
    if configure.is_file() and have("infra/configure-make"):
        text = configure.read_text(errors="replace")
        autoconf = "Generated by GNU Autoconf" in text
        variables = []
        if not (autoconf or "--host" in text):
            variables.append(Line("configure_host", False, "its configure knows no --host: the target comes from $CC"))
        static = "--disable-shared" if "--disable-shared" in text else "--static" if re.search(r"--static\b", text) else None
        if static:
            variables.append(Line("configure_args", [static], "static only, as everything in the target"))
        return BuildSystem("infra/configure-make", f"./configure ({'GNU Autoconf' if autoconf else 'its own, not GNU Autoconf'}'s)",
                           variables, ["make"], ["musl", "compiler-rt", *runtimes])
    if (root / "CMakeLists.txt").is_file() and have("infra/cmake"):
        return BuildSystem("infra/cmake", "CMakeLists.txt",
                           [Line("cmake_options", ["-DBUILD_SHARED_LIBS=OFF"], "static libraries, as everything in the target")],
                           ["cmake", "ninja"], ["musl", "compiler-rt", *runtimes])
    kconfig = (root / "Kconfig").is_file() or ((root / "Config.in").is_file() and (root / "scripts" / "kconfig").is_dir())
    if kconfig and have("infra/kconfig"):
        return BuildSystem("infra/kconfig", "Kconfig", [Line("kconfig_base", "defconfig", "the make target of the base configuration")],
                           ["make"], ["musl", "linux-headers", "compiler-rt"], menuconfig=True,
                           note="A kbuild Makefile takes its compiler on make's command line: if the build does not pick\n"
                                "# up the target's, add a template that extends infra/kconfig and sets the make_variables\n"
                                "# block (templates/build/busybox.sh.j2 does), and name it in build.")
    meson = (root / "meson.build").is_file()
    if meson and have("infra/meson"):
        return BuildSystem("infra/meson", "meson.build", [], ["meson", "ninja"], ["musl", "compiler-rt", *runtimes])
    makefile = next((root / name for name in ("GNUmakefile", "Makefile", "makefile") if (root / name).is_file()), None)
    if makefile and have("infra/configure-make"):
        return BuildSystem("infra/configure-make", f"a plain {makefile.name}, no configure",
                           [Line("configure", False, "no configure: the source is copied to $WORK/build, CC/AR/RANLIB and PREFIX=/usr go on make's command line")],
                           ["make"], ["musl", "compiler-rt", *runtimes],
                           note="The closest infrastructure for a plain Makefile. If its variables are not CC, AR, RANLIB\n"
                                "# and PREFIX, pass its own in make_args and install_args."
                                + ("\n# It also has meson.build: mlbuild has no meson infrastructure (templates/build/infra/)." if meson else ""))
    have_list = ", ".join(sorted(infrastructures)) or "none"
    if meson:
        raise InputError(f"new: {label} builds with meson (meson.build), and this project has no meson "
                         f"infrastructure (templates/build/infra/ has: {have_list}); the tarball is in the download cache: "
                         f"write recipes/{name}.toml with a build template of its own (docs/recipes.md)")
    looked = "configure, CMakeLists.txt, Kconfig, meson.build, Makefile"
    hint = " (configure.ac without a generated configure: a snapshot, not a release tarball)" if (
        (root / "configure.ac").is_file() or (root / "configure.in").is_file()) else ""
    raise InputError(f"new: {label}: no build system found at the top of the source (looked for {looked}){hint}; "
                     f"the tarball is in the download cache: write recipes/{name}.toml with a build template of its own "
                     f"(docs/recipes.md)")


def _has_cxx(root: Path) -> bool:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [entry for entry in dirs if entry.lower() not in _ASIDE]
        if any(file.endswith((".cc", ".cpp", ".cxx")) for file in files):
            return True
    return False


def _license_files(root: Path) -> list[str]:
    """The license texts at the top of the source, to say where to look."""
    return sorted(path.name for path in root.iterdir() if path.is_file()
                  and re.match(r"^(COPYING|LICEN[CS]E|NOTICE|COPYRIGHT)", path.name, re.I))


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's


def _line(line: Line) -> str:
    return f"{line.key} = {_toml(line.value)}  # {line.comment}\n"


def recipe_text(project, name: str, spec: str, fetched: Fetched, source: dict, system: BuildSystem, licenses: list) -> str:
    fields = dict(fetched.fields)
    if licenses and FILL_IN in fields["license"].comment:
        line = fields["license"]
        fields["license"] = line._replace(comment=f"{line.comment}; the source has {', '.join(licenses)}")
    depends = [dep for dep in system.depends if dep in project.recipes]
    left_out = [dep for dep in system.depends if dep not in project.recipes]
    out = [f"# {name}: written by `mlbuild new {name} {redact(spec)}`. Each field's comment says where its\n"
           f"# value came from; fill in those marked {FILL_IN}. docs/recipes.md explains every field.\n",
           _line(Line("name", name, f"the file's name: recipes/{name}.toml")),
           *(_line(fields[key]) for key in ("version", "summary", "homepage", "license")),
           _line(Line("depends", depends, "the C library and clang's resource dir (builtins)"
                      + (" and libc++ (it has C++ sources)" if "llvm-runtimes" in depends else "")
                      + (f"; not in this project: {', '.join(left_out)}" if left_out else "")
                      + "; add the libraries it links against"))]
    if system.note:
        out.append(f"# {system.note}\n")
    out.append(_line(Line("build", system.build, f"found {system.why}: templates/build/{system.build}.sh.j2")))
    out.append(_line(Line("tools", system.tools, "programs of the build machine it runs, checked before the build starts")))
    if system.menuconfig:
        out.append(_line(Line("menuconfig", True, f"`doit menuconfig:{name}-<arch>` (the infrastructure supports it)")))
    if system.vars:
        out.append("\n[vars]  # the infrastructure's parameters (docs/recipes.md, \"Build infrastructures\")\n")
        out.extend(_line(line) for line in system.vars)
    out.append("\n[[sources]]  # where the release comes from; more alternatives may follow, each with its own sha256\n")
    if "debian" in source:
        out.append(_line(Line("debian", source["debian"], "Debian's source archive, through a private apt state (no deb-src line needed)")))
        out.append(_line(Line("sha256", source["sha256"], f"{fetched.path.name}: apt checked it against the archive's signed index")))
    else:
        local = source["url"].startswith("file://")
        out.append(_line(Line("url", source["url"], f"{FILL_IN}: a local file no other machine has: put the upstream URL here"
                              if local else "the tarball `mlbuild new` downloaded")))
        out.append(_line(Line("sha256", source["sha256"], f"{fetched.path.name} as it was read now: compare it with the checksum "
                              "upstream publishes")))
    if "strip_components" in source:
        out.append(_line(Line("strip_components", source["strip_components"], "the tarball has no top folder")))
    return "".join(out)


def _validate(text: str, recipe_file: Path) -> None:
    """The text is a recipe the model accepts: nothing is written otherwise."""
    try:
        Recipe.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as error:
        raise MlbuildError(f"new: the recipe written for {recipe_file.name} is not valid ({error}); "
                           "this is a bug of mlbuild new") from None


def _write_new(path: Path, text: str) -> None:
    """The recipe whole or not at all, and never over a file that appeared meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.link(temporary, path)  # fails if the name exists: no overwrite, even in a race
    except FileExistsError:
        raise InputError(f"new: recipes/{path.name} exists: not overwritten") from None
    finally:
        os.unlink(temporary)


def _check_with_it(project, args, recipe_file: Path) -> None:
    """`mlbuild check` on the project as it is now, the new recipe in it."""
    from mlbuild.engine.boundary import EXPECTED, one_line
    from mlbuild.frontend.check import cmd_check
    from mlbuild.frontend.project import Project

    try:
        cmd_check(Project(project.root, getattr(args, "settings", None)), args)
    except EXPECTED as error:
        raise InputError(f"wrote {project.relative(recipe_file)}, but `mlbuild check` then failed: {one_line(error, 'check')}") from None


def add_parser(commands) -> None:
    parser = commands.add_parser("new", help=cmd_new.__doc__)
    parser.add_argument("name", help="the recipe's name: recipes/NAME.toml (lowercase letters, digits, + _ . -)")
    parser.add_argument("source", help="a URL, a local tarball, or debian:PACKAGE=VERSION (Debian's source archive)")
    parser.set_defaults(handler=cmd_new)
