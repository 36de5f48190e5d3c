"""External trees (`external`): a folder beside the project with its own recipes/, templates/ and fragments/."""

import shutil

from conftest import ALL_TASKS, make_tarball, toml_dumps, x86

COMMON = {"version": "1.0", "summary": "a test program", "homepage": "https://example.org/", "license": "MIT"}
GREET_SH = """\
ccache clang -O1 -c "$SRC/greet.c" -o greet.o
clang greet.o -o greet
mkdir -p "$OUT/bin"
cp greet "$OUT/bin/greet"
"""


def _layer(project, name: str = "my-layer"):
    """The layer's folder, beside the project (outside it), named in pyproject.toml."""
    layer = project.root.parent / name
    layer.mkdir(exist_ok=True)
    if "external" not in project.read("pyproject.toml"):
        project.edit("pyproject.toml", "jobs = 2\n", f'jobs = 2\nexternal = ["../{name}"]\n')
    return layer


def _write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_an_external_recipe_adds_a_component_that_lands_in_the_target(built):
    layer = _layer(built)
    sha = make_tarball(layer / "dl" / "greet-1.0.tar.gz", {"greet.c": '#include <stdio.h>\nint main(void){puts("greetings");}\n'}, "greet-1.0")
    _write(layer / "recipes" / "greet.toml", toml_dumps({"name": "greet", **COMMON, "build": "greet", "depends": ["hello"],
                                                         "sources": [{"url": (layer / "dl" / "greet-1.0.tar.gz").as_uri(), "sha256": sha}]}))
    _write(layer / "templates" / "build" / "greet.sh.j2", GREET_SH)
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == {"fetch:greet"} | x86("greet", "target", "images")
    assert built.run_binary("greet") == "greetings\n"


def test_an_external_recipe_replaces_ours_by_name_and_rebuilds_it(built):
    layer = _layer(built)
    hello = {**built.recipes["hello"], "vars": {"greeting": "Hello from the layer"}}
    _write(layer / "recipes" / "hello.toml", toml_dumps(hello))
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("hello", "app", "target", "images")  # app: its dependency's output changed
    assert built.run_binary("hello") == "Hello from the layer\n"
    # Changed again in the layer: the recipes cache is keyed on the layer's files too.
    _write(layer / "recipes" / "hello.toml", toml_dumps({**hello, "vars": {"greeting": "Changed in the layer"}}))
    result = built.doit()
    assert x86("hello") <= result.executed
    assert built.run_binary("hello") == "Changed in the layer\n"
    # Theirs replaces ours entirely: ours may even be broken.
    built.write("recipes/hello.toml", "version = 1\n")
    assert built.doit().executed == set()


def test_an_external_template_is_found_before_ours(built):
    layer = _layer(built)
    _write(layer / "templates" / "build" / "extra.sh.j2",
           built.read("templates/build/extra.sh.j2") + 'echo layer > "$OUT/bin/from-layer"\n')
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("extra", "target", "images")
    assert built.read("target/x86_64/bin/from-layer") == "layer\n"
    # Only the template changes what renders: editing it again rebuilds extra again.
    _write(layer / "templates" / "build" / "extra.sh.j2",
           built.read("templates/build/extra.sh.j2") + 'echo changed > "$OUT/bin/from-layer"\n')
    assert x86("extra") <= built.doit().executed
    assert built.read("target/x86_64/bin/from-layer") == "changed\n"


def test_an_external_fragment_applies_before_the_projects_own(built):
    layer = _layer(built)
    _write(layer / "fragments" / "app.config", "CONFIG_FROM_LAYER=y\n")
    built.write("fragments/app.config", "CONFIG_FROM_PROJECT=y\n")
    built.write("templates/build/app.sh.j2", built.read("templates/build/app.sh.j2")
                + '{% for f in files %}cat "$FILES"/{{ f }} >> "$OUT/bin/config"\n{% endfor %}')
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert built.read("target/x86_64/bin/config") == "CONFIG_FROM_LAYER=y\nCONFIG_FROM_PROJECT=y\n"


def test_a_copy_of_project_and_layer_elsewhere_rebuilds_nothing(built, tmp_path):
    layer = _layer(built)
    _write(layer / "templates" / "build" / "extra.sh.j2", built.read("templates/build/extra.sh.j2") + "true\n")
    _write(layer / "recipes" / "hello.toml", toml_dumps({**built.recipes["hello"], "vars": {"greeting": "layered"}}))
    assert built.doit().returncode == 0
    copy = tmp_path / "elsewhere"
    shutil.copytree(built.root.parent, copy, symlinks=True)
    from conftest import run_doit

    result = run_doit(copy / "project")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == set() and x86("hello", "extra") <= result.up_to_date


def test_an_error_in_an_external_recipe_names_its_file(project):
    layer = _layer(project)
    _write(layer / "recipes" / "bad.toml", toml_dumps({"name": "bad", **COMMON, "version": "1 0", "source": "hello"}))
    result = project.doit()
    assert result.returncode != 0 and result.executed == set()
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert message.startswith("mlbuild: ../my-layer/recipes/bad.toml: version: "), message
    # A reference to a template that neither tree has names the layer's recipe too.
    _write(layer / "recipes" / "bad.toml", toml_dumps({"name": "bad", **COMMON, "source": "hello", "build": "nowhere"}))
    message = project.doit().stderr.strip()
    assert message == "mlbuild: ../my-layer/recipes/bad.toml: build: no file templates/build/nowhere.sh.j2", message
    # An error in the layer's template names the layer's file and line.
    (layer / "recipes" / "bad.toml").unlink()
    _write(layer / "templates" / "build" / "extra.sh.j2", "true\necho {{ nothere }}\n")
    message = project.doit().stderr.strip()
    assert message == ("mlbuild: ../my-layer/templates/build/extra.sh.j2:2: build:extra-x86_64 (recipes/extra.toml): "
                       "'nothere' is undefined"), message


def test_a_missing_external_folder_is_one_line(project):
    project.edit("pyproject.toml", "jobs = 2\n", 'jobs = 2\nexternal = ["../not-there"]\n')
    result = project.doit()
    assert result.returncode != 0 and result.executed == set()
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert message.startswith("mlbuild: configuration: external: ../not-there: no such folder"), message
    assert project.cli("check").stderr.startswith("mlbuild: configuration: external: ../not-there: no such folder")


def test_an_external_trees_templates_target_is_an_overlay_after_the_projects_own(built):
    layer = _layer(built)
    _write(layer / "templates" / "target" / "etc" / "motd.j2", "welcome to {{ arch }}\n")
    _write(layer / "templates" / "target" / "etc" / "hostname", "from-the-layer\n")  # replaces ours (a rendered .j2)
    result = built.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.executed == x86("target", "images")
    assert built.read("target/x86_64/etc/motd") == "welcome to x86_64\n"
    assert built.read("target/x86_64/etc/hostname") == "from-the-layer\n"
    _write(layer / "templates" / "target" / "etc" / "motd.j2", "hello {{ arch }}\n")
    assert built.doit().executed == x86("target", "images")
    assert built.read("target/x86_64/etc/motd") == "hello x86_64\n"
