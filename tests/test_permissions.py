"""Recipes declare the modes and owners of installed files ([[permissions]], as Buildroot's <pkg>_PERMISSIONS).

The target applies the modes, the images the modes and owners; the component's own build output never
carries them, so it restores from the artifact cache whole (busybox's setuid bit used to make it rebuild).
Each test changes a copy of the built synthetic project (tests/conftest.py) and rebuilds it with the real doit.
"""

import json
import stat
import subprocess

import pytest

from conftest import ALL_TASKS, ARCH, assert_stamps_valid, make_project, x86

from mlbuild.trees import hash_tree

SETUID_HELLO = {"path": "bin/hello", "mode": "4750"}
APP_OF_USER = {"path": "bin/app", "mode": "0711", "uid": 1000, "gid": 100}


def cpio_entries(archive) -> dict[str, tuple[int, int, int]]:
    """name -> (permission bits, uid, gid), read from the newc headers."""
    data, entries, offset = archive.read_bytes(), {}, 0
    while True:
        header = data[offset:offset + 110]
        mode, uid, gid = (int(header[start:start + 8], 16) for start in (14, 22, 30))
        size, name_size = int(header[54:62], 16), int(header[94:102], 16)
        name = data[offset + 110:offset + 110 + name_size - 1].decode()
        if name == "TRAILER!!!":
            return entries
        offset += 110 + name_size
        offset += -offset % 4
        entries[name] = (stat.S_IMODE(mode), uid, gid)
        offset += size + (-size % 4)


