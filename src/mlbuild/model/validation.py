"""Turn pydantic validation errors into one-line messages naming file and field (a URL's credentials redacted)."""

import difflib
import re
import typing

from pydantic import BaseModel, ValidationError

from mlbuild.credentials import redact


def field_path(loc: tuple) -> str:
    """('sources', 0, 'sha256') -> 'sources[0].sha256'."""
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's mark for a table's key that failed: the key itself is already the last part
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


# How pydantic names the members of a union in an error's location (`vars.x.str`, `vars.x.list[str]`):
# internal names a user never wrote, dropped from field paths.
_UNION_MEMBER = re.compile(r"^(str|int|bool|float|bytes|none|[a-z-]+\[.*\]|constrained-[a-z]+)$")
_KIND_WORDS = {"string": "a string", "integer": "an integer", "boolean": "a boolean", "list": "a list of strings",
               "dictionary": "a table", "number": "a number"}


def user_loc(loc: tuple) -> tuple:
    """The location without pydantic's union member names."""
    return tuple(part for part in loc if not (isinstance(part, str) and _UNION_MEMBER.match(part)))


def describe(error: ValidationError, origin: str, model: type[BaseModel], hints: dict | None = None) -> str:
    """The first problem of a ValidationError as 'origin: field: what was expected' (the value it got redacted)."""
    return redact(_describe(error, origin, model, hints))


def _describe(error: ValidationError, origin: str, model: type[BaseModel], hints: dict | None) -> str:
    errors = error.errors()
    first = errors[0]
    loc = user_loc(first["loc"])
    same_place = [e for e in errors if user_loc(e["loc"]) == loc]
    if len(same_place) > 1 and all(e["type"].endswith("_type") for e in same_place):
        # A value matching no member of a union (vars values): say what any of them accepts.
        kinds = []
        for e in same_place:
            word = e["msg"].removeprefix("Input should be a valid ").split()[0].rstrip(",")
            kinds.append(_KIND_WORDS.get(word, word))
        more = len({user_loc(e["loc"]) for e in errors}) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        kinds = list(dict.fromkeys(kinds))
        expected = ", ".join(kinds[:-1]) + f" or {kinds[-1]}" if len(kinds) > 1 else kinds[0]
        return f"{origin}: {field_path(loc)}: expected {expected}, got {first.get('input')!r}{tail}"
    if first["type"] == "extra_forbidden":
        message = "unknown field"
        known = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        close = close or [k for k in known if k.startswith(str(loc[-1]))]
        if close:
            message += f" (did you mean '{close[0]}'?)"
        elif known:
            message += f" (expected one of: {', '.join(known)})"
    elif first["type"] == "missing":
        message = "required field is missing"
    else:
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "string_pattern_mismatch":
            message = (hints or {}).get(first["ctx"]["pattern"], message)
        value = first.get("input")
        if (first["type"].startswith("string_") or first["type"].endswith("_type")) and not isinstance(value, (dict, list)):
            message += f", got {value!r}"
    more = len({user_loc(e["loc"]) for e in errors}) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{origin}: {field_path(loc)}: {message}{tail}"


def _fields_at(model, loc: tuple) -> list[str]:
    """Field names of the (nested) model found by following loc from model."""
    current = model
    for part in loc:
        if isinstance(part, int) or not _is_model(current):
            current = _inner(current)
            if isinstance(part, int):
                continue
        if _is_model(current) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            current = _inner(current)
    current = _inner(current) if not _is_model(current) else current
    return sorted(current.model_fields) if _is_model(current) else []


def _is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _inner(annotation):
    """The element type of list[X], dict[K, X] or X | None."""
    for arg in reversed(typing.get_args(annotation)):
        if _is_model(arg) or typing.get_args(arg):
            return arg
    return annotation
