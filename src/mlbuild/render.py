"""jinja2 rendering: build scripts (every value shell-quoted) and plain text files."""

import shlex
from functools import cache
from pathlib import Path

import jinja2

from .errors import InputError


class Unquoted(str):
    """Text a script template inserts verbatim: `{{ x | unquoted }}`."""


def _shell_word(value) -> str:
    if isinstance(value, Unquoted):
        return value
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, (list, tuple)):
        return " ".join(_shell_word(item) for item in value)
    return shlex.quote(str(value))


@cache
def environment(templates: Path, for_shell: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,  # templates do not change during a run: no stat() per render
        finalize=_shell_word if for_shell else None,
    )
    env.filters["unquoted"] = Unquoted
    return env


def render(templates: Path, name: str, context: dict, for_shell: bool = False) -> str:
    """Render templates/<name>; any error names the template and the line."""
    try:
        template = environment(templates, for_shell).get_template(name)
        return template.render(context)
    except jinja2.TemplateSyntaxError as error:
        raise InputError(f"templates/{error.name or name}:{error.lineno}: {error.message}") from None
    except jinja2.UndefinedError as error:
        raise InputError(f"{_template_line(error, templates, name)}: {error.message}") from None
    except jinja2.TemplateNotFound as error:
        raise InputError(f"templates/{name}: template {error.name!r} not found") from None


def _template_line(error: Exception, templates: Path, name: str) -> str:
    """templates/<file>:<line> of the innermost template frame of a rendering error."""
    where = f"templates/{name}"
    trace = error.__traceback__
    while trace is not None:
        filename = trace.tb_frame.f_code.co_filename
        if filename.startswith(str(templates)):
            where = f"templates/{Path(filename).relative_to(templates)}:{trace.tb_lineno}"
        trace = trace.tb_next
    return where
