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

Project spec: `{"kind": "project", "source": {"var": "v2"}, "path": ["answer", 0],
"output": {"var": "v9"}}` - the output is that field of v2's JSON value (projection.py).

An output object may also carry one constraint (`json_schema`, `json_object`, `regex`,
`choices`, `grammar`: constraint_spec.py), compiled by the engine at submit time, and a
template may use role blocks, rendered with the served model's chat template
(parrot/protocol/chat_render.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Callable

from parrot.engine.sampling_params import Constraint, SamplingParams
from parrot.manager.call import Binding, Call, CallKind, VarRef
from parrot.manager.constraint_spec import constraint_key, parse_constraint
from parrot.manager.errors import BadRequest
from parrot.manager.projection import MAX_PATH
from parrot.protocol.chat_render import RenderChat, lower_roles
from parrot.protocol.template import INPUT, OUTPUT, Placeholder, Template, TemplateError, Text

_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_SAMPLING_FIELDS = {f.name for f in fields(SamplingParams)} - {"constraint"}
MAX_CALLS_PER_REQUEST = 4096
MAX_JOIN_PARTS = 4096

NewId = Callable[[str], str]
Compile = Callable[[SamplingParams], object]  # Engine.compile: ValueError for a bad constraint


@dataclass(frozen=True)
class SpecContext:
    """What parsing needs from the server: ids, and the served model's grammar compiler and
    chat template (None: constraints are not compiled here / role blocks are refused)."""

    new_id: NewId
    compile: Compile | None = None
    render_chat: RenderChat | None = None


def parse_calls(body: dict, env: SpecContext | NewId) -> list[Call]:
    env = env if isinstance(env, SpecContext) else SpecContext(env)
    specs = body.get("calls")
    if not isinstance(specs, list) or not specs:
        raise BadRequest("'calls' must be a non-empty list of call objects", param="calls")
    if len(specs) > MAX_CALLS_PER_REQUEST:
        raise BadRequest(f"at most {MAX_CALLS_PER_REQUEST} calls per request", param="calls")
    return [parse_call(spec, f"calls[{i}]", env) for i, spec in enumerate(specs)]


def parse_call(spec: Any, where: str, env: SpecContext) -> Call:
    if not isinstance(spec, dict):
        raise BadRequest(f"{where} must be an object", param=where)
    kind = spec.get("kind", "llm")
    if kind in _MODEL_FREE:
        return _MODEL_FREE[kind](spec, where, env.new_id)
    if kind != "llm":
        raise BadRequest(f"{where}.kind must be 'llm', 'join' or 'project', got {kind!r}",
                         param=where)
    template, stops = _parse_template(spec.get("template"), where, env.render_chat)
    inputs = _parse_inputs(spec.get("inputs") or {}, template, where)
    defaults = _object(spec.get("sampling") or {}, f"{where}.sampling")
    outputs, sampling = _parse_outputs(spec.get("outputs") or {}, template, defaults, where,
                                       env, stops)
    return Call(_id(spec.get("id"), f"{where}.id", env.new_id, "c"), template, inputs, outputs,
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


def _parse_template(raw: Any, where: str,
                    render_chat: RenderChat | None) -> tuple[Template, dict[str, str]]:
    """The call's template (role blocks lowered to chat markup) and the stops they imply."""
    try:
        template = Template.parse(raw)
    except TemplateError as e:
        raise BadRequest(f"{where}.template: {e}", param=f"{where}.template") from None
    if not template.has_roles:
        return template, {}
    try:
        return lower_roles(template, render_chat)
    except TemplateError as e:
        raise BadRequest(f"{where}.template: {e}", param=f"{where}.template") from None


def _parse_outputs(raw: Any, template: Template, defaults: dict, where: str, env: SpecContext,
                   stops: dict[str, str]) -> tuple[dict[str, str], dict[str, SamplingParams]]:
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
        here = f"{where}.outputs.{name}"
        outputs[name] = _id(spec.get("var"), f"{here}.var", env.new_id, "v")
        sampling[name] = _output_sampling(spec, defaults, here, env, stops.get(name))
    return outputs, sampling


def _output_sampling(spec: dict, defaults: dict, where: str, env: SpecContext,
                     block_stop: str | None) -> SamplingParams:
    """An output's SamplingParams: its settings over the call's defaults, with its constraint
    (a constrained output ends with its grammar: it inherits no default stop), or else the
    stop its assistant block implies."""
    constraint = parse_constraint(spec, where)
    inherited = {k: v for k, v in defaults.items() if not (constraint and k == "stop")}
    settings = {**inherited, **_object(spec.get("sampling") or {}, f"{where}.sampling")}
    if constraint is None and block_stop is not None:
        stop = settings.get("stop") or []
        settings["stop"] = [*([stop] if isinstance(stop, str) else stop), block_stop]
    params = sampling_params(settings, f"{where}.sampling", constraint)
    if constraint is not None and env.compile is not None:
        _compile(env.compile, params, f"{where}.{constraint_key(spec, where)}")
    return params


def _compile(compile: Compile, params: SamplingParams, where: str) -> None:
    try:
        compile(params)
    except ValueError as e:
        raise BadRequest(f"{where}: {e}", param=where) from None


def sampling_params(settings: dict, where: str,
                    constraint: Constraint | None = None) -> SamplingParams:
    unknown = sorted(set(settings) - _SAMPLING_FIELDS)
    if unknown:
        raise BadRequest(f"{where}: unknown sampling field(s) {unknown}", param=where)
    try:
        return SamplingParams(**settings, constraint=constraint)
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
    return Call(_id(spec.get("id"), f"{where}.id", new_id, "c"), template, inputs,
                {"out": _output_var(spec, where, new_id)},
                name=_optional_str(spec.get("name"), f"{where}.name") or "join",
                kind=CallKind.RENDER)


def _parse_project(spec: dict, where: str, new_id: NewId) -> Call:
    source = _binding(spec.get("source"), f"{where}.source")
    if not isinstance(source, VarRef):
        raise BadRequest(f"{where}.source must be {{\"var\": id}}", param=f"{where}.source")
    path = spec.get("path")
    if (not isinstance(path, list) or not 0 < len(path) <= MAX_PATH
            or not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in path)):
        raise BadRequest(f"{where}.path must be a list of 1 to {MAX_PATH} keys (strings) or "
                         "indexes (integers)", param=f"{where}.path")
    template = Template.from_pieces([Placeholder(INPUT, "source"), Placeholder(OUTPUT, "out")])
    return Call(_id(spec.get("id"), f"{where}.id", new_id, "c"), template, {"source": source},
                {"out": _output_var(spec, where, new_id)}, kind=CallKind.PROJECT,
                name=_optional_str(spec.get("name"), f"{where}.name") or "project",
                path=tuple(path))


def _output_var(spec: dict, where: str, new_id: NewId) -> str:
    output = spec.get("output") or {}
    output = {"var": output} if isinstance(output, str) else _object(output, f"{where}.output")
    return _id(output.get("var"), f"{where}.output.var", new_id, "v")


_MODEL_FREE = {"join": _parse_join, "project": _parse_project}


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
