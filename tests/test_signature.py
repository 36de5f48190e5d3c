"""Each declared input of each kind of task, changed in turn, reruns exactly the tasks it should.

A task's inputs are declared in one place (its step's inputs(); signature.py turns
them into the signature, the up-to-date decision and its reasons). The table below
has one row per input; test_every_declared_input_has_a_row fails when a new input
appears without one.
"""

import json

import pytest

from conftest import APP_C, EXTRA_C, HELLO_C, x86

HELLO_PATCH = """\
--- a/hello.c
+++ b/hello.c
@@ -1,3 +1,3 @@
 #include <stdio.h>
 #include "greeting.h"
-int main(void) { puts(GREETING); return 0; }
+int main(void) { puts(GREETING); puts("patched"); return 0; }
"""


def change_source(project):
    project.update_recipe("app", sources=[project.new_source("app", {"app.c": APP_C.replace("MESSAGE", '"v2"')}, "app-1.0")])
    return {"fetch:app"} | x86("app", "target", "images")


def change_strip_components(project):
    # The same files one folder deeper. A fetch's output hash is that of its inputs (hashing a
    # kernel tree costs seconds), so its users run; they build the same output: cutoff there.
    source = project.new_source("hello", {"hello.c": HELLO_C, "extra.c": EXTRA_C}, "outer/hello-1.0")
    project.update_recipe("hello", sources=[{**source, "strip_components": 2}])
    return {"fetch:hello"} | x86("hello", "extra")


def add_patch(project):
    project.write("recipes/hello/0001-patched.patch", HELLO_PATCH)
    project.update_recipe("hello", patches=["0001-patched.patch"])
    # extra shares hello's source: it runs, to the same output, so the target does not run for it.
    return {"fetch:hello"} | x86("hello", "extra", "app", "target", "images")


def change_version(project):
    project.update_recipe("app", version="1.1")
    return x86("app")  # its output is the same: early cutoff stops there


def change_vars(project):
    project.update_recipe("app", vars={"message": "a new message"})
    return x86("app", "target", "images")


def change_dependency_output(project):
    project.update_recipe("hello", vars={"greeting": "Hi again"})
    return x86("hello", "app", "target", "images")  # app: its dependency's output changed


def change_depends(project):
    project.update_recipe("extra", depends=["hello"])
    return x86("extra")


def change_build_template_name(project):
    project.write("templates/build/extra-copy.sh.j2", project.read("templates/build/extra.sh.j2"))
    project.update_recipe("extra", build="extra-copy")
    return x86("extra")


def change_script(project):
    project.edit("templates/build/hello.sh.j2", '"%s"', '"%s!"')
    return x86("hello", "app", "target", "images")


def add_config_file(project):
    project.write("templates/hello/hello.conf.j2", "greeting for {{ arch }}\n")
    project.update_recipe("hello", files=["hello/hello.conf.j2"])
    return x86("hello")  # the script does not install it: same output


def add_user_fragment(project):
    project.write("fragments/hello.config", "CONFIG_SOMETHING=y\n")
    return x86("hello")


def change_target_template(project):
    project.write("templates/target/etc/hostname.j2", "box-{{ arch }}\n")
    return x86("target", "images")


def add_overlay_file(project):
    project.write("templates/target/etc/motd", "welcome\n")
    return x86("target", "images")


def add_user(project):
    project.write("pyproject.toml", project.read("pyproject.toml") + '[[tool.mlbuild.users]]\nname = "alice"\nuid = 1000\nshell = "/bin/hello"\n')
    return x86("target", "images")


def add_post_build_hook(project):
    hook = project.write("hooks/post-build.sh", "#!/bin/sh\necho built > \"$TARGET_DIR/etc/built\"\n")
    hook.chmod(0o755)
    project.edit("pyproject.toml", "[tool.mlbuild]\n", '[tool.mlbuild]\npost_build = ["hooks/post-build.sh"]\n')
    return x86("target", "images")


def add_post_image_hook(project):
    hook = project.write("hooks/post-image.sh", "#!/bin/sh\necho packed > \"$IMAGES_DIR/packed\"\n")
    hook.chmod(0o755)
    project.edit("pyproject.toml", "[tool.mlbuild]\n", '[tool.mlbuild]\npost_image = ["hooks/post-image.sh"]\n')
    return x86("images")


def declare_permissions(project):
    project.update_recipe("hello", permissions=[{"path": "bin/hello", "mode": "4755"}])
    return x86("target", "images")  # not hello's build: the target applies declared modes


def change_image_profile(project):
    # auto is runtime here: no recipe of the synthetic project needs the full tree (image_profile = "full").
    project.edit("pyproject.toml", "[tool.mlbuild]\n", '[tool.mlbuild]\nimage_profile = "full"\n')
    return x86("images")


