"""Customising the system (issue 15): overlays, hooks, users and groups, image profiles.

Each test changes a copy of the built synthetic project (tests/conftest.py) and rebuilds it with the real doit.
"""

import os
import stat
import subprocess

from conftest import ARCH, x86

BINARY = bytes(range(256)) * 4 + b"\x00\xff\xfe not utf-8 \x80"
# A script full of what jinja would take for its own syntax ({# starts a jinja comment).
SCRIPT = '#!/bin/sh\n# {{ not a template }} {% neither %}\nn=${#1}\necho "${1:-none} has ${n} characters"\n'


def cpio_entries(archive) -> dict[str, tuple[int, bytes]]:
    """name -> (st_mode, data), read from the newc headers."""
    data, entries, offset = archive.read_bytes(), {}, 0
    while True:
        header = data[offset:offset + 110]
        mode, size, name_size = int(header[14:22], 16), int(header[54:62], 16), int(header[94:102], 16)
        name = data[offset + 110:offset + 110 + name_size - 1].decode()
        if name == "TRAILER!!!":
            return entries
        offset += 110 + name_size
        offset += -offset % 4
        entries[name] = (mode, data[offset:offset + size])
        offset += size + (-size % 4)


def ext4(image, command: str) -> str:
    result = subprocess.run(["debugfs", "-R", command, str(image)], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return result.stdout


def ext4_mode(image, path: str) -> int | None:
    for line in ext4(image, f"stat {path}").splitlines():
        if "Mode:" in line:
            return int(line.split("Mode:")[1].split()[0], 8)
    return None


def configure(project, text: str) -> None:
    """Append to [tool.mlbuild] (the last table of the synthetic pyproject.toml)."""
    project.write("pyproject.toml", project.read("pyproject.toml") + text)


def make_overlay(project, folder: str = "overlay") -> None:
    project.path(f"{folder}/usr/share/blob").parent.mkdir(parents=True)
    project.path(f"{folder}/usr/share/blob").write_bytes(BINARY)
    project.write(f"{folder}/usr/bin/count", SCRIPT)
    os.chmod(project.path(f"{folder}/usr/bin/count"), 0o755)
    project.write(f"{folder}/etc/private.conf", "secret=1\n")
    os.chmod(project.path(f"{folder}/etc/private.conf"), 0o600)
    project.path(f"{folder}/usr/bin/counter").symlink_to("count")
    project.write(f"{folder}/etc/issue.j2", "mlbuild {{ arch }} with hello {{ versions.hello }}\n")


def images(project):
    return project.path(f"build/images/{ARCH}/initramfs.cpio"), project.path(f"build/images/{ARCH}/rootfs.ext4")


# --- overlays --------------------------------------------------------------------------

def test_an_overlay_lands_byte_for_byte_with_modes_and_links_and_only_j2_files_are_rendered(built):
    make_overlay(built)
    configure(built, 'overlays = ["overlay"]\n')
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("target", "images")  # no component rebuilds for an overlay
    target = built.path(f"target/{ARCH}")
    assert (target / "usr/share/blob").read_bytes() == BINARY
    assert (target / "usr/bin/count").read_text() == SCRIPT
    assert stat.S_IMODE((target / "usr/bin/count").stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "etc/private.conf").stat().st_mode) == 0o600
    assert os.readlink(target / "usr/bin/counter") == "count"
    assert (target / "etc/issue").read_text() == "mlbuild x86_64 with hello 1.0\n"
    assert not (target / "etc/issue.j2").exists()
    # The script runs as written: ${#1} is the shell's, not jinja's.
    ran = subprocess.run([target / "usr/bin/counter", "abcd"], capture_output=True, text=True, timeout=10)
    assert ran.stdout == "abcd has 4 characters\n"
    # Both images hold it: the same bytes, the link, the executable bit.
    cpio, disk = images(built)
    entries = cpio_entries(cpio)
    assert entries["usr/share/blob"][1] == BINARY
    assert entries["usr/bin/counter"] == (stat.S_IFLNK | 0o777, b"count")
    assert stat.S_IMODE(entries["usr/bin/count"][0]) == 0o755
    assert ext4(disk, "cat /usr/bin/count") == SCRIPT
    assert ext4_mode(disk, "/usr/bin/count") & 0o7777 == 0o755
    # Nothing to do the second time; changing the binary file redoes the target and the images only.
    assert built.doit().executed == set()
    built.path("overlay/usr/share/blob").write_bytes(BINARY + b"!")
    again = built.doit()
    assert again.executed == x86("target", "images")
    assert cpio_entries(cpio)["usr/share/blob"][1] == BINARY + b"!"


