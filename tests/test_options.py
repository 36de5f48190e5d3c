"""Configuration options declared by recipes ([options.<name>]), versions taken from a source recipe,
and image_profile = "auto" following the recipes that need the full tree (issue 13: one home for every fact)."""

import hashlib
import json

import pytest

from conftest import REPO, HELLO_SH, make_project
from mlbuild.system import image_profile
from mlbuild.errors import InputError
from mlbuild.frontend.project import Project as Loaded
from mlbuild.sealed import unseal

LOUD = {"help": "greet loudly", "default": False}
STYLE = {"help": "how long the greeting is", "choices": ["short", "long"], "default": "short"}
# hello's script reads both options, as templates/build/linux.sh.j2 reads options.kernel_config.
HELLO_WITH_OPTIONS = HELLO_SH + 'echo {{ options.style }}{% if options.loud %} loudly{% endif %}\n'


@pytest.fixture
def optioned(project):
    """The synthetic project with hello declaring a switch (loud) and a choice (style) and reading both."""
    project.update_recipe("hello", options={"loud": LOUD, "style": STYLE})
    project.write("templates/build/hello.sh.j2", HELLO_WITH_OPTIONS)
    return project


def load(project, command_line=None, environ=None) -> Loaded:
    return Loaded(project.root, command_line or {}, environ=environ or {})


def error_of(project, command_line=None, environ=None) -> str:
    with pytest.raises(InputError) as raised:
        load(project, command_line, environ)
    assert raised.value.exit_status == 2
    return str(raised.value)


# --- where option values come from ---------------------------------------------------------

def test_declared_options_take_their_defaults_then_pyproject_then_the_environment_then_the_command_line(optioned):
    assert load(optioned).options == {"loud": False, "style": "short"}
    optioned.write("pyproject.toml", optioned.read("pyproject.toml") + 'loud = true\nstyle = "long"\n')
    assert load(optioned).options == {"loud": True, "style": "long"}
    assert load(optioned, environ={"MLBUILD_LOUD": "off", "MLBUILD_STYLE": "short"}).options == {"loud": False, "style": "short"}
    assert load(optioned, {"loud": "yes"}, environ={"MLBUILD_LOUD": "0"}).options == {"loud": True, "style": "long"}


@pytest.mark.parametrize("text, value", [("1", True), ("true", True), ("Yes", True), ("ON", True),
                                         ("0", False), ("false", False), ("no", False), (" off ", False)])
def test_a_switch_reads_the_usual_words_for_on_and_off(optioned, text, value):
    assert load(optioned, environ={"MLBUILD_LOUD": text}).options["loud"] is value
    assert load(optioned, {"loud": text}).options["loud"] is value


def test_a_bad_switch_value_names_its_origin_the_option_its_recipe_and_what_was_expected(optioned):
    assert error_of(optioned, environ={"MLBUILD_LOUD": "maybe"}) == (
        "environment MLBUILD_LOUD: loud (option of recipes/hello.toml): "
        "expected a boolean (1/0, true/false, yes/no, on/off), got 'maybe'")
    assert error_of(optioned, {"loud": "2"}) == (
        "command line: loud (option of recipes/hello.toml): expected a boolean (1/0, true/false, yes/no, on/off), got '2'")
    optioned.write("pyproject.toml", optioned.read("pyproject.toml") + 'loud = "yes"\n')  # TOML has booleans: a string is a mistake
    assert error_of(optioned) == "pyproject.toml [tool.mlbuild]: loud (option of recipes/hello.toml): expected true or false, got 'yes'"


def test_a_bad_choice_names_its_origin_the_option_its_recipe_and_the_choices(optioned):
    assert error_of(optioned, {"style": "medium"}) == (
        "command line: style (option of recipes/hello.toml): expected one of: short, long, got 'medium'")
    assert error_of(optioned, environ={"MLBUILD_STYLE": "Long"}).startswith("environment MLBUILD_STYLE: style (option of recipes/hello.toml)")
    optioned.write("pyproject.toml", optioned.read("pyproject.toml") + "style = true\n")
    assert error_of(optioned) == "pyproject.toml [tool.mlbuild]: style (option of recipes/hello.toml): expected one of: short, long, got True"


