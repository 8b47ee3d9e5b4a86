"""Turning the native API's JSON call and variable specs into graph objects, checking them.

Call spec (one element of `POST /v1/sessions/{sid}/calls` `{"calls": [...]}`):

    {"id": "c1",                        # optional; chosen by the server if absent
     "name": "summarize",               # optional, for the graph view
     "template": "Text: {{input:chunk}}\\nSummary: {{output:summary}}",
     "inputs": {"chunk": {"var": "v1"}},          # or a constant: "some text" / {"value": "..."}
     "outputs": {"summary": {"var": "v2", "sampling": {"max_tokens": 64}}},  # both optional
     "sampling": {"temperature": 0},    # optional defaults for every output
     "eager": false}                    # run even if nothing downstream is fetched

Join spec: `{"kind": "join", "parts": [{"var": "v2"}, "text", ...], "sep": "\\n",
"output": {"var": "v9"}}` - the output is the parts joined, computed by the server.
"""
from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, Callable

from parrot.engine.sampling_params import SamplingParams
from parrot.manager.call import Binding, Call, CallKind, VarRef
from parrot.manager.errors import BadRequest
from parrot.program.template import INPUT, OUTPUT, Placeholder, Template, TemplateError, Text

_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_SAMPLING_FIELDS = {f.name for f in fields(SamplingParams)}
MAX_CALLS_PER_REQUEST = 4096
MAX_JOIN_PARTS = 4096

NewId = Callable[[str], str]


def parse_calls(body: dict, new_id: NewId) -> list[Call]:
    specs = body.get("calls")
    if not isinstance(specs, list) or not specs:
        raise BadRequest("'calls' must be a non-empty list of call objects", param="calls")
    if len(specs) > MAX_CALLS_PER_REQUEST:
        raise BadRequest(f"at most {MAX_CALLS_PER_REQUEST} calls per request", param="calls")
    return [parse_call(spec, f"calls[{i}]", new_id) for i, spec in enumerate(specs)]


def parse_call(spec: Any, where: str, new_id: NewId) -> Call:
    if not isinstance(spec, dict):
        raise BadRequest(f"{where} must be an object", param=where)
    kind = spec.get("kind", "llm")
    if kind == "join":
        return _parse_join(spec, where, new_id)
    if kind != "llm":
        raise BadRequest(f"{where}.kind must be 'llm' or 'join', got {kind!r}", param=where)
    try:
        template = Template.parse(spec.get("template"))
    except TemplateError as e:
        raise BadRequest(f"{where}.template: {e}", param=f"{where}.template") from None
    inputs = _parse_inputs(spec.get("inputs") or {}, template, where)
    defaults = _object(spec.get("sampling") or {}, f"{where}.sampling")
    outputs, sampling = _parse_outputs(spec.get("outputs") or {}, template, defaults, where,
                                       new_id)
    return Call(_id(spec.get("id"), f"{where}.id", new_id, "c"), template, inputs, outputs,
                sampling, name=_optional_str(spec.get("name"), f"{where}.name"),
                is_eager=_bool(spec.get("eager"), f"{where}.eager"))


def parse_variables(body: dict, new_id: NewId) -> list[tuple[str, str | None, str | None]]:
    """(id, name, value) of each variable in `{"variables": [...]}` or a single object."""
    specs = body.get("variables", [body])
    if not isinstance(specs, list) or not specs:
        raise BadRequest("'variables' must be a non-empty list", param="variables")
    out = []
    for i, spec in enumerate(specs):
        spec = _object(spec, f"variables[{i}]")
        value = spec.get("value")
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"variables[{i}].value must be a string",
                             param=f"variables[{i}].value")
        out.append((_id(spec.get("id"), f"variables[{i}].id", new_id, "v"),
                    _optional_str(spec.get("name"), f"variables[{i}].name"), value))
    return out