def test_an_overlay_replaces_a_component_file_and_a_later_overlay_wins(built):
    built.write("first/bin/hello", "#!/bin/sh\necho first\n")
    built.write("second/bin/hello", "#!/bin/sh\necho second\n")
    os.chmod(built.path("second/bin/hello"), 0o755)
    configure(built, 'overlays = ["first", "second"]\n')
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert built.run_binary("hello") == "second\n"
    assert "/bin/hello replaces the file of" in built.log(f"build:target-{ARCH}")


def test_binary_files_and_dollar_brace_scripts_under_templates_target_are_copied_not_rendered(built):
    built.path("templates/target/usr/share/logo.bin").parent.mkdir(parents=True)
    built.path("templates/target/usr/share/logo.bin").write_bytes(BINARY)
    built.write("templates/target/etc/init.d/S50count", SCRIPT)
    os.chmod(built.path("templates/target/etc/init.d/S50count"), 0o755)
    listed = built.doit("list")
    assert listed.returncode == 0, listed.stderr  # a binary file there used to crash doit list
    check = built.cli("check")
    assert check.returncode == 0, check.stderr
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    target = built.path(f"target/{ARCH}")
    assert (target / "usr/share/logo.bin").read_bytes() == BINARY
    assert (target / "etc/init.d/S50count").read_text() == SCRIPT
    assert stat.S_IMODE((target / "etc/init.d/S50count").stat().st_mode) == 0o755
    assert (target / "etc/hostname").read_text() == "mlbuild-x86_64\n"  # .j2 files are still rendered


def test_overlay_errors_are_one_line_naming_the_file(built):
    configure(built, 'overlays = ["missing"]\n')
    result = built.doit("list")
    assert result.returncode != 0
    assert "missing: expected a folder (an overlay), found nothing" in result.stderr
    assert "Traceback" not in result.stderr
    built.edit("pyproject.toml", 'overlays = ["missing"]', 'overlays = ["overlay"]')
    built.write("overlay/etc/motd.j2", "{{ arch }\n")
    result = built.doit("list")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "overlay/etc/motd.j2:1:" in result.stderr
    built.edit("pyproject.toml", 'overlays = ["overlay"]', 'overlays = ["overlay/../../outside"]')
    result = built.doit("list")
    assert "overlays: expected a path inside the project, without '..'" in result.stderr, result.stderr


# --- hooks -----------------------------------------------------------------------------

POST_BUILD = """#!/bin/sh
set -eu
test "$1" = "$TARGET_DIR"
test -x "$TARGET_DIR/bin/hello"
printf '%s\\n' "arch=$ARCH" "triple=$TRIPLE" "profile=$IMAGE_PROFILE" "hook=$MLBUILD_HOOK" "epoch=$SOURCE_DATE_EPOCH" \\
    > "$TARGET_DIR/etc/build-info"
test "$PWD" = "$PROJECT_DIR"
test -d "$BUILD_DIR/state"
"""
POST_IMAGE = """#!/bin/sh
set -eu
test "$1" = "$IMAGES_DIR"
ls "$IMAGES_DIR" > "$IMAGES_DIR/contents.txt"
test -f "$TARGET_DIR/etc/build-info"
"""


def add_hooks(project) -> None:
    project.write("hooks/post-build.sh", POST_BUILD)
    project.write("hooks/post-image.sh", POST_IMAGE)
    os.chmod(project.path("hooks/post-build.sh"), 0o755)
    os.chmod(project.path("hooks/post-image.sh"), 0o755)
    configure(project, 'post_build = ["hooks/post-build.sh"]\npost_image = ["hooks/post-image.sh"]\n')


