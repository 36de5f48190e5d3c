#!/usr/bin/env python3
"""Build the small systems twice, as differently as one machine allows, and compare the results byte for byte.

    scripts/reproducibility.py [--arches x86_64 arm64] [--work DIR] [--rev HEAD] [--separate-ccache] [--resume]
                               [--other-user NAME | --same-user] [--shift-clock +3d | --real-clock]

Two fresh clones of this repository (at --rev) in two different absolute paths, each with its
own build folders, build `build:images-<arch>` with MLBUILD_TARGET_LLVM=0 and no artifact cache:
the first under umask 022, TZ=UTC and a UTF-8 locale, the second under umask 077,
TZ=Asia/Tokyo and the POSIX locale, minutes later; run as root, the second build runs as
another user (--other-user, created as a system user if missing; its own Python venv from
the system's python3, its own HOME, a copy of the ccache), and, where Debian's faketime is
installed, with the clock shifted (--shift-clock, default three days ahead, libfaketime
under every process of the build, build scripts included through pass_environment). ccache is the shared one unless
--separate-ccache (then both start from an empty cache of their own: much slower). The unpacked
sources are inputs, not results: the second clone gets hard links to the first's (fetch tasks
and their stamps), which saves unpacking 3.4 GB again. --resume keeps the clones of an
interrupted run (at the same commit) and lets mlbuild's incremental builds carry on.

Compared per arch: initramfs.cpio (and its .zst), rootfs.ext4, disk.img (build:disk-<arch>, where the arch has
one: a GPT disk for UEFI firmware), the kernel image in target/<arch>/boot and every
file of target/<arch> (content, mode, link target), also packed as a deterministic tarball.
On a mismatch diffoscope (Debian's diffoscope-minimal) writes a report per differing file into
<work>/diffoscope/. The summary goes to stdout and <work>/result.json; exit status 0 only when
everything is identical.
"""

import argparse
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mlbuild.model.arches import load_arches  # noqa: E402
from mlbuild.model.config import load_config  # noqa: E402
from mlbuild.model.external import arch_files, trees  # noqa: E402
from mlbuild.trees import hash_file as _sha256  # noqa: E402