def ext4_entry(image, path: str) -> tuple[int, int, int]:
    """(permission bits, uid, gid) of path in an ext4 image, from debugfs."""
    result = subprocess.run(["debugfs", "-R", f"stat {path}", str(image)], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    words = result.stdout.replace(":", " ").split()
    assert "Mode" in words, result.stdout + result.stderr
    return (stat.S_IMODE(int(words[words.index("Mode") + 1], 8)),
            int(words[words.index("User") + 1]), int(words[words.index("Group") + 1]))


def mode_of(path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def images(project):
    folder = project.path(f"build/images/{ARCH}")
    return folder / "initramfs.cpio", folder / "rootfs.ext4"


def test_declared_modes_reach_the_target_and_both_images_with_their_owners_and_rebuild_no_component(built):
    built.update_recipe("hello", permissions=[SETUID_HELLO])
    built.update_recipe("app", permissions=[APP_OF_USER])
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("target", "images")  # not an input of the components' builds
    target = built.path(f"target/{ARCH}")
    assert mode_of(target / "bin/hello") == 0o4750
    assert mode_of(target / "bin/app") == 0o711
    # The components' own outputs stay as their scripts made them: nothing for the cache to drop.
    assert mode_of(built.path(f"build/out/hello-{ARCH}/bin/hello")) == 0o755
    assert mode_of(built.path(f"build/out/app-{ARCH}/bin/app")) == 0o755
    initramfs, ext4 = images(built)
    packed = cpio_entries(initramfs)
    assert packed["bin/hello"] == (0o4750, 0, 0)
    assert packed["bin/app"] == (0o711, 1000, 100)
    assert packed["bin/extra"] == (0o755, 0, 0)  # undeclared: the normal mode, root's
    assert ext4_entry(ext4, "/bin/hello") == (0o4750, 0, 0)
    assert ext4_entry(ext4, "/bin/app") == (0o711, 1000, 100)
    assert ext4_entry(ext4, "/bin/extra") == (0o755, 0, 0)
    assert "declared permissions: /bin/app 0711, /bin/hello 4750" in built.log(f"build:target-{ARCH}")
    assert_stamps_valid(built)


@pytest.mark.slow
def test_changing_a_mode_reruns_target_and_images_and_an_owner_only_the_images(built):
    built.update_recipe("hello", permissions=[SETUID_HELLO])
    assert built.doit().executed == x86("target", "images")
    built.update_recipe("hello", permissions=[{**SETUID_HELLO, "mode": "0700"}])
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("target", "images")
    assert mode_of(built.path(f"target/{ARCH}/bin/hello")) == 0o700
    built.update_recipe("hello", permissions=[{**SETUID_HELLO, "mode": "0700", "uid": 7, "gid": 8}])
    result = built.doit()
    assert result.executed == x86("images")  # the target has no owners: nothing of it changed
    assert cpio_entries(images(built)[0])["bin/hello"] == (0o700, 7, 8)
    built.update_recipe("hello", permissions=[])
    result = built.doit()
    assert result.executed == x86("target", "images")
    assert mode_of(built.path(f"target/{ARCH}/bin/hello")) == 0o755
    assert cpio_entries(images(built)[0])["bin/hello"] == (0o755, 0, 0)


def test_an_arch_entry_replaces_the_recipes_entry_of_the_same_path(built):
    built.update_recipe("hello", permissions=[SETUID_HELLO], arch={ARCH: {"permissions": [{"path": "bin/hello", "mode": "0750"}]}})
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert mode_of(built.path(f"target/{ARCH}/bin/hello")) == 0o750


def test_a_declared_path_that_the_target_lacks_is_one_line_naming_the_recipe_and_path(built):
    built.update_recipe("app", permissions=[{"path": "bin/ap", "mode": "0755"}])
    result = built.doit()
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    line = f"recipes/app.toml: permissions: no bin/ap in target/{ARCH}/ (no component, overlay or mlbuild installs it)"
    assert [text for text in (result.stdout + result.stderr).splitlines() if "bin/ap" in text] == [f"build:target-{ARCH}: {line}"]
    assert mode_of(built.path(f"target/{ARCH}/bin/app")) == 0o755  # the old target stays, untouched


def test_a_declared_symbolic_link_is_one_line(built):
    built.edit("templates/build/hello.sh.j2", 'cp hello "$OUT/bin/hello"', 'cp hello "$OUT/bin/hello"\nln -s hello "$OUT/bin/hi"')
    built.update_recipe("hello", permissions=[{"path": "bin/hi", "mode": "4755"}])
    result = built.doit()
    assert result.returncode != 0
    assert f"recipes/hello.toml: permissions: bin/hi is a symbolic link in target/{ARCH}/; declare the file it points to" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_two_recipes_declaring_the_same_path_is_one_line(project):
    project.update_recipe("hello", permissions=[SETUID_HELLO])
    project.update_recipe("app", permissions=[{"path": "bin/hello", "mode": "0755"}])
    result = project.doit()
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == "mlbuild: recipes/hello.toml: permissions: bin/hello is declared by recipes/app.toml too\n"


# name: (the permissions of recipes/app.toml, the whole expected stderr line)
BAD_PERMISSIONS = {
    "mode-not-octal": ([{"path": "bin/app", "mode": "999"}],
                       """recipes/app.toml: permissions[0].mode: expected an octal mode of 3 or 4 digits, such as "4755", got '999'"""),
    "mode-too-long": ([{"path": "bin/app", "mode": "04755"}],
                      """recipes/app.toml: permissions[0].mode: expected an octal mode of 3 or 4 digits, such as "4755", got '04755'"""),
    # A TOML number would be read as decimal (4755 is not 0o4755): text only.
    "mode-a-number": ([{"path": "bin/app", "mode": 4755}],
                      """recipes/app.toml: permissions[0].mode: expected the mode as octal text in quotes, such as "4755", got 4755"""),
    "path-with-dot-dot": ([{"path": "bin/../../etc/passwd", "mode": "0644"}],
                          "recipes/app.toml: permissions[0].path: expected a path inside the target, without '..', got 'bin/../../etc/passwd'"),
    "absolute-path": ([{"path": "/bin/app", "mode": "0755"}],
                      "recipes/app.toml: permissions[0].path: expected a path relative to the target root (bin/busybox, not /bin/busybox), got '/bin/app'"),
    "path-not-plain": ([{"path": "bin//app", "mode": "0755"}],
                       "recipes/app.toml: permissions[0].path: expected a plain path, without '.', '//' or a trailing '/', got 'bin//app'"),
    "path-with-a-space": ([{"path": "bin/my app", "mode": "0755"}],
                          "recipes/app.toml: permissions[0].path: expected a path in the target of letters, digits and _ . + / -, got 'bin/my app'"),
    "negative-uid": ([{"path": "bin/app", "mode": "0755", "uid": -1}],
                     "recipes/app.toml: permissions[0].uid: Input should be greater than or equal to 0"),
    "unknown-key": ([{"path": "bin/app", "mode": "0755", "owner": "root"}],
                    "recipes/app.toml: permissions[0].owner: unknown field (expected one of: gid, mode, path, uid)"),
    "missing-mode": ([{"path": "bin/app"}], "recipes/app.toml: permissions[0].mode: required field is missing"),
    "same-path-twice": ([{"path": "bin/app", "mode": "0755"}, {"path": "bin/app", "mode": "4755"}],
                        "recipes/app.toml: permissions: bin/app is declared twice"),
}


@pytest.mark.parametrize("case", BAD_PERMISSIONS, ids=list(BAD_PERMISSIONS))
def test_a_bad_permissions_entry_exits_2_with_one_line_naming_file_and_field(case, project):
    permissions, message = BAD_PERMISSIONS[case]
    project.update_recipe("app", permissions=permissions)
    result = project.doit()
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"mlbuild: {message}\n"
    assert result.executed == set()


def test_permissions_of_a_recipe_that_installs_nothing_into_the_target_are_refused(project):
    project.update_recipe("app", target=False, permissions=[{"path": "bin/app", "mode": "0755"}])
    result = project.doit()
    assert result.returncode == 2
    assert result.stderr == ("mlbuild: recipes/app.toml: permissions: only a recipe that installs into the target "
                             "(build, target = true, not host) declares permissions\n")


# --- the artifact cache ----------------------------------------------------------------------

def restored(result) -> set[str]:
    return {line.split(": restored from ")[0] for line in result.stdout.splitlines() if ": restored from " in line}


def test_a_component_with_a_declared_setuid_file_restores_whole_and_the_target_gets_its_mode_back(tmp_path):
    cache = (tmp_path / "cache").as_uri()
    cold = make_project(tmp_path / "cold")
    cold.update_recipe("hello", permissions=[SETUID_HELLO])
    first = cold.doit(f"cache={cache}")
    assert first.returncode == 0, first.stdout + first.stderr
    fresh = make_project(tmp_path / "fresh")  # a fresh clone: same recipes, empty build folders
    fresh.update_recipe("hello", permissions=[SETUID_HELLO])
    result = fresh.doit(f"cache={cache}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == ALL_TASKS
    assert restored(result) == x86("hello", "extra", "app", "target", "images")  # busybox's case: it rebuilt every time
    assert "unusable" not in result.stderr and "building locally" not in result.stderr
    assert "# running" not in fresh.log(f"build:hello-{ARCH}")
    for folder in (f"build/out/hello-{ARCH}", f"target/{ARCH}", f"build/images/{ARCH}"):
        assert hash_tree(fresh.path(folder)) == hash_tree(cold.path(folder)), folder
    assert mode_of(fresh.path(f"target/{ARCH}/bin/hello")) == 0o4750  # the declared mode, set again after the restore
    assert cpio_entries(images(fresh)[0])["bin/hello"] == (0o4750, 0, 0)
    assert_stamps_valid(fresh)


def test_an_output_that_carries_a_setuid_bit_itself_is_never_restored_with_it(tmp_path):
    # Why the bit is declared, not chmod-ed by the build script: the cache drops set-id bits, the
    # restored tree then differs from the built one, and the task is built locally every time.
    cache = tmp_path / "cache"
    cold = make_project(tmp_path / "cold")
    cold.edit("templates/build/hello.sh.j2", 'cp hello "$OUT/bin/hello"', 'cp hello "$OUT/bin/hello"\nchmod 4755 "$OUT/bin/hello"')
    assert cold.doit(f"cache={cache.as_uri()}").returncode == 0
    manifest = next(json.loads(path.read_text()) for path in cache.glob("*/manifest.json")
                    if json.loads(path.read_text())["task"] == f"build:hello-{ARCH}")
    assert manifest["entries"]["bin/hello"]["mode"] == 0o4755
    fresh = make_project(tmp_path / "fresh")
    fresh.edit("templates/build/hello.sh.j2", 'cp hello "$OUT/bin/hello"', 'cp hello "$OUT/bin/hello"\nchmod 4755 "$OUT/bin/hello"')
    result = fresh.doit(f"cache={cache.as_uri()}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"build:hello-{ARCH}" not in restored(result)
    assert "# running" in fresh.log(f"build:hello-{ARCH}")
