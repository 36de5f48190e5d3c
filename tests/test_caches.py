"""The engine's own caches (build/cache/*.json, data only, sealed) only ever save time: they never change what runs."""

import hashlib
import hmac
import json
import os
import pickle
import shutil
import stat

import pytest

from conftest import ARCH, x86
from test_conventions import use_mlbuild_commands
from mlbuild import sealed


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


# --- planted caches (issue 26, item 6) ---------------------------------------------------------------------
# Someone who can write build/ but not ~/.cache (a shared or copied tree) plants a cache file with the right
# key and the wrong content. The file is not sealed with this user's secret (sealed.py): it is ignored, the
# value recomputed and the file written anew. Three ways to plant: no seal (the old format), the seal line
# of the file it replaces (stale), or a seal made with another secret (another user's mlbuild).

PLANTS = ["unsealed", "stale-seal", "another-secret"]


def payload_of(path) -> dict:
    data = path.read_bytes()
    assert data.startswith(sealed.HEADER), data[:80]
    return json.loads(data.partition(b"\n")[2])


def plant(path, purpose: str, data: dict, how: str) -> None:
    text = json.dumps(data).encode()
    if how == "unsealed":
        path.write_bytes(text)
    elif how == "stale-seal":
        path.write_bytes(path.read_bytes().partition(b"\n")[0] + b"\n" + text)
    else:
        mac = hmac.new(os.urandom(32), purpose.encode() + b"\0" + text, hashlib.sha256).hexdigest()
        path.write_bytes(sealed.HEADER + mac.encode() + b"\n" + text)


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_recipes_cache_with_the_right_key_decides_nothing_not_even_a_forced_rebuild(built, how):
    use_mlbuild_commands(built)
    cache = built.path("build/cache/recipes.json")
    planted = payload_of(cache)
    planted["recipes"]["hello"]["vars"]["greeting"] = "planted greeting"  # the key (recipe files, code) stays right
    plant(cache, "recipes", planted, how)
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == set()  # the planted recipe would change hello's signature: it was not read
    assert payload_of(cache)["recipes"]["hello"]["vars"]["greeting"] == "Hello, world!"  # and the file was written anew

    plant(cache, "recipes", planted, how)
    assert built.doit("forget", f"build:hello-{ARCH}").returncode == 0
    forced = built.doit(f"build:hello-{ARCH}")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert forced.executed == x86("hello")
    assert built.run_binary("hello") == "Hello, world!\n"  # not "planted greeting"
    assert payload_of(cache)["recipes"]["hello"]["vars"]["greeting"] == "Hello, world!"


@pytest.mark.parametrize("how", PLANTS)
@pytest.mark.slow
def test_a_planted_render_cache_neither_keeps_a_stale_output_nor_restores_one_from_the_artifact_cache(project, tmp_path, how):
    """Planted hashes of the old script under the new template's keys: the old signature, whose entry the artifact
    cache holds. Read, they would keep the old binary up to date, and restore it after `doit forget`."""
    use_mlbuild_commands(project)
    artifacts = f"cache={(tmp_path / 'artifacts').as_uri()}"
    assert project.doit(artifacts).returncode == 0  # every task built and pushed
    cache = project.path("build/cache/render.json")
    task = f"build:hello-{ARCH}"
    old_hashes = payload_of(cache)["entries"][task][1]
    project.edit("templates/build/hello.sh.j2", '"%s"', '"%s (v2)"')
    assert project.doit("list").returncode == 0  # renders: the file now has the new keys
    planted = payload_of(cache)
    assert planted["entries"][task][1] != old_hashes
    planted["entries"][task][1] = old_hashes

    plant(cache, "render", planted, how)
    result = project.doit(artifacts)
    assert result.returncode == 0, result.stdout + result.stderr
    assert task in result.executed
    assert project.run_binary("hello") == "Hello, world! (v2)\n"

    # Forced, with the artifact cache: the real signature's entry (just pushed), not the old one.
    plant(cache, "render", planted, how)
    assert project.doit("forget", task).returncode == 0
    forced = project.doit(artifacts)
    assert forced.returncode == 0 and task in forced.executed, forced.stdout + forced.stderr
    assert project.run_binary("hello") == "Hello, world! (v2)\n"

    # Forced, without it (`cache=`): built here, and the stamp's signature is the script's that ran.
    plant(cache, "render", planted, how)
    assert project.doit("forget", task).returncode == 0
    local = project.doit(task, "cache=")
    assert local.returncode == 0 and local.executed == {task}, local.stdout + local.stderr
    script = project.path(f"build/work/hello-{ARCH}/build.sh").read_bytes()
    assert json.loads(project.stamp(task).read_text())["inputs"]["script"] == hashlib.sha256(script).hexdigest()
    assert project.run_binary("hello") == "Hello, world! (v2)\n"


def test_the_secret_is_made_on_first_use_private_to_the_user_and_seals_both_caches(built, tmp_path):
    home = tmp_path / "xdg"  # another user's cache folder, as far as the seals go
    listed = built.doit("list", env={"XDG_CACHE_HOME": str(home)})
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    secret = home / "mlbuild" / "build-cache-secret"
    info = secret.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_size == 32 and info.st_uid == os.geteuid()
    for name, purpose in (("recipes.json", "recipes"), ("render.json", "render")):
        line, _, text = built.path(f"build/cache/{name}").read_bytes().partition(b"\n")
        # Written anew with this secret: the files sealed with the default one did not verify.
        assert line == sealed.HEADER + hmac.new(secret.read_bytes(), purpose.encode() + b"\0" + text, hashlib.sha256).hexdigest().encode()
    assert built.doit(env={"XDG_CACHE_HOME": str(home)}).executed == set()


@pytest.mark.parametrize("damage", ["readable-by-others", "symlink", "short"])
def test_a_secret_others_could_know_is_not_used_with_one_warning_and_the_build_still_works(built, tmp_path, damage):
    home = tmp_path / "xdg"
    secret = home / "mlbuild" / "build-cache-secret"
    secret.parent.mkdir(parents=True)
    if damage == "symlink":
        (tmp_path / "elsewhere").write_bytes(os.urandom(32))
        os.chmod(tmp_path / "elsewhere", 0o600)
        secret.symlink_to(tmp_path / "elsewhere")
    else:
        secret.write_bytes(os.urandom(32 if damage == "readable-by-others" else 5))
        os.chmod(secret, 0o644 if damage == "readable-by-others" else 0o600)
    for name in ("recipes.json", "render.json"):
        built.path(f"build/cache/{name}").unlink()
    result = built.doit(env={"XDG_CACHE_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == set()
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"mlbuild: warning: {secret}: ")
    assert warnings[0].endswith("the caches in build/cache are not used until it is fixed")
    assert not built.path("build/cache/recipes.json").exists() and not built.path("build/cache/render.json").exists()