# input (as inputs() names it, or its kind before ':') -> the change that exercises it
ROWS = {
    "recipe.sources": change_source,
    "recipe.strip_components": change_strip_components,
    "file (fetch: a patch)": add_patch,
    "recipe:version": change_version,
    "recipe:vars": change_vars,
    "recipe:depends": change_depends,
    "recipe:build": change_build_template_name,
    "dep": change_dependency_output,
    "script": change_script,
    "file (build: a config file)": add_config_file,
    "file (build: the user's fragment)": add_user_fragment,
    "file (target: a rendered file)": change_target_template,
    "overlay": add_overlay_file,
    "homes": add_user,
    "home_owners (images)": add_user,
    "hook (post-build)": add_post_build_hook,
    "hook (post-image)": add_post_image_hook,
    "image_profile": change_image_profile,
    "permissions": declare_permissions,
}
# Inputs no project file can change: the task's identity (its name, its arch), and the engine's
# own constants and code (a new mlbuild version); the toolchain is pinned by test_toolchain_switch.py.
NOT_PROJECT_FILES = {"arch", "recipe:name", "environment", "code", "image_profile.code", "kernels", "toolchain"}


@pytest.mark.parametrize("name", ROWS)
def test_changing_one_declared_input_reruns_exactly_the_expected_tasks(built, name):
    expected = ROWS[name](built)
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == expected, f"{name}: ran {sorted(result.executed)}, expected {sorted(expected)}"
    assert built.doit().executed == set(), f"{name}: a second run after the change ran something"


def _kind(key: str) -> str:
    if key.startswith("recipe"):
        return key
    return key.split(":", 1)[0]


def test_every_declared_input_has_a_row(built):
    """The inputs of every task of the synthetic project (hooks, users, patches and files on) each have a row above."""
    add_patch(built)
    add_config_file(built)
    add_user(built)
    add_post_build_hook(built)
    add_post_image_hook(built)
    change_image_profile(built)
    declare_permissions(built)
    covered = {row.split(" ")[0] for row in ROWS} | NOT_PROJECT_FILES
    probe = built.path("inputs.py")
    probe.write_text(
        "import json, sys\nfrom pathlib import Path\nfrom mlbuild.frontend.project import Project\n"
        "project = Project(Path(sys.argv[1]))\n"
        "print(json.dumps({step.name: sorted(step.inputs()) for step in project.ordered_steps()}))\n")
    import subprocess
    import sys

    from conftest import base_environment

    result = subprocess.run([sys.executable, str(probe), str(built.root)], capture_output=True, text=True,
                            env=base_environment(), cwd=built.root, timeout=60)
    assert result.returncode == 0, result.stderr
    declared = json.loads(result.stdout)
    missing = {f"{task}: {key}" for task, keys in declared.items() for key in keys if _kind(key) not in covered}
    assert not missing, f"inputs without a row in ROWS: {sorted(missing)}"
    kinds = {_kind(key) for keys in declared.values() for key in keys}
    assert {"recipe.sources", "recipe:vars", "script", "dep", "file", "overlay", "homes", "hook", "image_profile"} <= kinds


def test_explain_gives_one_reason_per_changed_input(built):
    change_vars(built)
    add_user_fragment(built)
    result = built.cli("explain", "build:app-x86_64")
    assert "recipe field vars changed" in result.stdout, result.stdout
    result = built.cli("explain", "build:hello-x86_64")
    assert "new config file hello.config" in result.stdout, result.stdout
    assert "recipe field" not in result.stdout


def test_the_render_cache_key_changes_with_every_value_the_templates_see(project):
    """No hand-kept list of keys: changing any leaf of a build script's template context changes its key."""
    import copy

    from mlbuild.frontend.project import Project as Loaded
    from mlbuild.engine.signature import render_key

    step = Loaded(project.root).steps["build:app-x86_64"]
    context = json.loads(json.dumps(step.context, default=lambda model: model.model_dump(mode="json")))
    base = render_key(context, [])
    assert base == render_key(step.context, [])  # the recipe model hashes as its JSON

    def leaves(value, path=()):
        if isinstance(value, dict):
            for key, item in value.items():
                yield from leaves(item, (*path, key))
        elif isinstance(value, list) and value:
            for index, item in enumerate(value):
                yield from leaves(item, (*path, index))
        else:
            yield path

    paths = list(leaves(context))
    assert ("config", "toolchain") in paths and ("vars", "message") in paths and ("recipe", "version") in paths
    for path in paths:
        changed = copy.deepcopy(context)
        holder = changed
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = ["changed"] if holder[path[-1]] == "changed" else "changed"
        assert render_key(changed, []) != base, f"changing {'.'.join(map(str, path))} left the render key as it was"
    fragment = project.write("fragments/app.config", "X=1\n")
    assert render_key(context, [fragment]) != base
