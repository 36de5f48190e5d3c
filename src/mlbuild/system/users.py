"""Accounts of the target: /etc/passwd, /etc/group and /etc/shadow from the configuration's users and groups tables.

Written as files into the target tree, so no root (no useradd, no chown) is needed on the
build machine; the images give every file its owner and mode (etc/shadow: SHADOW_MODE).
"""

from pathlib import Path

from mlbuild.errors import MlbuildError

# Only root reads the password hashes (busybox login and su run as root).
SHADOW_MODE = 0o600
# Every file the accounts are written to, with its mode in the target and the images.
FILES = {"etc/passwd": 0o644, "etc/group": 0o644, "etc/shadow": SHADOW_MODE}
# The account every system has; a [[users]] entry named root replaces it (e.g. to give it a password).
ROOT = {"name": "root", "uid": 0, "gid": 0, "home": "/root", "shell": "/bin/sh", "comment": "root", "password": None, "groups": []}
# Days since 1970 of SOURCE_DATE_EPOCH (2023-01-01): the "last password change" field, fixed for reproducibility.
LAST_CHANGE = 1672531200 // 86400
LOCKED = "!"


def accounts(config) -> tuple[list[dict], list[dict]]:
    """(users, groups) as plain dicts, root first, then in the configuration's order."""
    users = [{**user.model_dump(), "home": home_of(user)} for user in config.users]
    if not any(user["name"] == "root" for user in users):
        users.insert(0, dict(ROOT))
    groups = [group.model_dump() for group in config.groups]
    named = {group["name"] for group in groups}
    if "root" not in named:
        groups.insert(0, {"name": "root", "gid": 0, "members": []})
        named.add("root")
    # A user without gid gets a group of its own name (gid = uid), as useradd does.
    for user in users:
        if user["gid"] is None:
            if user["name"] not in named:
                groups.append({"name": user["name"], "gid": user["uid"], "members": []})
                named.add(user["name"])
            user["gid"] = next(group["gid"] for group in groups if group["name"] == user["name"])
    for user in users:  # supplementary groups list their members
        for name in user["groups"]:
            group = next(group for group in groups if group["name"] == name)
            if user["name"] not in group["members"]:
                group["members"] = [*group["members"], user["name"]]
    return users, groups


def files(config) -> dict[str, str]:
    """{path in the target: text} of passwd, group and shadow."""
    users, groups = accounts(config)
    passwd = "".join(f"{u['name']}:x:{u['uid']}:{u['gid']}:{u['comment']}:{u['home']}:{u['shell']}\n" for u in users)
    group = "".join(f"{g['name']}:x:{g['gid']}:{','.join(g['members'])}\n" for g in groups)
    shadow = "".join(f"{u['name']}:{u['password'] or LOCKED}:{LAST_CHANGE}:0:99999:7:::\n" for u in users)
    return {"etc/passwd": passwd, "etc/group": group, "etc/shadow": shadow}


def check_shells(config, root: Path, task: str) -> None:
    """Every user's shell is a program of the target (a typo would lock the account out)."""
    for user in config.users:  # root's default /bin/sh is the system's business, not the user's
        path = root / user.shell.lstrip("/")
        if not (path.exists() or path.is_symlink()):
            raise MlbuildError(f"{task}: users.{user.name}.shell: {user.shell} is not in the target "
                               "(expected a program a component or an overlay installs)")


def home_of(user) -> str:
    return user.home or ("/root" if user.name == "root" else f"/home/{user.name}")


def home_owners(config) -> dict[str, tuple[int, int]]:
    """{home folder (relative): (uid, gid)} of the users whose home the target makes: the images give it to them."""
    users, _ = accounts(config)
    made = set(homes(config))
    return {user["home"].lstrip("/"): (user["uid"], user["gid"]) for user in users if user["home"].lstrip("/") in made}


def homes(config) -> list[str]:
    """Home folders to create in the target (relative paths), for users that ask for one."""
    return [home_of(user).lstrip("/") for user in config.users if user.create_home and home_of(user) != "/"]
