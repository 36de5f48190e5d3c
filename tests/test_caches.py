"""The engine's own caches (build/cache/*.json, data only) only ever save time: they never change what runs."""

import os
import pickle
import shutil

import pytest

from conftest import x86


def test_deleting_the_engine_caches_changes_nothing(built):
    assert {p.name for p in built.path("build/cache").iterdir()} == {"recipes.json", "render.json"}
    shutil.rmtree(built.path("build/cache"))
    result = built.doit()
    assert result.returncode == 0, result.stderr
    assert result.executed == set()


def test_an_unreadable_cache_file_is_ignored(built):
    for data in [b"", b"not json at all", b"\xff\xfe", b"5", b'["key", "value", "extra"]', b'{"key": 5, "entries": []}', pickle.dumps(5)]:
        for name in ("recipes.json", "render.json"):
            built.path(f"build/cache/{name}").write_bytes(data)
        result = built.doit("list")
        assert result.returncode == 0, (data, result.stderr)
    result = built.doit()
    assert result.returncode == 0, result.stderr
    assert result.executed == set()
    # and a change is still seen
    built.update_recipe("app", vars={"message": "seen"})
    assert built.doit().executed == x86("app", "target", "images")


@pytest.mark.parametrize("cache, data", [
    ("recipes.json", b'{"key": "old", "recipes": {}}'),
    ("render.json", b'{"key": "old", "entries": {}}'),
    ("render.json", b'{"key": "old", "entries": {"build:app-x86_64": ["k", {"script": 5}]}}'),
], ids=["recipes-other-key", "render-other-key", "render-wrong-shape"])
def test_a_cache_file_written_by_another_version_is_ignored(built, cache, data):
    built.path(f"build/cache/{cache}").write_bytes(data)
    result = built.doit()
    assert "Traceback" not in result.stderr
    assert result.returncode == 0
    assert result.executed == set()


def test_a_user_fragment_appearing_or_changing_reruns_its_recipe(built):
    built.write("fragments/app.config", "CONFIG_A=y\n")
    result = built.doit()
    assert result.executed == x86("app")  # a new $FILES entry; same binary, so nothing downstream
    assert (built.path("build/work/app-x86_64/files/app.config")).read_text() == "CONFIG_A=y\n"
    built.write("fragments/app.config", "CONFIG_A=n\n")
    assert built.doit().executed == x86("app")
    assert built.doit().executed == set()


def test_editing_a_template_in_a_symlinked_templates_folder_rebuilds(built, tmp_path):
    shared = tmp_path / "shared-templates"
    shared.mkdir()
    (shared / "flags.sh.j2").write_text("echo flags one\n")
    os.symlink(shared, built.path("templates/shared"))
    built.edit("templates/build/app.sh.j2", "mkdir", "{% include 'shared/flags.sh.j2' %}\nmkdir")
    assert built.doit().executed == x86("app")

    (shared / "flags.sh.j2").write_text("echo flags two\n")
    result = built.doit()
    assert result.executed == x86("app")


def test_bumping_the_engine_format_makes_every_task_out_of_date(built, monkeypatch):
    import mlbuild.engine.signature
    from mlbuild.engine.signature import is_up_to_date
    from mlbuild.frontend.project import Project

    project = Project(built.root, environ={})
    assert all(is_up_to_date(step) for step in project.steps.values())
    monkeypatch.setattr(mlbuild.engine.signature, "ENGINE_FORMAT", mlbuild.engine.signature.ENGINE_FORMAT + "-next")
    project = Project(built.root, environ={})
    assert not any(is_up_to_date(step) for step in project.steps.values())


def test_ccache_hits_in_another_checkout_when_compiles_name_a_resource_dir_inside_it(tmp_path):
    """ccache does not rewrite -resource-dir=<path in the checkout>: mlbuild has it ignored (the sysroot decides it)."""
    from conftest import make_project

    shared = {"MLBUILD_CCACHE_DIR": str(tmp_path / "ccache")}
    logs = []
    for name in ("first", "second-in-a-longer-path"):
        project = make_project(tmp_path / name)
        # Like the target templates: a resource dir below the task's folders (here a link to the host clang's).
        project.edit("templates/build/hello.sh.j2", "ccache clang -O1",
                     'ln -sfn "$(clang -print-resource-dir)" "$WORK/resource"\nccache clang -resource-dir="$WORK/resource" -O1')
        result = project.doit("build:hello-x86_64", env=shared)
        assert result.returncode == 0, result.stdout + result.stderr
        logs.append(project.log("build:hello-x86_64"))
    assert "# ccache: 0 hits, 1 misses" in logs[0], logs[0][-500:]
    assert "# ccache: 1 hits, 0 misses" in logs[1], logs[1][-500:]
