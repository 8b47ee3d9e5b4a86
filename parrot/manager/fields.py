"""Strict JSON field types for the API's pydantic models, and a validation failure told as
one message naming the field.

JSON has no integer/float split and clients send `4.0` for 4, so `Integer` takes an
integral float; otherwise nothing is coerced: "3" is not a number, `true` is not 1.
Tagged unions name their members "<tag>" (`Tag("<llm>")`), which `describe` leaves
out of the path. `one_error(phrase)` wraps a composite field (a union, a list) so that any
failure inside it is reported once, on the field itself, in the API's words rather than
one error per union member. `describe(error)` turns a pydantic ValidationError into
(message, param), param in the API's path form (`messages[0].role`).
"""
from __future__ import annotations

import json
from typing import Annotated, Any

from annotated_types import Interval
from pydantic import (AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Strict,
                      ValidationError, ValidatorFunctionWrapHandler, WrapValidator)
from pydantic_core import PydanticCustomError

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integer(**bounds: int) -> Any:
    """A strict integer within `bounds` (ge, gt, le, lt), an integral float taken as one.
    The bounds sit inside the type, so /openapi.json shows them as minimum / maximum."""
    return Annotated[int, Strict(), Interval(**bounds), BeforeValidator(_integral)]


Integer = integer()
Number = Annotated[float, Strict(), AllowInfNan(False)]
Boolean = Annotated[bool, Strict()]
String = Annotated[str, Strict()]
TokenId = Annotated[int, Strict()]


class Body(BaseModel):
    """A request object: unknown fields are ignored (OpenAI clients send many)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Closed(BaseModel):
    """An object whose every field is known: an unknown one is refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def one_error(phrase: str) -> WrapValidator:
    """Report any failure inside the field as `'<field>' <phrase>`."""
    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("field", phrase) from None
    return WrapValidator(validate)


_PHRASES = {
    "missing": "is required",
    "int_type": "must be an integer", "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be a boolean", "bool_parsing": "must be a boolean",
    "string_type": "must be a string", "list_type": "must be a list",
    "dict_type": "must be an object", "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}", "less_than_equal": "must be <= {le}",
    "string_pattern_mismatch": "must match {pattern}",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must not be empty",
    "literal_error": "must be {expected}",
}
_NO_INPUT = {"missing", "extra_forbidden"}


def describe(error: ValidationError, prefix: str = "") -> tuple[str, str]:
    """(message, param) of the first failure in `error`; `prefix` leads the path."""
    first = error.errors(include_url=False)[0]
    loc = [part for part in first["loc"] if not _is_tag(part)]
    kind = first["type"]
    if kind == "extra_forbidden":  # name the object, as an unknown key is its fault
        where = path(prefix, loc[:-1]) or "request body"
        return f"'{where}' has an unknown field {loc[-1]!r}", path(prefix, loc[:-1])
    param = path(prefix, loc)
    ctx = first.get("ctx") or {}
    if kind in ("too_long", "too_short"):
        bound = ctx.get("max_length", ctx.get("min_length"))
        phrase = (f"may hold at most {bound} items" if kind == "too_long"
                  else "must not be empty" if bound == 1 else f"must hold at least {bound} items")
    elif kind in _PHRASES:
        phrase = _PHRASES[kind].format(**ctx)
    else:  # our own PydanticCustomError phrases, and pydantic's own words otherwise
        phrase = first["msg"][0].lower() + first["msg"][1:] if kind == "field" else first["msg"]
    message = f"'{param}' {phrase}" if param else f"request body: {phrase}"
    if kind not in _NO_INPUT:
        message += f", got {show(first.get('input'))}"
    return message, param


def _is_tag(part: Any) -> bool:
    """A union member's tag in an error's location ("<llm>"): not part of the API path."""
    return isinstance(part, str) and part.startswith("<") and part.endswith(">")


def path(prefix: str, loc: list) -> str:
    """('messages', 0, 'role') -> 'messages[0].role', after `prefix`."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