def test_hooks_run_on_the_tree_and_the_images_with_their_environment_and_editing_one_reruns_what_follows(built):
    add_hooks(built)
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("target", "images")
    info = built.read(f"target/{ARCH}/etc/build-info").splitlines()
    # runtime: image_profile is auto and no recipe of the synthetic project needs the full tree (no compiler inside).
    assert info == ["arch=x86_64", "triple=x86_64-unknown-linux-musl", "profile=runtime", "hook=post-build", "epoch=1672531200"]
    cpio, _ = images(built)
    assert "etc/build-info" in cpio_entries(cpio)  # post-build runs before the images are packed
    assert built.read(f"build/images/{ARCH}/contents.txt").split() == ["contents.txt", "initramfs.cpio", "initramfs.cpio.zst", "rootfs.ext4"]
    assert built.doit().executed == set()
    # Editing the post-image hook repacks the images only; editing the post-build hook redoes both.
    built.edit("hooks/post-image.sh", "contents.txt", "listing.txt")
    assert built.doit().executed == x86("images")
    assert built.path(f"build/images/{ARCH}/listing.txt").exists()
    built.edit("hooks/post-build.sh", "epoch=", "time=")
    assert built.doit().executed == x86("target", "images")


def test_a_failing_hook_is_one_line_naming_the_hook_and_its_log(built):
    add_hooks(built)
    built.edit("hooks/post-build.sh", "set -eu\n", "set -eu\necho 'hook output for the log'\nexit 3\n")
    result = built.doit()
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "post-build hook" in line and "failed" in line]
    assert lines, result.stdout + result.stderr
    assert f"build:target-{ARCH}: post-build hook hooks/post-build.sh failed (exit status 3); log:" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "hook output for the log" in built.log(f"build:target-{ARCH}")
    os.chmod(built.path("hooks/post-build.sh"), 0o644)
    result = built.doit()
    assert "post_build: hooks/post-build.sh: not executable (chmod +x hooks/post-build.sh)" in result.stdout + result.stderr
    check = built.cli("check")
    assert check.returncode != 0 and "post_build: hooks/post-build.sh: not executable" in check.stderr


# --- users and groups -----------------------------------------------------------------------

USERS = """
[[tool.mlbuild.groups]]
name = "wheel"
gid = 10

[[tool.mlbuild.users]]
name = "alice"
uid = 1000
groups = ["wheel"]
shell = "/bin/hello"
password = "$6$salt$hashhashhash"

[[tool.mlbuild.users]]
name = "daemon"
uid = 2
gid = 10
home = "/var/daemon"
shell = "/bin/extra"
create_home = false
"""


def test_users_and_groups_are_written_with_a_private_shadow_in_the_tree_and_both_images(built):
    configure(built, USERS)
    built.write("templates/target/home/alice/.profile", "PS1='$ '\n")  # a file an overlay puts inside a home
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("target", "images")
    etc = built.path(f"target/{ARCH}/etc")
    assert (etc / "passwd").read_text() == ("root:x:0:0:root:/root:/bin/sh\n"
                                            "alice:x:1000:1000::/home/alice:/bin/hello\n"
                                            "daemon:x:2:10::/var/daemon:/bin/extra\n")
    assert (etc / "group").read_text() == "root:x:0:\nwheel:x:10:alice\nalice:x:1000:\n"
    assert (etc / "shadow").read_text() == ("root:!:19358:0:99999:7:::\n"
                                            "alice:$6$salt$hashhashhash:19358:0:99999:7:::\n"
                                            "daemon:!:19358:0:99999:7:::\n")
    assert stat.S_IMODE((etc / "shadow").stat().st_mode) == 0o600
    assert built.path(f"target/{ARCH}/home/alice").is_dir()
    assert not built.path(f"target/{ARCH}/var/daemon").exists()
    cpio, disk = images(built)
    entries = cpio_entries(cpio)
    assert stat.S_IMODE(entries["etc/shadow"][0]) == 0o600
    assert stat.S_IMODE(entries["etc/passwd"][0]) == 0o644
    assert entries["etc/shadow"][1] == (etc / "shadow").read_bytes()
    assert ext4_mode(disk, "/etc/shadow") & 0o7777 == 0o600
    assert ext4(disk, "cat /etc/group") == (etc / "group").read_text()
    # alice's home is hers in both images (the tree on the build machine cannot chown without root); what
    # an overlay puts inside it stays root's, as every other path (docs/usage.md, "Users and groups").
    from test_permissions import cpio_entries as owned_entries, ext4_entry

    assert owned_entries(cpio)["home/alice"] == (0o755, 1000, 1000)
    assert ext4_entry(disk, "/home/alice") == (0o755, 1000, 1000)
    assert owned_entries(cpio)["home/alice/.profile"] == (0o644, 0, 0)
    assert ext4_entry(disk, "/home/alice/.profile") == (0o644, 0, 0)
    assert owned_entries(cpio)["etc"][1:] == (0, 0)