def test_an_unknown_key_suggests_the_closest_option_and_lists_options_among_the_known_keys(optioned):
    message = error_of(optioned, environ={"MLBUILD_LOUDD": "1"})
    assert message.startswith("environment: MLBUILD_LOUDD: unknown configuration key (did you mean 'loud'?); known keys: ")
    known = message.split("known keys: ")[1].split(", ")
    assert {"loud", "style", "jobs", "arches"} <= set(known) and known == sorted(known)
    assert error_of(optioned, {"stlye": "long"}).startswith("command line: stlye=: unknown configuration key (did you mean 'style'?)")
    optioned.write("pyproject.toml", optioned.read("pyproject.toml") + 'styles = "long"\n')
    assert error_of(optioned) == "pyproject.toml [tool.mlbuild]: styles: unknown field (did you mean 'style'?)"


def test_an_option_no_recipe_declares_is_an_unknown_key(project):
    # kernel_config is recipes/linux.toml's: a project without that recipe does not know it.
    assert error_of(project, {"kernel_config": "qemu"}).startswith("command line: kernel_config=: unknown configuration key")


def test_a_bad_option_on_doit_s_command_line_exits_2_with_one_line_and_runs_nothing(optioned):
    result = optioned.doit("style=medium")
    assert result.returncode == 2 and result.executed == set()
    assert result.stderr == "mlbuild: command line: style (option of recipes/hello.toml): expected one of: short, long, got 'medium'\n"


# --- what options change ---------------------------------------------------------------------

def test_a_template_reads_its_recipe_s_options_and_a_changed_value_renders_anew_despite_the_render_cache(optioned):
    first = load(optioned)
    hello, app_inputs = first.steps["build:hello-x86_64"], first.steps["build:app-x86_64"].inputs()
    assert hello.script.endswith("\necho short\n")
    assert hello.rendered_hashes["script"] == hashlib.sha256(hello.script.encode()).hexdigest()  # now in the render cache
    first.render_cache.save()
    second = load(optioned, {"style": "long", "loud": "1"})  # the render cache of the first load is read now
    step = second.steps["build:hello-x86_64"]
    assert step.script.endswith("\necho long loudly\n")
    assert step.rendered_hashes["script"] == hashlib.sha256(step.script.encode()).hexdigest()
    assert second.steps["build:app-x86_64"].inputs() == app_inputs  # app declares no option: nothing of it changes


def test_a_template_cannot_read_an_option_its_recipe_does_not_declare(optioned):
    optioned.write("templates/build/app.sh.j2", "echo {{ options.loud }}\n")
    project = load(optioned)
    message = r"^templates/build/app.sh.j2:1: build:app-x86_64 \(recipes/app.toml\): options.loud is undefined \(options is empty\)$"
    with pytest.raises(InputError, match=message):
        project.steps["build:app-x86_64"].script


def test_the_build_task_s_doc_line_ends_with_the_values_of_its_recipe_s_options(optioned):
    project = load(optioned, {"style": "long"})
    assert project.steps["build:hello-x86_64"].doc == "build hello 1.0 for x86_64 (loud=false, style=long)"
    assert project.steps["build:app-x86_64"].doc == "build app 1.0 for x86_64"
    listed = optioned.doit("list", "--all", "loud=on").stdout
    assert "build hello 1.0 for x86_64 (loud=true, style=short)" in listed


def test_mlbuild_explain_lists_the_options_the_task_reacts_to(optioned):
    result = optioned.cli("explain", "build:hello-x86_64", "style=long")
    assert result.returncode == 0, result.stderr
    assert "  options it reacts to (recipes/hello.toml): loud=false, style=long\n" in result.stdout
    assert "options it reacts to" not in optioned.cli("explain", "build:app-x86_64").stdout


@pytest.mark.slow
def test_mlbuild_check_renders_every_choice_of_a_choice_option(optioned):
    assert optioned.cli("check").returncode == 0
    # A mistake only the other choice reaches: check finds it although the default renders fine.
    optioned.write("templates/build/hello.sh.j2", HELLO_SH + '{% if options.style == "long" %}echo {{ vars.nowhere }}{% endif %}\n')
    result = optioned.cli("check")
    assert result.returncode == 2 and "templates/build/hello.sh.j2" in result.stderr and "nowhere" in result.stderr
    # ... and says which choice it rendered with: the default's render passes.
    assert result.stderr == ("mlbuild: templates/build/hello.sh.j2:7: build:hello-x86_64 (recipes/hello.toml): "
                             "vars.nowhere is undefined (vars has: greeting) (rendered with style=long)\n")
    # A mistake of the first round (every switch on, default choices) names no choice.
    optioned.write("templates/build/hello.sh.j2", HELLO_SH + "echo {{ vars.nowhere }}\n")
    first = optioned.cli("check")
    assert first.returncode == 2 and "nowhere" in first.stderr and "rendered with" not in first.stderr


