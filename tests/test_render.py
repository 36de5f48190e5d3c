"""mlbuild.render: build scripts get every value shell-quoted; errors name templates/<file>:<line>."""

import subprocess

import pytest

from mlbuild.errors import InputError
from mlbuild.render import render

TRICKY = ["plain", "two words", "it's", 'say "hi"', "$HOME and $(reboot) and `reboot`", "a;b|c&d", "", "new\nline", "*"]


@pytest.fixture
def templates(tmp_path):
    folder = tmp_path / "templates"
    (folder / "build").mkdir(parents=True)
    return folder


def template(templates, text: str, name: str = "build/t.sh.j2") -> str:
    (templates / name).write_text(text)
    return name


def run_bash(script: str) -> str:
    result = subprocess.run(["bash", "-eu", "-c", script], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("value", TRICKY, ids=range(len(TRICKY)))
def test_a_string_becomes_one_shell_word_with_its_exact_value(templates, value):
    name = template(templates, 'value={{ v }}\nprintf "%s" "$value"\n')
    assert run_bash(render(templates, name, {"v": value}, for_shell=True)) == value


def test_a_list_becomes_quoted_words(templates):
    name = template(templates, 'args=({{ items }})\nprintf "[%s]" "${args[@]}"\nprintf "%s" {{ items }} > /dev/null\n')
    script = render(templates, name, {"items": ["a b", "it's", "$x", "-O2"]}, for_shell=True)
    assert script.splitlines()[0] == "args=('a b' 'it'\"'\"'s' '$x' -O2)"
    assert run_bash(script) == "[a b][it's][$x][-O2]"


def test_the_unquoted_filter_inserts_text_verbatim(templates):
    name = template(templates, 'cd {{ dir | unquoted }} && echo {{ "$PWD" }}\n')
    assert render(templates, name, {"dir": '"$OUT/bin"'}, for_shell=True) == "cd \"$OUT/bin\" && echo '$PWD'\n"


def test_booleans_become_1_or_empty_and_numbers_stay_numbers(templates):
    name = template(templates, "on={{ on }} off={{ off }} jobs={{ jobs }}\n")
    assert render(templates, name, {"on": True, "off": False, "jobs": 8}, for_shell=True) == "on=1 off= jobs=8\n"


def test_template_text_itself_is_not_quoted_and_plain_files_are_not_quoted_at_all(templates):
    name = template(templates, 'echo "$HOME" {{ v }}\n')
    assert render(templates, name, {"v": "a b"}, for_shell=True) == "echo \"$HOME\" 'a b'\n"
    # A file's language comes from its name: a .sh file is shell wherever it is rendered; other text is verbatim.
    assert render(templates, name, {"v": "a b"}) == "echo \"$HOME\" 'a b'\n"
    plain = template(templates, 'echo "$HOME" {{ v }}\n', "t.txt.j2")
    assert render(templates, plain, {"v": "a b"}) == 'echo "$HOME" a b\n'


def test_an_undefined_variable_is_an_input_error_naming_the_template_and_line(templates):
    name = template(templates, "# line 1\necho ok\necho {{ vars.missing }}\n")
    for for_shell in (True, False):
        with pytest.raises(InputError) as raised:
            render(templates, name, {"vars": {}}, for_shell=for_shell)
        assert str(raised.value) == "templates/build/t.sh.j2:3: vars.missing is undefined (vars is empty)"
        assert raised.value.exit_status == 2


@pytest.mark.parametrize("text, message", [
    ("{{ vars.greting }}", "vars.greting is undefined (did you mean vars.greeting?)"),
    ("{{ vars.zzz }}", "vars.zzz is undefined (vars has: greeting, jobs)"),
    ("{{ arhc }}", "'arhc' is undefined (did you mean arch?)"),
    ("{{ vars.greting.upper() }}", "vars.greting is undefined (did you mean vars.greeting?)"),
    ("{% if vars.greting %}x{% endif %}", "vars.greting is undefined (did you mean vars.greeting?)"),
    ("{{ files[3] }}", "files[3] is undefined (files has 0 items)"),
    ("{{ vars.jobs.real.imga }}", "'imga' of the int is undefined (did you mean imag?)"),
])
def test_an_undefined_name_says_what_was_looked_up_where_with_a_did_you_mean(templates, text, message):
    name = template(templates, f"true\n{text}\n")
    context = {"vars": {"greeting": "hi", "jobs": 2}, "arch": "x86_64", "files": []}
    with pytest.raises(InputError) as raised:
        render(templates, name, context, for_shell=True, about="build:app-x86_64 (recipes/app.toml)")
    assert str(raised.value) == f"templates/build/t.sh.j2:2: build:app-x86_64 (recipes/app.toml): {message}"


def test_an_undefined_variable_in_an_included_template_names_the_included_file(templates):
    template(templates, "a\nb\n{{ nope }}\n", "build/_part.sh.j2")
    name = template(templates, "x\n{% include 'build/_part.sh.j2' %}\n")
    with pytest.raises(InputError, match=r"^templates/build/_part.sh.j2:3: 'nope' is undefined$"):
        render(templates, name, {}, for_shell=True)


def test_a_syntax_error_is_an_input_error_naming_the_template_and_line(templates):
    name = template(templates, "echo ok\n{% for x in %}\n{% endfor %}\n")
    with pytest.raises(InputError, match=r"^templates/build/t.sh.j2:2: "):
        render(templates, name, {}, for_shell=True)


def test_a_missing_template_is_an_input_error(templates):
    with pytest.raises(InputError, match=r"^templates/build/none.sh.j2: template 'build/none.sh.j2' not found$"):
        render(templates, "build/none.sh.j2", {})
