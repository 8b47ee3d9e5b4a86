"""An output's constraint in the native API JSON -> the engine's `Constraint`.

An output object may carry at most one of (docs/typed-outputs.md):

    "json_schema": {...}          # a JSON schema (object)
    "json_object": true           # any JSON object
    "regex": "[0-9]{3}"           # the whole output matches it
    "choices": ["yes", "no"]      # the output is one of these strings
    "grammar": "start: ..."       # a Lark grammar (llguidance's dialect)

The engine compiles it (`Engine.compile`) when the call is submitted, so an invalid one is a
400 before anything runs.
"""
from __future__ import annotations

import json
from typing import Any

from parrot.engine.grammar import MAX_CHOICES  # the engine owns the limit
from parrot.engine.sampling_params import Constraint
from parrot.manager.errors import BadRequest

CONSTRAINT_KEYS = ("json_schema", "json_object", "regex", "choices", "grammar")


def constraint_key(spec: dict, where: str) -> str | None:
    """The constraint key an output object sets, or None; 400 if it sets several."""
    given = [k for k in CONSTRAINT_KEYS if spec.get(k) not in (None, False)]
    if len(given) > 1:
        raise BadRequest(f"{where}: an output takes at most one constraint, got "
                         f"{', '.join(given)}", param=f"{where}.{given[1]}")
    return given[0] if given else None


def parse_constraint(spec: dict, where: str) -> Constraint | None:
    key = constraint_key(spec, where)
    if key is None:
        return None
    raw, param = spec[key], f"{where}.{key}"
    if key == "json_schema":
        if not isinstance(raw, dict):
            raise BadRequest(f"{param} must be a JSON schema object", param=param)
        return Constraint("json_schema", json.dumps(raw))
    if key == "json_object":
        if raw is not True:
            raise BadRequest(f"{param} must be true or absent", param=param)
        return Constraint("json_object")
    if key == "choices":
        return Constraint("choice", json.dumps(_choices(raw, param)))
    if not isinstance(raw, str) or not raw:
        raise BadRequest(f"{param} must be a non-empty string", param=param)
    return Constraint("regex" if key == "regex" else "grammar", raw)


def _choices(raw: Any, param: str) -> list[str]:
    if (not isinstance(raw, list) or not 0 < len(raw) <= MAX_CHOICES
            or not all(isinstance(c, str) and c for c in raw)):
        raise BadRequest(f"{param} must be a list of 1 to {MAX_CHOICES} non-empty strings",
                         param=param)
    return raw