def test_when_follows_a_declared_switch(optioned):
    optioned.update_recipe("extra", when="loud")
    assert "build:extra-x86_64" not in load(optioned).steps
    assert "build:extra-x86_64" in load(optioned, environ={"MLBUILD_LOUD": "1"}).steps


def test_when_cannot_name_a_choice_without_its_value(optioned):
    optioned.update_recipe("extra", when="style")
    assert error_of(optioned) == ("recipes/extra.toml: when: expected a switch a recipe declares ([options.style]), "
                                  "'style' is a choice of recipes/hello.toml, not a switch (write style=<choice>: short, long); "
                                  "switches: loud")


def test_when_option_equals_choice_builds_the_recipe_only_with_that_choice(optioned):
    optioned.update_recipe("extra", target=True, when="style=long")
    assert "build:extra-x86_64" not in load(optioned).steps
    chosen = load(optioned, {"style": "long"})
    assert "build:extra-x86_64" in chosen.steps
    assert "build:extra-x86_64" in chosen.graph.predecessors("build:target-x86_64")
    assert "build:extra-x86_64" not in load(optioned, environ={"MLBUILD_STYLE": "short"}).steps


def test_two_recipes_can_take_turns_on_the_choices_of_one_option(optioned):
    # As busybox and toybox do with userland: exactly one of them is in the system.
    optioned.update_recipe("hello", when="style=short", options={"loud": LOUD, "style": STYLE})
    extra = {key: value for key, value in optioned.recipes["extra"].items() if key != "source"}
    optioned.write_recipe("extra", {**extra, "when": "style=long", "sources": optioned.recipes["hello"]["sources"]})
    optioned.update_recipe("app", depends=[])
    built = {style: {name for name in load(optioned, {"style": style}).steps if name.startswith("build:")}
             for style in ("short", "long")}
    assert {"build:hello-x86_64", "build:app-x86_64"} <= built["short"] and "build:extra-x86_64" not in built["short"]
    assert {"build:extra-x86_64", "build:app-x86_64"} <= built["long"] and "build:hello-x86_64" not in built["long"]


def test_a_recipe_depending_on_one_that_the_choice_turns_off_says_why(optioned):
    optioned.update_recipe("hello", when="style=long", options={"loud": LOUD, "style": STYLE})
    assert error_of(optioned) == "recipes/app.toml: depends: 'hello' is off (it needs style=long, style is short)"


BAD_WHEN = {
    "unknown-option": ("colour=red", "when: expected option=choice of a choice option a recipe declares, "
                                     "'colour' is declared by no recipe; choice options: style"),
    "not-a-choice": ("style=medium", "when: 'medium' is not a choice of style (recipes/hello.toml): expected one of: short, long"),
    "a-switch-with-a-value": ("loud=on", "when: expected option=choice of a choice option a recipe declares, "
                                         "'loud' is a switch of recipes/hello.toml, not a choice (write when = 'loud'); choice options: style"),
    "unknown-switch": ("quiet", "when: expected a switch a recipe declares ([options.quiet]), 'quiet' is declared by no recipe; switches: loud"),
    "malformed": ("style = long", "when: expected a switch's name or option=choice (lowercase letters, digits and _, "
                                  "then = and a safe name), got 'style = long'"),
}


@pytest.mark.parametrize("case", BAD_WHEN, ids=list(BAD_WHEN))
def test_a_bad_when_is_one_line_naming_the_recipe_and_what_it_accepts(optioned, case):
    when, message = BAD_WHEN[case]
    optioned.update_recipe("extra", when=when)
    assert error_of(optioned) == f"recipes/extra.toml: {message}"


def test_mlbuild_check_renders_a_recipe_and_the_target_that_only_another_choice_turns_on(optioned):
    optioned.update_recipe("extra", target=True, when="style=long")
    optioned.write("templates/target/etc/motd.j2", "{% if 'extra' in versions %}{{ versions.nowhere }}{% endif %}\n")
    result = optioned.cli("check")
    assert result.returncode == 2 and "templates/target/etc/motd.j2" in result.stderr and "nowhere" in result.stderr


