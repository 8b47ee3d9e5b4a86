"""Settings of one output of a semantic function: sampling, and an optional constraint.

Client side, no engine import. A constraint (`json_schema=`, `regex=` or `choices=`, at most
one) makes the server mask every token that would break it, so the output always matches;
the output ends when the constraint is complete.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from parrot.protocol.sampling import CONSTRAINT_FIELDS, SAMPLING_FIELDS


@dataclass(frozen=True)
class Output:
    """Per-output settings; a field left None falls back to the function's default.

    Used two ways: the decorator's keyword arguments (`max_tokens=32, stop=["\\n"]`) form the
    default for every output, and `outputs={"name": P.Output(...)}` overrides fields for one
    output. The server validates the merged values (ValueError naming the field -> HTTP 400).

    Constraints: `json_schema` (a JSON schema dict, or a pydantic model class, whose
    `model_json_schema()` is used), `regex` (the whole output matches it) or `choices` (the
    output is one of these strings). A constrained output does not inherit the default
    `stop` strings (its grammar says where it ends); give it its own `stop` if it needs one.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool | None = None
    min_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    json_schema: Any = None  # dict, or a pydantic model class (turned into its schema)
    regex: str | None = None
    choices: list[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", [self.stop])
        if self.max_tokens is not None and (
                isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int)
                or self.max_tokens < 1):
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        object.__setattr__(self, "json_schema", _schema_of(self.json_schema))
        _check_constraint(self)

    @property
    def is_constrained(self) -> bool:
        return any(getattr(self, name) is not None for name in CONSTRAINT_FIELDS)

    def over(self, base: "Output") -> "Output":
        """These settings, with every unset field taken from `base`. A constraint is taken
        whole from self or else from base, and a constrained output keeps only its own stop."""
        own = self.is_constrained
        merged = {f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                  else None if f.name in CONSTRAINT_FIELDS and own
                  else getattr(base, f.name) for f in fields(self)}
        if (own or base.is_constrained) and self.stop is None:
            merged["stop"] = None
        return Output(**merged)

    def to_json(self) -> dict:
        """The set sampling fields only, as the native API's `sampling` object."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v is not None and k in SAMPLING_FIELDS}

    def constraint_json(self) -> dict:
        """The constraint as keys of the native API's output object (empty without one)."""
        return {name: getattr(self, name) for name in CONSTRAINT_FIELDS
                if getattr(self, name) is not None}


def _schema_of(schema: Any) -> dict | None:
    if schema is None or isinstance(schema, dict):
        return schema
    to_schema = getattr(schema, "model_json_schema", None)
    if isinstance(schema, type) and callable(to_schema):
        return to_schema()
    raise TypeError(f"json_schema must be a dict or a pydantic model class, "
                    f"got {type(schema).__name__}")


def _check_constraint(output: Output) -> None:
    given = [name for name in CONSTRAINT_FIELDS if getattr(output, name) is not None]
    if len(given) > 1:
        raise ValueError(f"an output takes at most one constraint, got {', '.join(given)}")
    if output.json_schema is not None:
        json.dumps(output.json_schema)  # TypeError now rather than at send time
    if output.regex is not None and not isinstance(output.regex, str):
        raise TypeError(f"regex must be a string, got {type(output.regex).__name__}")
    if output.choices is not None:
        choices = list(output.choices)
        if not choices or not all(isinstance(c, str) for c in choices):
            raise ValueError("choices must be a non-empty list of strings")
        object.__setattr__(output, "choices", choices)
