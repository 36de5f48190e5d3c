"""What a build runs, and what it does not: first build, no-op rebuilds, rebuilds after changes, early cutoff."""

import os
import shutil
import time

import pytest

from conftest import ALL_TASKS, APP_C, EXTRA_C, HELLO_C, assert_stamps_valid, run_doit, sha256_of, x86


def test_first_build_runs_every_task_and_a_second_build_runs_nothing(project):
    first = project.doit()
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.executed == ALL_TASKS
    assert project.run_binary("hello") == "Hello, world!\n"
    assert project.run_binary("app") == "app says hi\n"
    assert project.run_binary("extra") == "extra\n"
    assert project.read("target/x86_64/etc/hostname") == "mlbuild-x86_64\n"
    assert {p.name for p in project.path("build/images/x86_64").iterdir()} == {"initramfs.cpio", "initramfs.cpio.zst", "rootfs.ext4"}
    assert project.leftovers() == []
    assert_stamps_valid(project)

    second = project.doit()
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.executed == set()
    assert second.up_to_date == ALL_TASKS


def test_a_parallel_build_runs_the_same_tasks_and_then_nothing(project):
    result = project.doit("-n", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == ALL_TASKS
    assert project.run_binary("app") == "app says hi\n"
    assert project.doit("-n", "2").executed == set()


def test_changing_a_recipe_var_rebuilds_that_recipe_and_its_dependents_only(built):
    built.update_recipe("app", vars={"message": "a new message"})
    result = built.doit()
    assert result.returncode == 0, result.stdout
    assert result.executed == x86("app", "target", "images")
    assert built.run_binary("app") == "a new message\n"

    # hello is a dependency of app: app is rebuilt too, extra (independent) is not.
    built.update_recipe("hello", vars={"greeting": "Hi again"})
    result = built.doit()
    assert result.executed == x86("hello", "app", "target", "images")
    assert built.run_binary("hello") == "Hi again\n"


def test_changing_a_template_rebuilds_its_recipe_and_dependents_only(built):
    built.edit("templates/build/hello.sh.j2", '"%s"', '"%s!"')
    result = built.doit()
    assert result.returncode == 0, result.stdout
    assert result.executed == x86("hello", "app", "target", "images")
    assert built.run_binary("hello") == "Hello, world!!\n"


@pytest.mark.slow
def test_changing_a_source_tarball_refetches_and_rebuilds_its_users_only(built):
    changed_c = APP_C.replace("puts(MESSAGE)", 'printf("%s (v2)\\n", MESSAGE)')
    built.update_recipe("app", sources=[built.new_source("app", {"app.c": changed_c}, "app-1.0")])
    result = built.doit()
    assert result.returncode == 0, result.stdout
    assert result.executed == {"fetch:app"} | x86("app", "target", "images")
    assert built.run_binary("app") == "app says hi (v2)\n"

    # hello's tarball is also extra's source (source = "hello"): both are rebuilt, and app depends on hello.
    changed_hello = HELLO_C.replace("puts(GREETING)", 'printf("%s (v2)\\n", GREETING)')
    built.update_recipe("hello", sources=[built.new_source("hello", {"hello.c": changed_hello, "extra.c": EXTRA_C}, "hello-1.0")])
    result = built.doit()
    assert result.executed == {"fetch:hello"} | x86("hello", "extra", "app", "target", "images")
    assert built.run_binary("hello") == "Hello, world! (v2)\n"


def test_changing_summary_homepage_or_license_rebuilds_nothing(built):
    built.update_recipe("hello", summary="another summary", homepage="https://example.com/other", license="Apache-2.0 OR MIT")
    built.update_recipe("app", summary="changed too")
    result = built.doit()
    assert result.returncode == 0, result.stdout
    assert result.executed == set()


def test_early_cutoff_a_dependency_rebuilt_to_identical_output_reruns_nothing_downstream(built):
    built.edit("templates/build/hello.sh.j2", "# build", "# a comment that changes nothing\n# build")
    result = built.doit()
    assert result.returncode == 0, result.stdout
    assert result.executed == x86("hello")
    assert result.up_to_date >= x86("app", "target", "images")


def test_early_cutoff_a_new_tarball_with_the_same_files_refetches_and_rebuilds_its_users_only(built):
    # A new release whose only difference is a README: hello and extra are rebuilt, to the same bytes.
    files = {"hello.c": HELLO_C, "extra.c": EXTRA_C, "README": "now with a README\n"}
    built.update_recipe("hello", sources=[built.new_source("hello", files, "hello-1.0")])
    result = built.doit()
    assert result.executed == {"fetch:hello"} | x86("hello", "extra")


def test_copying_the_whole_project_elsewhere_runs_nothing(built, tmp_path):
    copy = tmp_path / "somewhere" / "else"
    shutil.copytree(built.root, copy, symlinks=True)
    shutil.rmtree(built.root)  # nothing may still point into the old place
    result = run_doit(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == set()
    assert result.up_to_date == ALL_TASKS


def test_a_clone_like_copy_with_new_mtimes_runs_nothing(built, tmp_path):
    copy = tmp_path / "clone"
    shutil.copytree(built.root, copy, symlinks=True)
    later = time.time() + 3600
    for path in [copy, *copy.rglob("*")]:
        os.utime(path, (later, later), follow_symlinks=False)
    result = run_doit(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == set()


def test_doit_clean_removes_the_output_and_the_next_build_rebuilds_only_it(built):
    result = built.doit("clean", "build:app-x86_64")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "build:app-x86_64: removed build/out/app-x86_64" in result.stdout
    assert not built.path("build/out/app-x86_64").exists()
    assert not built.path("build/work/app-x86_64").exists()
    assert not built.stamp("build:app-x86_64").exists()
    assert built.path("build/out/hello-x86_64").exists()  # its dependency is left alone

    result = built.doit()
    assert result.returncode == 0, result.stdout
    # Rebuilt to the same bytes: by early cutoff, target and images do not run.
    assert result.executed == x86("app")
    assert built.run_binary("app") == "app says hi\n"


def test_a_script_writing_into_its_sysroot_cannot_change_a_dependency_output(built):
    hello = built.path("build/out/hello-x86_64/bin/hello")
    before = sha256_of(hello)
    built.edit("templates/build/app.sh.j2", "mkdir", 'printf "junk" >> "$SYSROOT/bin/hello" || true\nmkdir')
    result = built.doit()
    assert result.returncode == 0, result.stdout
    assert sha256_of(hello) == before
    assert_stamps_valid(built)
