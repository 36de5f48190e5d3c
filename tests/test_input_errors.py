"""Bad recipes and templates: one line naming the file, the field (or line) and what was expected."""

import pytest



def _drop(project, recipe, field):
    project.write_recipe(recipe, {k: v for k, v in project.recipes[recipe].items() if k != field})


# name: (change to the synthetic project, the whole expected stderr line)
RECIPE_ERRORS = {
    "unknown-dependency": (
        lambda p: p.update_recipe("app", depends=["helo"]),
        "recipes/app.toml: depends: unknown recipe 'helo' (did you mean 'hello'?)"),
    "unknown-source-recipe": (
        lambda p: p.update_recipe("extra", source="hallo"),
        "recipes/extra.toml: source: unknown recipe 'hallo' (did you mean 'hello'?)"),
    "name-not-matching-the-file-name": (  # so two files can never declare the same name
        lambda p: p.update_recipe("extra", name="hello"),
        "recipes/extra.toml: name: expected 'extra' (the file's name), got 'hello'"),
    "sha256-too-short": (
        lambda p: p.update_recipe("app", sources=[{"url": "file:///x.tar.gz", "sha256": "abc123"}]),
        "recipes/app.toml: sources[0].sha256: expected 64 hex digits (a sha256), got 6 characters"),
    "sha256-not-hex": (
        lambda p: p.update_recipe("app", sources=[{"url": "file:///x.tar.gz", "sha256": "z" * 64}]),
        f"recipes/app.toml: sources[0].sha256: expected 64 hex digits (a sha256), got {'z' * 64!r}"),
    "size-zero": (
        lambda p: p.update_recipe("app", sources=[{**p.recipes["app"]["sources"][0], "size": 0}]),
        "recipes/app.toml: sources[0].size: Input should be greater than or equal to 1"),
    "size-as-text": (
        lambda p: p.update_recipe("app", sources=[{**p.recipes["app"]["sources"][0], "size": "136"}]),
        "recipes/app.toml: sources[0].size: Input should be a valid integer, got '136'"),
    "unsupported-arch-in-arches": (
        lambda p: p.update_recipe("app", arches=["x86_64", "riscv"]),
        "recipes/app.toml: arches: unsupported arch 'riscv' (did you mean 'riscv64'?), expected one of: x86_64, arm64, riscv64"),
    "unsupported-arch-of-a-check": (
        lambda p: p.update_recipe("app", checks=[{"name": "app", "command": "app", "expect": "^app", "arches": ["arm46"]}]),
        "recipes/app.toml: checks[0].arches: unsupported arch 'arm46' (did you mean 'arm64'?), expected one of: x86_64, arm64, riscv64"),
    "unsupported-arch-table": (
        lambda p: p.update_recipe("app", arch={"mips": {"vars": {"a": "b"}}}),
        "recipes/app.toml: arch: unsupported arch 'mips', expected one of: x86_64, arm64, riscv64"),
    "unsafe-name": (
        lambda p: p.update_recipe("app", name="app $(reboot)"),
        "recipes/app.toml: name: expected lowercase letters, digits and + _ . - (a safe name), got 'app $(reboot)'"),
    "unsafe-version": (
        lambda p: p.update_recipe("app", version="1.0;rm"),
        "recipes/app.toml: version: expected letters, digits and + _ . ~ - (a safe version), got '1.0;rm'"),
    "unsafe-dependency-name": (
        lambda p: p.update_recipe("app", depends=["../etc"]),
        "recipes/app.toml: depends[0]: expected lowercase letters, digits and + _ . - (a safe name), got '../etc'"),
    "missing-build-template": (
        lambda p: p.update_recipe("app", build="cmake"),
        "recipes/app.toml: build: no file templates/build/cmake.sh.j2"),
    "unknown-field": (
        lambda p: p.update_recipe("app", dependencies=["hello"]),
        "recipes/app.toml: dependencies: unknown field (did you mean 'depends'?)"),
    "unknown-field-in-a-source": (
        lambda p: p.update_recipe("app", sources=[{**p.recipes["app"]["sources"][0], "sha265": "x"}]),
        "recipes/app.toml: sources[0].sha265: unknown field (did you mean 'sha256'?)"),
    "invalid-toml": (
        lambda p: p.write("recipes/app.toml", 'name = "app"\nversion = \n'),
        "recipes/app.toml: not valid TOML: Invalid value (at line 2, column 11)"),
    "missing-required-field": (
        lambda p: _drop(p, "app", "version"),
        "recipes/app.toml: version: required field is missing (only a recipe with 'source' may leave it out)"),
    "both-sources-and-source": (
        lambda p: p.update_recipe("extra", sources=p.recipes["hello"]["sources"]),
        "recipes/extra.toml: (top level): give either 'sources' or 'source', not both"),
    "neither-sources-nor-source": (
        lambda p: _drop(p, "extra", "source"),
        "recipes/extra.toml: (top level): give 'sources' (where to download) or 'source' (another recipe's)"),
    "dependency-cycle": (
        lambda p: p.update_recipe("hello", depends=["app"]),
        "recipes: dependency cycle: app -> hello -> app"),
    "kconfig-outside-the-output": (
        lambda p: p.update_recipe("app", kconfig="../boot/config"),
        "recipes/app.toml: kconfig: expected a relative path of letters, digits and _ . / -, got '../boot/config'"),
    "kconfig-without-build": (
        lambda p: p.write_recipe("srconly", {**{k: v for k, v in p.recipes["app"].items() if k not in ("build", "depends", "vars")},
                                             "name": "srconly", "kconfig": "boot/config"}),
        "recipes/srconly.toml: (top level): a recipe without 'build' cannot have 'kconfig' (the configuration its build installs)"),
    "reserved-name": (
        lambda p: (p.path("recipes/extra.toml").unlink(), p.write_recipe("target", {**p.recipes["extra"], "name": "target"})),
        "recipes/target.toml: name: 'target' is reserved for an aggregate task"),
}