def test_account_mistakes_are_one_line_before_anything_runs(built):
    cases = [
        ('[[tool.mlbuild.users]]\nname = "a"\nuid = 5\n[[tool.mlbuild.users]]\nname = "b"\nuid = 5\n', "two users have the uid 5"),
        ('[[tool.mlbuild.users]]\nname = "a"\nuid = 5\nshell = "bin/sh"\n', "users[0].shell: expected an absolute path"),
        ('[[tool.mlbuild.users]]\nname = "Bad:name"\nuid = 5\n', "users[0].name: expected a user or group name"),
        ('[[tool.mlbuild.users]]\nname = "a"\nuid = 5\ngroups = ["nogroup"]\n', "group 'nogroup' is not in [[tool.mlbuild.groups]]"),
        ('[[tool.mlbuild.users]]\nname = "a"\nuid = 0\n', "uid 0 is root's and root's alone"),
        ('[[tool.mlbuild.users]]\nname = "a"\nuid = 5\npassword = "hunter2"\n', "expected a crypt(3) hash"),
    ]
    original = built.read("pyproject.toml")
    for text, expected in cases:
        built.write("pyproject.toml", original + text)
        result = built.doit("list")
        assert result.returncode != 0, text
        assert expected in result.stderr, (text, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    built.write("pyproject.toml", original + '[[tool.mlbuild.users]]\nname = "a"\nuid = 5\nshell = "/bin/zsh"\n')
    result = built.doit()
    assert result.returncode != 0
    assert "users.a.shell: /bin/zsh is not in the target" in result.stdout + result.stderr


# --- image profiles ---------------------------------------------------------------------------

def test_the_runtime_profile_leaves_headers_static_libraries_maps_and_the_kernel_out_of_the_images_only(built):
    built.write("dev-files/usr/include/hello.h", "int hello(void);\n")
    built.write("dev-files/usr/lib/clang/19/include/stddef.h", "/* */\n")
    built.write("dev-files/lib/libhello.a", "!<arch>\n")
    built.write("dev-files/lib/crt1.o", "object")
    built.write("dev-files/lib/pkgconfig/hello.pc", "Name: hello\n")
    built.write("dev-files/boot/System.map", "ffffffff T _start\n")
    built.write("dev-files/usr/share/data.txt", "kept\n")
    built.write("dev-files/share/mlbuild/hello/compiled-files.txt", "hello.c\n")  # a build's record, for mlbuild cve
    configure(built, 'overlays = ["dev-files"]\nimage_profile = "full"\n')
    assert built.doit().returncode == 0
    cpio, disk = images(built)
    full = cpio_entries(cpio)
    assert {"usr/include/hello.h", "lib/libhello.a", "boot/System.map", "lib/crt1.o", "share/mlbuild/hello/compiled-files.txt"} <= set(full)

    built.edit("pyproject.toml", 'image_profile = "full"', 'image_profile = "runtime"')
    result = built.doit()
    assert result.executed == x86("images")  # the target tree stays complete
    assert built.path(f"target/{ARCH}/usr/include/hello.h").exists()
    runtime = cpio_entries(cpio)
    for gone in ("usr/include", "usr/include/hello.h", "usr/lib/clang/19/include", "lib/libhello.a", "lib/crt1.o",
                 "lib/pkgconfig", "boot/System.map", "boot", "share/mlbuild", "share/mlbuild/hello/compiled-files.txt"):
        assert gone not in runtime, gone
    for kept in ("bin/hello", "bin/app", "usr/share/data.txt", "etc/hostname", "tmp", "proc", "dev/console"):
        assert kept in runtime, kept
    assert runtime["usr/share/data.txt"][1] == b"kept\n"
    assert ext4_mode(disk, "/usr/include/hello.h") is None
    assert ext4(disk, "cat /usr/share/data.txt") == "kept\n"
    assert cpio.stat().st_size < sum(len(data) for _, data in full.values()) + 110 * len(full)
    assert not list(built.path("build/work").glob("images-*-runtime"))  # the hard-linked tree is not kept