# --- declarations ------------------------------------------------------------------------------

def test_two_recipes_may_declare_the_same_option_word_for_word_and_both_react_to_it(optioned):
    optioned.update_recipe("extra", options={"loud": LOUD})
    project = load(optioned, {"loud": "1"})
    assert project.steps["build:extra-x86_64"].doc == "build extra 1.0 for x86_64 (loud=true)"
    assert project.steps["build:hello-x86_64"].options == {"loud": True, "style": "short"}


def test_two_recipes_declaring_the_same_option_otherwise_is_an_error_naming_both(optioned):
    optioned.update_recipe("extra", options={"loud": {**LOUD, "default": True}})
    assert error_of(optioned) == (
        "recipes/hello.toml: options.loud: declared otherwise by recipes/extra.toml; "
        "a recipe that reacts to another's option repeats its declaration as it is")


BAD_DECLARATIONS = {
    "switch-with-a-word": ({"loud": {"help": "h", "default": "yes"}},
                           "options.loud: default: expected true or false (a switch), or give 'choices', got 'yes'"),
    "default-not-a-choice": ({"style": {**STYLE, "default": "medium"}},
                             "options.style: default: expected one of the choices (short, long), got 'medium'"),
    "choice-with-a-boolean-default": ({"style": {**STYLE, "default": True}},
                                      "options.style: default: expected one of the choices (short, long), got True"),
    "a-choice-twice": ({"style": {**STYLE, "choices": ["short", "short"]}}, "options.style: choices: expected each choice once"),
    "no-help": ({"loud": {"default": True}}, "options.loud.help: required field is missing"),
    "unsafe-name": ({"Loud-er": LOUD}, "options.Loud-er: expected lowercase letters, digits and _ (a configuration key), got 'Loud-er'"),
    "an-engine-key": ({"jobs": LOUD}, "options: jobs: a configuration key of mlbuild itself; choose another name"),
    "an-engine-variable": ({"lock_wait": LOUD}, "options.lock_wait: MLBUILD_LOCK_WAIT is a variable of mlbuild itself; choose another name"),
    "unknown-field": ({"loud": {**LOUD, "choice": ["a"]}}, "options.loud.choice: unknown field (did you mean 'choices'?)"),
}


@pytest.mark.parametrize("case", BAD_DECLARATIONS, ids=list(BAD_DECLARATIONS))
def test_a_bad_option_declaration_is_one_line_naming_the_recipe_and_field(project, case):
    options, message = BAD_DECLARATIONS[case]
    project.update_recipe("hello", options=options)
    assert error_of(project) == f"recipes/hello.toml: {message}"


# --- versions taken from the source recipe --------------------------------------------------

def test_a_recipe_using_another_s_source_takes_its_version_unless_it_gives_its_own(project):
    extra = {key: value for key, value in project.recipes["extra"].items() if key != "version"}
    project.write_recipe("extra", extra)
    loaded = load(project)
    assert loaded.recipes["extra"].version == "1.0"
    assert loaded.steps["build:extra-x86_64"].inputs()["recipe:version"] == "1.0"  # as if written out: nothing rebuilds
    assert loaded.steps["build:extra-x86_64"].doc == "build extra 1.0 for x86_64"
    project.update_recipe("hello", version="2.0")
    assert load(project).recipes["extra"].version == "2.0"  # the recipes cache follows the source recipe's file
    project.update_recipe("extra", version="0.9")
    assert load(project).recipes["extra"].version == "0.9"


def test_the_recipes_cache_holds_the_inherited_version_and_is_read_back(project):
    project.write_recipe("extra", {key: value for key, value in project.recipes["extra"].items() if key != "version"})
    load(project)
    cache = project.path("build/cache/recipes.json")
    assert json.loads(unseal("recipes", cache.read_bytes()))["recipes"]["extra"]["version"] == "1.0"
    written = cache.stat().st_mtime_ns
    assert load(project).recipes["extra"].version == "1.0"
    assert cache.stat().st_mtime_ns == written  # the second load read the cache, and found the version in it


def test_a_recipe_with_its_own_sources_must_give_its_version(project):
    project.write_recipe("app", {key: value for key, value in project.recipes["app"].items() if key != "version"})
    assert error_of(project) == "recipes/app.toml: version: required field is missing (only a recipe with 'source' may leave it out)"