@pytest.mark.parametrize("case", RECIPE_ERRORS, ids=list(RECIPE_ERRORS))
def test_a_recipe_error_exits_2_with_one_line_naming_file_and_field_and_runs_nothing(case, project):
    change, message = RECIPE_ERRORS[case]
    change(project)
    result = project.doit()
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"mlbuild: {message}\n"
    assert result.stdout == ""
    assert result.executed == set()
    assert not project.path("build/state").exists()


# --- templates: every one is rendered when the project loads, before any task ----------

COMMON = "templates/build/_common.sh.j2"

# name: (change, the whole expected stderr line)
TEMPLATE_ERRORS = {
    "jinja-syntax-error": (
        lambda p: p.edit("templates/build/app.sh.j2", "mkdir", "{% if %}\nmkdir"),
        "templates/build/app.sh.j2:5: Expected an expression, got 'end of statement block'"),
    "undefined-variable": (
        lambda p: p.edit("templates/build/app.sh.j2", "mkdir", "echo {{ vars.mesage }}\nmkdir"),
        "templates/build/app.sh.j2:5: build:app-x86_64 (recipes/app.toml): vars.mesage is undefined (did you mean vars.message?)"),
    "typo-in-a-recipes-vars-key": (
        lambda p: p.update_recipe("app", vars={"mesage": "app says hi"}),
        "templates/build/app.sh.j2:2: build:app-x86_64 (recipes/app.toml): vars.message is undefined (did you mean vars.mesage?)"),
    "undefined-variable-in-an-included-template": (
        lambda p: (p.write(COMMON, "# shared\necho {{ vars.missing }}\n"),
                   p.edit("templates/build/app.sh.j2", "mkdir", "{% include 'build/_common.sh.j2' %}\nmkdir")),
        "templates/build/_common.sh.j2:2: build:app-x86_64 (recipes/app.toml): vars.missing is undefined (vars has: message)"),
    "syntax-error-in-an-included-template": (
        lambda p: (p.write(COMMON, "# shared\n{% endif %}\n"),
                   p.edit("templates/build/app.sh.j2", "mkdir", "{% include 'build/_common.sh.j2' %}\nmkdir")),
        "templates/build/_common.sh.j2:2: Encountered unknown tag 'endif'."),
    "missing-included-template": (
        lambda p: p.edit("templates/build/app.sh.j2", "mkdir", "{% include 'build/_nope.sh.j2' %}\nmkdir"),
        "templates/build/app.sh.j2: template 'build/_nope.sh.j2' not found"),
    "undefined-variable-in-a-target-file": (
        lambda p: p.write("templates/target/etc/hostname.j2", "{{ arch }}\n{{ hostname }}\n"),
        "templates/target/etc/hostname.j2:2: build:target-x86_64: 'hostname' is undefined"),
}


@pytest.mark.parametrize("case", TEMPLATE_ERRORS, ids=list(TEMPLATE_ERRORS))
def test_a_template_error_exits_2_with_one_line_naming_template_and_line_and_runs_nothing(case, project):
    change, message = TEMPLATE_ERRORS[case]
    change(project)
    result = project.doit()
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"mlbuild: {message}\n"
    assert result.executed == set() and result.stdout == ""


def test_mlbuild_check_reports_a_template_error_the_same_way(project):
    change, message = TEMPLATE_ERRORS["undefined-variable-in-an-included-template"]
    change(project)
    check = project.cli("check")
    assert check.returncode == 2
    assert check.stderr == f"mlbuild: {message}\n"


def test_a_template_error_in_a_built_tree_is_found_too(built):
    # The render cache of the built tree must not hide the broken template.
    built.edit("templates/build/app.sh.j2", "mkdir", "echo {{ nope }}\nmkdir")
    result = built.doit()
    assert result.returncode == 2
    assert result.stderr == "mlbuild: templates/build/app.sh.j2:5: build:app-x86_64 (recipes/app.toml): 'nope' is undefined\n"
    assert result.executed == set()
