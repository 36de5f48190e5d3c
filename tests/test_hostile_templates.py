"""Templates run no Python: every template is rendered in jinja's immutable sandbox.

A template from an external tree or an overlay is rendered by `mlbuild check` and when the
tasks load, outside any build sandbox. Each known way out of jinja (a function's __globals__,
__subclasses__, __builtins__, __class__.__mro__, .mro(), attribute access inside format
strings, |attr('format'), |format, changing a value the template is given) is tried with a
real `mlbuild check` and `doit`: one line naming the template and the unsafe attribute,
exit status 2, and the canary file the escape would write never exists.
"""

import pytest

CANARY = "CANARY"  # replaced by a path in the test's folder

ESCAPES = {
    "function-globals": "{{ cycler.__init__.__globals__.os.system('touch CANARY') }}",
    "lipsum-builtins": "{{ lipsum.__globals__['__builtins__'].open('CANARY', 'w') }}",
    "builtins-import": "{{ joiner.__init__.__globals__.__builtins__.__import__('os').system('touch CANARY') }}",
    "subclasses": "{{ ().__class__.__base__.__subclasses__() }}",
    "class-mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "mro-method": "{{ cycler.mro()[1].__subclasses__() }}",
    "template-self": "{{ self.__init__.__globals__.sys.modules.os.system('touch CANARY') }}",
    "format-string": "{{ '{0.__init__.__globals__[os].system}'.format(cycler) }}",
    "format-map": "{{ '{x.__init__.__globals__}'.format_map({'x': cycler}) }}",
    "attr-format": "{{ ('{0.__init__.__globals__}'|attr('format'))(cycler) }}",
    "format-filter": "{{ '%s'|format(cycler.__init__.__globals__) }}",
    "change-a-value": "{{ vars.update({'message': '$(touch CANARY)'}) }}",
}


@pytest.mark.parametrize("escape", ESCAPES, ids=list(ESCAPES))
def test_a_template_escaping_the_sandbox_is_one_line_and_runs_nothing(project, tmp_path, escape):
    canary = tmp_path / "canary"
    project.edit("templates/build/app.sh.j2", "mkdir", ESCAPES[escape].replace(CANARY, str(canary)) + "\nmkdir")
    for result in (project.cli("check"), project.doit("list")):
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[0].startswith("mlbuild: templates/build/app.sh.j2:5: build:app-x86_64 (recipes/app.toml): refused: "
                                   "the template reaches for an unsafe attribute ("), lines[0]
        assert "is unsafe" in lines[0] and lines[0].endswith("templates run in jinja's sandbox")
    assert not canary.exists()


def test_an_overlay_template_is_sandboxed_too(project, tmp_path):
    canary = tmp_path / "canary"
    project.write("overlay/etc/motd.j2", ESCAPES["function-globals"].replace(CANARY, str(canary)) + "\n")
    project.edit("pyproject.toml", "jobs = 2\n", 'jobs = 2\noverlays = ["overlay"]\n')
    result = project.doit("list")
    assert result.returncode == 2
    assert result.stderr.startswith("mlbuild: overlay/etc/motd.j2:1: build:target-x86_64: refused: the template reaches "
                                    "for an unsafe attribute (access to attribute '__init__' of 'type' object is unsafe)")
    assert result.stderr.count("\n") == 1 and not canary.exists()


def test_what_templates_do_safely_still_works(project):
    """Formatting, filters and methods that read: the sandbox refuses only what reaches out or changes a value."""
    line = ('printf "%s\\n" {{ "{}-{}".format(recipe.name, arch) }} {{ "%s!"|format(vars.message) }} '
            '{{ vars.items()|list|length }} {{ files|join(",") or "none" }} {{ "A,B".lower().split(",")|join }}')
    project.edit("templates/build/app.sh.j2", "mkdir", line + " > info.txt\nmkdir")
    project.edit("templates/build/app.sh.j2", 'cp app "$OUT/bin/app"', 'cp app "$OUT/bin/app"\ncp info.txt "$OUT/info.txt"')
    result = project.doit()
    assert result.returncode == 0, result.stdout + result.stderr
    assert project.read("target/x86_64/info.txt") == "app-x86_64\napp says hi!\n1\nnone\nab\n"


def test_every_jinja_environment_is_the_sandboxed_one():
    """A new Environment( elsewhere would render outside the sandbox: render.sandboxed_environment is the one way."""
    import re

    from conftest import SRC

    made = {(path.relative_to(SRC).as_posix(), match) for path in SRC.rglob("*.py")
            for match in re.findall(r"\b(\w*Environment)\(", path.read_text())}
    assert made == {("mlbuild/render.py", "ImmutableSandboxedEnvironment")}
