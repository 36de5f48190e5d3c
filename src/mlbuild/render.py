"""jinja2 rendering: every value escaped for the language of the file it lands in.

A recipe may come from a shared tree: no value of it may turn into code. So
`{{ value }}` is escaped by the environment itself (jinja's finalize), chosen by
the template's kind: build scripts are shell (each value one quoted word),
`*.cmake*` files CMake (every special character backslash-escaped, valid inside
and outside quotes and in comments), `*.config*` files Kconfig (quotes and
backslashes escaped, line breaks refused); other files (the target's /etc) are
plain text. `| unquoted` inserts a value verbatim and is meant for the engine's
own fixed words only.

A shell template cannot put `{{ value }}` inside quotes or an expanding
here-document, where the quoting would not protect it (`"{{ v }}"` lets
`$(…)` in v run): loading such a template fails naming its line, so the
mistake cannot reach a build (and `mlbuild check` reports it).

Templates come from external trees and overlays too, and are rendered by
`mlbuild check` and when tasks load, outside any build sandbox: every
environment is jinja's immutable sandbox (no `__globals__`, `__subclasses__`,
`.mro()`, format-string attribute access, nor changing a value it is given),
and a template that reaches for such an attribute is one line naming it. A
name or attribute that is not there is one line too, with the task, the
recipe and a did-you-mean among the names that are.
"""

import difflib
import os
import re
import shlex
from collections.abc import Mapping
from functools import cache, partial
from pathlib import Path

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.utils import missing

from mlbuild.errors import InputError


class Unquoted(str):
    """Text a template inserts verbatim: `{{ x | unquoted }}`."""


class UnsafeValue(ValueError):
    """A value that cannot be written safely in the file's language."""


# --- escaping, per language ----------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shell_word(value) -> str:
    if isinstance(value, Unquoted):
        return value
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, (list, tuple)):
        return " ".join(_shell_word(item) for item in value)
    text = str(value)
    if _CONTROL.search(text):
        # bash's $'…' keeps a line break on its line: a value can never end a comment or start a command.
        return "$'" + "".join(_ansi_c(char) for char in text) + "'"
    return shlex.quote(text)


def _ansi_c(char: str) -> str:
    if char in "\\'":
        return "\\" + char
    if _CONTROL.match(char):
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(char, f"\\x{ord(char):02x}")
    return char


_CMAKE_SPECIAL = re.compile(r'([\\"$@^()#\[\] ])')


def _cmake_text(value) -> str:
    """A CMake argument's text: escapes are valid in quoted and unquoted arguments alike; ';' separates lists."""
    if isinstance(value, Unquoted):
        return value
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    if isinstance(value, (list, tuple)):
        return ";".join(_cmake_text(str(item).replace(";", "\\;")) for item in value)
    text = str(value)
    text = _CMAKE_SPECIAL.sub(r"\\\1", text)
    text = text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if _CONTROL.search(text):
        raise UnsafeValue(f"{str(value)!r} has a control character, which a CMake file cannot hold")
    return text


def _kconfig_text(value) -> str:
    """A Kconfig value (quoted string or bare word): backslash and quote escaped, one line only."""
    if isinstance(value, Unquoted):
        return value
    if isinstance(value, bool):
        return "y" if value else "n"
    if isinstance(value, (list, tuple)):
        return " ".join(_kconfig_text(item) for item in value)
    text = str(value)
    if _CONTROL.search(text):
        raise UnsafeValue(f"{text!r} has a line break or control character, which a Kconfig line cannot hold")
    return text.replace("\\", "\\\\").replace('"', '\\"')


FINALIZERS = {"shell": _shell_word, "cmake": _cmake_text, "kconfig": _kconfig_text, "text": None}


def language_of(name: str) -> str:
    """The language of a template, from its name (scripts are rendered as shell by the caller)."""
    stem = name.removesuffix(".j2")
    if stem.endswith(".sh"):
        return "shell"
    if stem.endswith(".cmake"):
        return "cmake"
    if stem.endswith(".config") or Path(stem).name == "Kconfig":
        return "kconfig"
    return "text"


# --- the shell check -----------------------------------------------------------------

def raw_expansions(source: str) -> list[tuple[int, str, str]]:
    """(line, where, expression) of each `{{ … }}` inside quotes or an expanding here-document of a shell template."""
    return _ShellScan(source).run()


