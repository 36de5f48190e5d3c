"""Unpack a source tarball, refusing anything that would land outside the destination."""

import posixpath
import tarfile
from pathlib import Path

from .errors import MlbuildError


def _stripped(name: str, strip: int) -> str | None:
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return "/".join(parts[strip:]) or None


def _check_member(member: tarfile.TarInfo, name: str, archive: str) -> None:
    def refuse(why: str):
        raise MlbuildError(f"{archive}: refusing member {member.name!r}: {why}")

    if member.name.startswith("/") or ".." in member.name.split("/"):
        refuse("its path leaves the destination")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        refuse("device files and fifos are not unpacked")
    if member.issym():
        target = member.linkname
        if target.startswith("/"):
            refuse(f"symbolic link to an absolute path {target!r}")
        if posixpath.normpath(posixpath.join(posixpath.dirname(name), target)).split("/")[0] == "..":
            refuse(f"symbolic link {target!r} points outside the destination")
    if member.islnk() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
        refuse(f"hard link to {member.linkname!r} outside the destination")


def unpack(archive: Path, destination: Path, strip_components: int, label: str | None = None) -> None:
    """Extract archive into destination (which must not exist yet)."""
    label = label or archive.name
    destination.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                name = _stripped(member.name, strip_components)
                if name is None:
                    continue
                _check_member(member, name, label)
                member = member.replace(name=name, deep=False)
                if member.islnk():
                    link = _stripped(member.linkname, strip_components)
                    if link is None:
                        raise MlbuildError(f"{label}: refusing member {name!r}: hard link into stripped folders")
                    member = member.replace(linkname=link, deep=False)
                # tarfile's own 'data' filter checks once more and drops setuid and device bits.
                tar.extract(member, destination, filter="data")
    except tarfile.FilterError as error:
        raise MlbuildError(f"{label}: refusing member: {error}") from None
    except tarfile.TarError as error:
        raise MlbuildError(f"{label}: not a readable tar archive: {error}") from None