# The two builders: everything but the inputs differs.
BUILDERS = [
    {"path": "first/mlbuild", "umask": 0o022, "env": {"TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}},
    {"path": "second/somewhere/much/deeper/mlbuild-clone", "umask": 0o077,
     "env": {"TZ": "Asia/Tokyo", "LANG": "POSIX", "LC_ALL": "POSIX"}},
]
EPOCH = 1672531200


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    known = load_arches(arch_files(trees(REPO, []))).names  # arches/<name>.toml
    default = load_config(REPO, environ={}).arches or known  # pyproject.toml's arches
    parser.add_argument("--arches", nargs="+", default=default, choices=known)
    parser.add_argument("--work", type=Path, default=REPO / "build" / "reproducibility")
    parser.add_argument("--rev", default="HEAD", help="the commit both clones build (default: HEAD)")
    parser.add_argument("--separate-ccache", action="store_true", help="an empty ccache for each build")
    parser.add_argument("--resume", action="store_true", help="carry on with the clones of an interrupted run")
    parser.add_argument("--other-user", default="mlbuild-repro", help="the second build's user (root only; default mlbuild-repro)")
    parser.add_argument("--same-user", action="store_true", help="both builds as the caller")
    parser.add_argument("--shift-clock", default="+3d", help="faketime's offset for the second build (default +3d)")
    parser.add_argument("--real-clock", action="store_true", help="no faketime")
    args = parser.parse_args()
    other = None if args.same_user or os.geteuid() != 0 else _other_user(args.other_user)
    shift = None if args.real_clock or shutil.which("faketime") is None else args.shift_clock
    BUILDERS[1].update(user=args.other_user if other else None, clock=shift)
    work = args.work.resolve()
    rev = _git("rev-parse", args.rev).strip()
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    print(f"reproducibility: {rev[:12]}, arches {' '.join(args.arches)}, in {work}", flush=True)

    roots, timings = [], []
    for number, builder in enumerate(BUILDERS, 1):
        root = work / builder["path"]
        if not (args.resume and _at_commit(root, rev)):
            shutil.rmtree(root, ignore_errors=True)
            root.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(root)], check=True)
            subprocess.run(["git", "checkout", "-q", rev], cwd=root, check=True)
        if roots:
            _share_sources(roots[0], root)
        ccache = work / f"ccache-{number}" if args.separate_ccache else None
        python = sys.executable
        if builder.get("user"):
            python, ccache = _as_other_user(root, work, number, other, ccache)
        seconds = _build(root, builder, args.arches, work / f"build-{number}.log", ccache, python,
                         other if builder.get("user") else None)
        roots.append(root)
        timings.append(round(seconds))
        print(f"reproducibility: build {number} in {root} ({timings[-1]} s)", flush=True)

    result = {"commit": rev, "arches": args.arches, "build_seconds": timings, "separate_ccache": args.separate_ccache,
              "builders": [{**b, "umask": f"{b['umask']:03o}", "path": str(work / b["path"])} for b in BUILDERS],
              "identical": [], "different": []}
    for arch in args.arches:
        for label, first, second in _pairs(roots, arch, work):
            same = first.read_bytes() == second.read_bytes()
            entry = {"arch": arch, "file": label, "sha256": _sha256(first)}
            if same:
                result["identical"].append(entry)
            else:
                entry["sha256"] = [_sha256(first), _sha256(second)]
                entry["report"] = _diffoscope(first, second, work / "diffoscope" / f"{arch}-{label.replace('/', '_')}.txt")
                result["different"].append(entry)
        differing_files = _tree_differences(roots[0] / "target" / arch, roots[1] / "target" / arch)
        if differing_files:
            result["different"].append({"arch": arch, "file": f"target/{arch}/", "paths": differing_files[:200]})
        else:
            result["identical"].append({"arch": arch, "file": f"target/{arch}/ (every file, mode and link)"})
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    for entry in result["identical"]:
        print(f"identical  {entry['arch']:7} {entry['file']}")
    for entry in result["different"]:
        detail = entry.get("report") or ", ".join(entry.get("paths", [])[:10])
        print(f"DIFFERENT  {entry['arch']:7} {entry['file']}: {detail}")
    print(f"reproducibility: {'identical' if not result['different'] else 'DIFFERENT'}; {work / 'result.json'}")
    return 0 if not result["different"] else 1


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def _at_commit(root: Path, rev: str) -> bool:
    if not (root / ".git").exists():
        return False  # not cloned yet (an interrupted run may have stopped before)
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip() == rev


def _share_sources(first: Path, second: Path) -> None:
    """Hard links to the first clone's unpacked sources and their fetch stamps (valid in any folder)."""
    source = first / "build" / "src"
    if not source.is_dir() or (second / "build" / "src").exists():
        return
    (second / "build" / "state").mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(source), str(second / "build" / "src")], check=True)
    for stamp in (first / "build" / "state").glob("fetch_*"):
        shutil.copy2(stamp, second / "build" / "state" / stamp.name)