class _ShellScan:
    CODE = {"code", "sub", "paren", "bt"}

    def __init__(self, source: str):
        self.s = source
        self.i = 0
        self.line = 1
        self.stack = ["code"]
        self.heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, strip tabs, expands)
        self.found: list[tuple[int, str, str]] = []

    def run(self):
        s = self.s
        while self.i < len(s):
            if s.startswith(("{{", "{%", "{#"), self.i):
                self._jinja(self._where())
                continue
            char, state = s[self.i], self.stack[-1]
            if char == "\n":
                self.line += 1
                self.i += 1
                if self.heredocs and state in self.CODE:
                    self._heredoc_bodies()
                continue
            if state == "sq":
                if char == "'":
                    self.stack.pop()
            elif state in ("dq", "ansi"):
                if char == "\\":
                    self._skip_escaped()
                    continue
                if char == '"' and state == "dq" or char == "'" and state == "ansi":
                    self.stack.pop()
                elif state == "dq" and s.startswith("$(", self.i):
                    self.stack.append("sub")
                    self.i += 1
                elif state == "dq" and char == "`":
                    self.stack.append("bt")
            else:
                self._code(char)
                continue
            self.i += 1
        return self.found

    def _where(self) -> str | None:
        state = self.stack[-1]
        return {"dq": "double quotes", "sq": "single quotes", "ansi": "$'…' quotes"}.get(state)

    def _skip_escaped(self):
        if self.s.startswith("\\\n", self.i):
            self.line += 1
        self.i += 2

    def _jinja(self, where: str | None, in_heredoc: bool = False):
        s = self.s
        closer = {"{{": "}}", "{%": "%}", "{#": "#}"}[s[self.i:self.i + 2]]
        end = s.find(closer, self.i + 2)
        end = len(s) if end < 0 else end
        body = s[self.i + 2:end]
        if closer == "}}" and where:
            expression = body.strip().strip("-+").strip()
            if not re.search(r"\|\s*unquoted\s*$", expression):
                self.found.append((self.line, where, expression))
        self.line += body.count("\n")
        self.i = end + 2

    def _code(self, char: str):
        s, stack = self.s, self.stack
        previous = s[self.i - 1] if self.i else "\n"
        if char == "\\":
            self._skip_escaped()
            return
        if char == "'":
            stack.append("sq")
        elif char == '"':
            stack.append("dq")
        elif s.startswith("$'", self.i):
            stack.append("ansi")
            self.i += 1
        elif s.startswith("$(", self.i):
            stack.append("sub")
            self.i += 1
        elif char == "(":
            stack.append("paren")
        elif char == ")" and stack[-1] in ("sub", "paren"):
            stack.pop()
        elif char == "`":
            stack.pop() if stack[-1] == "bt" else stack.append("bt")
        elif char == "#" and (previous.isspace() or previous in ";&|()"):
            end = s.find("\n", self.i)
            self.i = len(s) if end < 0 else end
            return
        elif s.startswith("<<", self.i) and not s.startswith("<<<", self.i):
            match = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2").match(s, self.i)
            if match:
                self.heredocs.append((match.group(3), match.group(1) == "-", match.group(2) == ""))
                self.i = match.end()
                return
        self.i += 1

    def _heredoc_bodies(self):
        s = self.s
        for delimiter, strip_tabs, expands in self.heredocs:
            while self.i < len(s):
                end = s.find("\n", self.i)
                end = len(s) if end < 0 else end
                text = s[self.i:end]
                if (text.lstrip("\t") if strip_tabs else text) == delimiter:
                    self.i = end  # the main loop counts this line's end
                    break
                for match in re.finditer(r"\{\{(.*?)\}\}", text) if expands else ():
                    expression = match.group(1).strip().strip("-+").strip()
                    if not re.search(r"\|\s*unquoted\s*$", expression):
                        self.found.append((self.line, "an expanding here-document", expression))
                self.i = end + 1
                self.line += 1
        self.heredocs = []


class _CheckedLoader(jinja2.FileSystemLoader):
    """Loads shell templates only if no value is expanded where its quoting would not hold."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        problems = raw_expansions(source)
        if problems:
            line, where, expression = problems[0]
            raise jinja2.TemplateSyntaxError(raw_expansion_message(where, expression), line, template, filename)
        return source, filename, uptodate


def raw_expansion_message(where: str, expression: str) -> str:
    return (f"{{{{ {expression} }}}} is inside {where}, where shell quoting does not protect it "
            f"(a value's $(…) would run): write it outside the quotes, e.g. \"$DIR\"/{{{{ {expression} }}}}")


def _folders(templates: "Path | tuple[Path, ...]") -> tuple[Path, ...]:
    """The folders searched, first match wins (external trees' before the project's, which is last)."""
    return (templates,) if isinstance(templates, Path) else tuple(templates)


def _label(templates, name: str) -> str:
    """templates/<name>, or ../my-layer/templates/<name> when an external tree's template is the one found."""
    folders = _folders(templates)
    for folder in folders[:-1]:
        if (folder / name).is_file():
            return f"{os.path.relpath(folder, folders[-1].parent)}/{name}"
    return f"templates/{name}"


# --- the sandbox and undefined names ------------------------------------------------------

class MissingName(jinja2.UndefinedError):
    """A name or attribute a template reads that is not there; name and container make the did-you-mean."""

    def __init__(self, message: str, name, container):
        super().__init__(message)
        self.name, self.container = name, container


class _Undefined(jinja2.StrictUndefined):
    """jinja's StrictUndefined (any use fails), whose failure says what was looked up where.

    The sandbox's refusals (an unsafe attribute) keep their own exception, SecurityError."""

    __slots__ = ()

    def __init__(self, hint=None, obj=missing, name=None, exc=jinja2.UndefinedError):
        if exc is jinja2.UndefinedError and hint is None:
            exc = partial(MissingName, name=name, container=obj)
        super().__init__(hint, obj, name, exc)