def _parse_inputs(raw: Any, template: Template, where: str) -> dict[str, Binding]:
    raw = _object(raw, f"{where}.inputs")
    for name in raw:
        if name not in template.inputs:
            raise BadRequest(f"{where}.inputs: '{name}' is not an input of the template "
                             f"(inputs: {', '.join(template.inputs) or 'none'})",
                             param=f"{where}.inputs.{name}")
    bindings = {}
    for name in template.inputs:
        if name not in raw:
            p = template.find(name)
            raise BadRequest(f"{where}: input '{name}' (at {p.position}) is not bound",
                             param=f"{where}.inputs.{name}")
        bindings[name] = _binding(raw[name], f"{where}.inputs.{name}")
    return bindings


def _parse_outputs(raw: Any, template: Template, defaults: dict, where: str,
                   new_id: NewId) -> tuple[dict[str, str], dict[str, SamplingParams]]:
    raw = _object(raw, f"{where}.outputs")
    for name in raw:
        if name not in template.outputs:
            raise BadRequest(f"{where}.outputs: '{name}' is not an output of the template "
                             f"(outputs: {', '.join(template.outputs)})",
                             param=f"{where}.outputs.{name}")
    outputs, sampling = {}, {}
    for name in template.outputs:
        spec = raw.get(name) or {}
        spec = {"var": spec} if isinstance(spec, str) else _object(spec, f"{where}.outputs.{name}")
        outputs[name] = _id(spec.get("var"), f"{where}.outputs.{name}.var", new_id, "v")
        settings = {**defaults, **_object(spec.get("sampling") or {}, f"{where}.outputs.{name}")}
        sampling[name] = sampling_params(settings, f"{where}.outputs.{name}.sampling")
    return outputs, sampling


def sampling_params(settings: dict, where: str) -> SamplingParams:
    unknown = sorted(set(settings) - _SAMPLING_FIELDS)
    if unknown:
        raise BadRequest(f"{where}: unknown sampling field(s) {unknown}", param=where)
    try:
        return SamplingParams(**settings)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"{where}: {e}", param=where) from None


def _parse_join(spec: dict, where: str, new_id: NewId) -> Call:
    parts = spec.get("parts")
    if not isinstance(parts, list) or len(parts) > MAX_JOIN_PARTS:
        raise BadRequest(f"{where}.parts must be a list of at most {MAX_JOIN_PARTS} items",
                         param=f"{where}.parts")
    sep = spec.get("sep", "\n")
    if not isinstance(sep, str):
        raise BadRequest(f"{where}.sep must be a string", param=f"{where}.sep")
    pieces: list = []
    for i in range(len(parts)):
        pieces += [Text(sep)] if i else []
        pieces.append(Placeholder(INPUT, f"p{i}"))
    template = Template.from_pieces(pieces + [Placeholder(OUTPUT, "out")])
    inputs = {f"p{i}": _binding(p, f"{where}.parts[{i}]") for i, p in enumerate(parts)}
    output = spec.get("output") or {}
    output = {"var": output} if isinstance(output, str) else _object(output, f"{where}.output")
    out_id = _id(output.get("var"), f"{where}.output.var", new_id, "v")
    return Call(_id(spec.get("id"), f"{where}.id", new_id, "c"), template, inputs,
                {"out": out_id}, name=_optional_str(spec.get("name"), f"{where}.name") or "join",
                kind=CallKind.RENDER)


def _binding(raw: Any, where: str) -> Binding:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict) and len(raw) == 1 and isinstance(raw.get("var"), str):
        return VarRef(raw["var"])
    if isinstance(raw, dict) and len(raw) == 1 and isinstance(raw.get("value"), str):
        return raw["value"]
    raise BadRequest(f"{where} must be a string, {{\"var\": id}} or {{\"value\": text}}",
                     param=where)


def _id(raw: Any, where: str, new_id: NewId, prefix: str) -> str:
    if raw is None:
        return new_id(prefix)
    if not isinstance(raw, str) or not _ID.match(raw):
        raise BadRequest(f"{where} must be 1-64 characters of [A-Za-z0-9_.:-], got {raw!r}",
                         param=where)
    return raw


def _object(raw: Any, where: str) -> dict:
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be a JSON object", param=where)
    return raw


def _bool(raw: Any, where: str) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise BadRequest(f"{where} must be a boolean, got {raw!r:.40}", param=where)
    return raw


def _optional_str(raw: Any, where: str) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise BadRequest(f"{where} must be a string", param=where)
    return raw