def _other_user(name: str) -> tuple[int, int]:
    """uid and gid of the second builder, a system user made now if there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _as_other_user(root: Path, work: Path, number: int, owner: tuple[int, int], ccache: Path | None) -> tuple[str, Path]:
    """Give the other user the clone (not the shared sources: read-only for it), a venv and a ccache of its own.

    The venv comes from the system's python3: the caller's may live below a home folder no one else may enter."""
    venv = work / f"venv-{number}"
    if not (venv / "bin" / "python").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", str(root)], check=True)
    if ccache is None:  # the shared ccache, as a copy the other user may write
        ccache = work / f"ccache-{number}"
        if not ccache.exists():
            default = Path(os.environ.get("MLBUILD_CCACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlbuild" / "ccache")
            if default.is_dir():
                subprocess.run(["cp", "-a", str(default), str(ccache)], check=True)
    for folder in (ccache, work / f"home-{number}"):
        folder.mkdir(parents=True, exist_ok=True)
    uid, gid = owner
    shared = root / "build" / "src"
    for folder in (root, venv, ccache, work / f"home-{number}"):
        subprocess.run(["find", str(folder), "-path", str(shared), "-prune", "-o", "-exec", "chown", "-h", f"{uid}:{gid}", "{}", "+"],
                       check=True)
    return str(venv / "bin" / "python"), ccache


def _build(root: Path, builder: dict, arches: list[str], log: Path, ccache: Path | None, python: str = sys.executable,
           owner: tuple[int, int] | None = None) -> float:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLBUILD_", "CCACHE_", "LC_"))}
    environment.update(builder["env"])
    environment.update(MLBUILD_TARGET_LLVM="0", MLBUILD_CACHE="", MLBUILD_ARCHES=" ".join(arches), MLBUILD_PROGRESS="plain")
    if ccache is not None:
        environment["MLBUILD_CCACHE_DIR"] = str(ccache)
    command = [python, "-m", "doit", "-n", "2", *(f"build:images-{arch}" for arch in arches),
               *(f"build:disk-{arch}" for arch in arches if _has_disk(arch))]
    if builder.get("clock"):
        command = ["faketime", "-f", builder["clock"], *command]
        # Build scripts get a fixed environment: libfaketime reaches them only when passed on.
        environment["MLBUILD_PASS_ENVIRONMENT"] = "LD_PRELOAD,FAKETIME"
    if owner:
        home = log.parent / f"home-{log.stem.split('-')[-1]}"
        environment.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), USER=builder["user"], LOGNAME=builder["user"])

    def become_builder():
        if owner:
            os.setgroups([])
            os.setgid(owner[1])
            os.setuid(owner[0])
        os.umask(builder["umask"])

    started = time.monotonic()
    with open(log, "a") as output:
        if owner:
            os.chown(log, *owner)
        status = subprocess.run(command, cwd=root, env=environment, stdout=output, stderr=subprocess.STDOUT,
                                preexec_fn=become_builder).returncode
    if status != 0:
        sys.exit(f"reproducibility: the build in {root} failed (exit status {status}); log: {log}")
    return time.monotonic() - started


def _has_disk(arch: str) -> bool:
    """Whether the arch's file says how firmware boots it ([firmware]): then build:disk-<arch> makes disk.img."""
    return load_arches(arch_files(trees(REPO, [])))[arch].firmware is not None


def _pairs(roots: list[Path], arch: str, work: Path):
    """(label, first file, second file) of every single-file result compared for arch."""
    for name in ("initramfs.cpio", "initramfs.cpio.zst", "rootfs.ext4"):
        yield f"images/{name}", *(root / "build" / "images" / arch / name for root in roots)
    if _has_disk(arch):
        yield "disks/disk.img", *(root / "build" / "disks" / arch / "disk.img" for root in roots)
    for kernel in sorted((roots[0] / "target" / arch / "boot").glob("*Image")):  # bzImage, Image
        yield f"boot/{kernel.name}", *(root / "target" / arch / "boot" / kernel.name for root in roots)
    tarballs = []
    for number, root in enumerate(roots, 1):
        tarball = work / f"target-{arch}-{number}.tar"
        _pack(root / "target" / arch, tarball)
        tarballs.append(tarball)
    yield "target.tar", *tarballs


def _pack(root: Path, tarball: Path) -> None:
    """A tarball that depends only on the tree's names, contents, modes and link targets."""
    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = EPOCH
        return info

    with tarfile.open(tarball, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix()):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False, filter=normalise)


def _tree_differences(first: Path, second: Path) -> list[str]:
    def listing(root: Path) -> dict[str, tuple]:
        found = {}
        for path in root.rglob("*"):
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = _sha256(path)
            else:
                content = ""
            found[path.relative_to(root).as_posix()] = (oct(info.st_mode), content)
        return found

    a, b = listing(first), listing(second)
    return sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))


def _diffoscope(first: Path, second: Path, report: Path) -> str:
    """diffoscope's text report of two differing files; its path, or why there is none."""
    if shutil.which("diffoscope") is None:
        return "no report: diffoscope is not installed (scripts/setup.sh installs diffoscope-minimal)"
    report.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["nice", "-n", "10", "diffoscope", "--text", str(report), "--max-report-size", "20000000",
                        str(first), str(second)], capture_output=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return f"no report: diffoscope took more than 30 minutes on {first.name}"
    return str(report)


if __name__ == "__main__":
    sys.exit(main())