def sandboxed_environment(loader: jinja2.BaseLoader, finalize=None) -> jinja2.Environment:
    """The one kind of jinja environment mlbuild renders with: sandboxed, immutable values, strict undefined names."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # here: a no-op renders nothing (the render cache)

    env = ImmutableSandboxedEnvironment(
        loader=loader,
        undefined=_Undefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,  # templates do not change during a run: no stat() per render
        finalize=finalize,
    )
    env.filters["unquoted"] = Unquoted
    env.filters["major"] = major
    return env


def major(version: str) -> str:
    """A version's first number: `{{ versions["llvm-project"] | major }}` is 19 for 19.1.7."""
    return str(version).split(".")[0]


def refusal(error: Exception, context: dict, about: str | None = None) -> str | None:
    """The words for a sandbox refusal or a missing name (None for other errors), after 'template:line: '."""
    prefix = f"{about}: " if about else ""
    if isinstance(error, SecurityError):
        return f"{prefix}refused: the template reaches for an unsafe attribute ({str(error).rstrip('.')}); templates run in jinja's sandbox"
    if isinstance(error, MissingName):
        return prefix + _missing(error, context)
    return None


def _missing(error: MissingName, context: dict) -> str:
    """'vars.mesage is undefined (did you mean vars.message?)', or else what the value looked into has."""
    name, container = error.name, error.container
    if container is missing:  # a name of the template's own
        close = difflib.get_close_matches(str(name), [key for key in context if isinstance(key, str)], n=1, cutoff=0.6)
        return f"{name!r} is undefined" + (f" (did you mean {close[0]}?)" if close else "")
    owner = next((key for key, value in context.items() if value is container), None)
    shown = owner or f"the {type(container).__name__}"
    if not isinstance(name, str):  # an index: files[3]
        size = f" ({shown} has {len(container)} items)" if hasattr(container, "__len__") else ""
        return f"{shown}[{name!r}] is undefined{size}"
    if isinstance(container, Mapping):
        known = [key for key in container if isinstance(key, str)]
    elif hasattr(type(container), "model_fields"):  # a pydantic model: the recipe
        known = list(type(container).model_fields)
    else:
        known = [key for key in dir(container) if not key.startswith("_")]
    path = f"{owner}.{name}" if owner else f"{name!r} of {shown}"
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
    if close:
        return f"{path} is undefined (did you mean {f'{owner}.' if owner else ''}{close[0]}?)"
    listed = ", ".join(sorted(known)[:12]) + (", …" if len(known) > 12 else "")
    return f"{path} is undefined ({shown} has: {listed})" if known else f"{path} is undefined ({shown} is empty)"


@cache
def environment(templates: "Path | tuple[Path, ...]", language: "str | bool") -> jinja2.Environment:
    """The jinja environment for one language; True/False mean shell/text (older callers)."""
    language = {True: "shell", False: "text"}.get(language, language)
    loader_class = _CheckedLoader if language == "shell" else jinja2.FileSystemLoader
    return sandboxed_environment(loader_class([str(folder) for folder in _folders(templates)]), FINALIZERS[language])


def render(templates: Path, name: str, context: dict, for_shell: bool = False, about: str | None = None) -> str:
    """Render templates/<name>; any error names the template and the line (and about: the task and recipe file)."""
    language = "shell" if for_shell else language_of(name)
    try:
        template = environment(templates, language).get_template(name)
        return template.render(context)
    except jinja2.TemplateSyntaxError as error:
        raise InputError(f"{_label(templates, error.name or name)}:{error.lineno}: {error.message}") from None
    except (SecurityError, MissingName) as error:
        raise InputError(f"{_template_line(error, templates, name)}: {refusal(error, context, about)}") from None
    except jinja2.UndefinedError as error:
        raise InputError(f"{_template_line(error, templates, name)}: {error.message}") from None
    except jinja2.TemplateNotFound as error:
        raise InputError(f"{_label(templates, name)}: template {error.name!r} not found") from None
    except UnsafeValue as error:
        raise InputError(f"{_template_line(error, templates, name)}: {error} ({language} file)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{_label(templates, name)}: cannot read: {getattr(error, 'strerror', None) or error}") from None
    except Exception as error:  # the template's own code failed (e.g. a division by zero): its error, its line
        raise InputError(f"{_template_line(error, templates, name)}: {type(error).__name__}: {error}") from None


def _template_line(error: Exception, templates, name: str) -> str:
    """templates/<file>:<line> of the innermost template frame of a rendering error."""
    where = _label(templates, name)
    trace = error.__traceback__
    while trace is not None:
        filename = trace.tb_frame.f_code.co_filename
        for folder in _folders(templates):
            if filename.startswith(str(folder) + os.sep):
                where = f"{_label(templates, Path(filename).relative_to(folder).as_posix())}:{trace.tb_lineno}"
                break
        trace = trace.tb_next
    return where
