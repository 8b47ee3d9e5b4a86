"""Hypothesis strategies from the server's OpenAPI schemas: bodies that follow the schema,
and mutants of them (a field replaced by any JSON value, dropped, or a junk field added).

Only the JSON-schema keywords parrot/server/openapi.py uses are understood. Generation stays
cheap: `CLAMP` bounds the fields that set how much work a request asks for.
"""
from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

CLAMP = {"max_tokens": (1, 4), "max_completion_tokens": (1, 4), "n": (1, 2),
         "min_tokens": (0, 1), "timeout": (0.01, 0.3), "idle_timeout": (1, 60)}
SHORT = {"prompt": 2, "messages": 2, "calls": 3, "variables": 3, "parts": 3, "stop": 3}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8)


def from_schema(schema: dict, components: dict, name: str = "") -> st.SearchStrategy:
    """Values valid for `schema` (within CLAMP/SHORT)."""
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[-1]], components, name)
    if "oneOf" in schema or "anyOf" in schema:
        return st.one_of([from_schema(s, components, name)
                          for s in schema.get("oneOf", schema.get("anyOf"))])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, components, name) for k in kind])
    maker = _MAKERS.get(kind)
    values = maker(schema, components, name) if maker else json_values
    return st.sampled_from(schema["examples"]) | values if "examples" in schema else values


def _object(schema: dict, components: dict, name: str) -> st.SearchStrategy:
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    fixed = st.fixed_dictionaries(
        {k: from_schema(v, components, k) for k, v in props.items() if k in required},
        optional={k: from_schema(v, components, k) for k, v in props.items()
                  if k not in required})
    extra = schema.get("additionalProperties")
    if not isinstance(extra, dict):
        return fixed
    more = st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True),
                           from_schema(extra, components), max_size=2)
    return st.tuples(fixed, more).map(lambda pair: {**pair[1], **pair[0]})


def _array(schema: dict, components: dict, name: str) -> st.SearchStrategy:
    low = schema.get("minItems", 0)
    high = min(schema.get("maxItems", 10 ** 6), max(low, SHORT.get(name, 3)))
    return st.lists(from_schema(schema.get("items", {}), components), min_size=low,
                    max_size=high)


def _string(schema: dict, components: dict, name: str) -> st.SearchStrategy:
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True)
    return st.text(max_size=24)


def _integer(schema: dict, components: dict, name: str) -> st.SearchStrategy:
    low, high = CLAMP.get(name, (schema.get("minimum"), schema.get("maximum")))
    return st.integers(min_value=low, max_value=high)


def _number(schema: dict, components: dict, name: str) -> st.SearchStrategy:
    low, high = CLAMP.get(name, (schema.get("minimum", schema.get("exclusiveMinimum")),
                                 schema.get("maximum")))
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False,
                     exclude_min="exclusiveMinimum" in schema and name not in CLAMP)


_MAKERS = {"object": _object, "array": _array, "string": _string, "integer": _integer,
           "number": _number, "boolean": lambda *_: st.booleans(), "null": lambda *_: st.none()}


@st.composite
def mutant(draw: Any, body: dict) -> Any:
    """`body` with one field replaced by any JSON value, dropped, or a junk field added
    (fields in CLAMP are left alone: a large or missing max_tokens only costs time)."""
    if not isinstance(body, dict):
        return draw(json_values)
    keys = sorted(k for k in body if k not in CLAMP)
    action = draw(st.sampled_from(["replace", "drop", "junk"] if keys else ["junk"]))
    key = draw(st.sampled_from(keys)) if keys else None
    if action == "replace":
        return {**body, key: draw(json_values)}
    if action == "drop":
        return {k: v for k, v in body.items() if k != key}
    return {**body, draw(st.text(min_size=1, max_size=6)): draw(json_values)}


def bodies(schema: dict, components: dict) -> st.SearchStrategy:
    valid = from_schema(schema, components)
    return st.one_of(valid, valid.flatmap(mutant))