def test_a_version_cannot_come_from_an_unknown_source_recipe(project):
    extra = {key: value for key, value in project.recipes["extra"].items() if key != "version"}
    project.write_recipe("extra", {**extra, "source": "helo"})
    assert error_of(project) == "recipes/extra.toml: source: unknown recipe 'helo' (did you mean 'hello'?)"


# --- image_profile = "auto" -------------------------------------------------------------------

def test_auto_is_runtime_unless_a_recipe_of_the_arch_s_target_needs_the_full_tree(tmp_path):
    project = make_project(tmp_path, arches=("x86_64", "arm64"))
    assert {arch: image_profile.resolve(load(project), arch) for arch in ("x86_64", "arm64")} == {"x86_64": "runtime", "arm64": "runtime"}
    project.update_recipe("extra", image_profile="full", arches=["arm64"])  # a compiler, on arm64 only
    loaded = load(project)
    assert {arch: image_profile.resolve(loaded, arch) for arch in ("x86_64", "arm64")} == {"x86_64": "runtime", "arm64": "full"}
    assert image_profile.inputs(loaded.steps["build:images-arm64"]) == {}  # full: the images' signature as before profiles
    assert image_profile.resolve(load(project, {"image_profile": "runtime"}), "arm64") == "runtime"  # the configuration decides


def test_auto_ignores_a_full_recipe_outside_the_target(project):
    project.update_recipe("extra", image_profile="full", target=False)
    assert image_profile.resolve(load(project), "x86_64") == "runtime"
    project.update_recipe("extra", target=True, when="loud", options={"loud": LOUD})  # in the target only when loud is on
    assert image_profile.resolve(load(project), "x86_64") == "runtime"
    assert image_profile.resolve(load(project, {"loud": "1"}), "x86_64") == "full"


# --- the project's own recipes ------------------------------------------------------------------

def real(tmp_path, **settings) -> Loaded:
    return Loaded(REPO, {"build_dir": str(tmp_path / "build"), **settings}, environ={})


def test_the_llvm_recipes_take_llvm_project_s_version(tmp_path):
    recipes = real(tmp_path).recipes
    assert {name: recipes[name].version for name in ("clang", "llvm", "llvm-runtimes", "compiler-rt")} == dict.fromkeys(
        ("clang", "llvm", "llvm-runtimes", "compiler-rt"), recipes["llvm-project"].version)


def test_target_llvm_and_kernel_config_are_the_options_of_clang_and_linux(tmp_path):
    project = real(tmp_path)
    assert {name: found.recipe for name, found in project.declared_options.items()} == {
        "kernel_config": "linux", "target_llvm": "clang", "userland": "busybox"}  # toybox repeats userland's declaration
    assert project.options == {"kernel_config": "qemu", "target_llvm": True, "userland": "busybox"}
    assert project.steps["build:linux-x86_64"].doc == "build linux 6.1.176 for x86_64 (kernel_config=qemu)"
    assert {arch: image_profile.resolve(project, arch) for arch in ("x86_64", "arm64")} == {"x86_64": "full", "arm64": "full"}
    small = real(tmp_path, target_llvm="0", kernel_config="defconfig")
    assert "build:clang-x86_64" not in small.steps
    assert {arch: image_profile.resolve(small, arch) for arch in ("x86_64", "arm64")} == {"x86_64": "runtime", "arm64": "runtime"}
    script = small.steps["build:linux-arm64"].script
    assert "\nkmake defconfig\n" in script and "kmake tinyconfig" not in script


def test_userland_chooses_busybox_or_toybox_and_each_brings_its_own_checks(tmp_path):
    default, toybox = real(tmp_path, target_llvm="0"), real(tmp_path, target_llvm="0", userland="toybox")
    components = {name: {step.recipe.name for step in project.steps["build:target-x86_64"].components}
                  for name, project in (("busybox", default), ("toybox", toybox))}
    assert components["busybox"] - components["toybox"] == {"busybox"}
    assert components["toybox"] - components["busybox"] == {"toybox"}
    assert {check.name for check in toybox.recipes["toybox"].checks} == {"commands", "edit"}
    inittab = toybox.steps["build:target-x86_64"].etc_files["etc/inittab"]
    assert "cttyhack" not in inittab and "cttyhack" in default.steps["build:target-x86_64"].etc_files["etc/inittab"]
    assert "\nkmake install PREFIX=\"$OUT\"\n" in toybox.steps["build:toybox-arm64"].script
