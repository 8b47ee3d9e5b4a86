"""Turning the native API's call and variable specs into graph objects (`CallSpec`s: the
manager makes each the runtime `Call` of its graph), checking them.

Shapes and types are the pydantic models of native_bodies.py (an error names the field);
what is checked here needs the template: bindings against its placeholders, its syntax,
role blocks, each output's sampling and constraint.

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

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from parrot.engine.sampling_params import Constraint, SamplingParams
from parrot.manager.call import Binding, CallKind, CallSpec, VarRef
from parrot.manager.constraint_spec import constraint_key, parse_constraint
from parrot.manager.errors import BadRequest
from parrot.manager.fields import describe
from parrot.manager.native_bodies import (AnyCallSpec, CallsBody, JoinSpec, NativeSampling,
                                          OutputSpec, ProjectSpec, ValueSpec, VariableSpec,
                                          VariablesBody, VarRefSpec)
from parrot.protocol.chat_render import RenderChat, lower_roles
from parrot.protocol.template import INPUT, OUTPUT, Placeholder, Template, TemplateError, Text

NewId = Callable[[str], str]
Compile = Callable[[SamplingParams], object]  # Engine.compile: ValueError for a bad constraint
_CALL = TypeAdapter(AnyCallSpec)
_VARIABLE = TypeAdapter(VariableSpec)
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class SpecContext:
    """What parsing needs from the server: ids, and the served model's grammar compiler and
    chat template (None: constraints are not compiled here / role blocks are refused)."""

    new_id: NewId
    compile: Compile | None = None
    render_chat: RenderChat | None = None


def validated(adapter: TypeAdapter | type[Model], raw: Any, where: str = "") -> Any:
    """`raw` validated by a model (or adapter); 400 naming the field otherwise."""
    try:
        if isinstance(adapter, TypeAdapter):
            return adapter.validate_python(raw)
        return adapter.model_validate(raw)
    except ValidationError as e:
        message, param = describe(e, where)
        raise BadRequest(message, param=param or None) from None


def parse_calls(body: dict | CallsBody, env: SpecContext | NewId) -> list[CallSpec]:
    env = env if isinstance(env, SpecContext) else SpecContext(env)
    specs = body if isinstance(body, CallsBody) else validated(CallsBody, body)
    return [parse_call(spec, f"calls[{i}]", env) for i, spec in enumerate(specs.calls)]


def parse_call(spec: Any, where: str, env: SpecContext) -> CallSpec:
    if not isinstance(spec, BaseModel):
        spec = validated(_CALL, spec, where)
    if isinstance(spec, JoinSpec):
        return _parse_join(spec, where, env.new_id)
    if isinstance(spec, ProjectSpec):
        return _parse_project(spec, where, env.new_id)
    template, stops = _parse_template(spec.template, where, env.render_chat)
    inputs = _parse_inputs(spec.inputs or {}, template, where)
    defaults = spec.sampling.settings() if spec.sampling is not None else {}
    outputs, sampling = _parse_outputs(spec.outputs or {}, template, defaults, where, env, stops)
    return CallSpec(_id(spec.id, env.new_id, "c"), template, inputs, outputs, sampling,
                    name=spec.name, is_eager=bool(spec.eager))


def parse_variables(body: dict | VariablesBody | list[VariableSpec],
                    new_id: NewId) -> list[tuple[str, str | None, str | None]]:
    """(id, name, value) of each variable in `{"variables": [...]}` or a single object."""
    if isinstance(body, list):
        specs = body
    elif isinstance(body, VariablesBody):
        specs = body.variables
    elif isinstance(body, dict) and "variables" in body:
        specs = validated(VariablesBody, body).variables
    else:
        specs = [validated(_VARIABLE, body)]
    return [(_id(s.id, new_id, "v"), s.name, s.value) for s in specs]


def _parse_inputs(raw: dict[str, Any], template: Template, where: str) -> dict[str, Binding]:
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
        bindings[name] = _binding(raw[name])
    return bindings


def _parse_template(raw: str, where: str,
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


def _parse_outputs(raw: dict[str, Any], template: Template, defaults: dict, where: str,
                   env: SpecContext, stops: dict[str, str]
                   ) -> tuple[dict[str, str], dict[str, SamplingParams]]:
    for name in raw:
        if name not in template.outputs:
            raise BadRequest(f"{where}.outputs: '{name}' is not an output of the template "
                             f"(outputs: {', '.join(template.outputs)})",
                             param=f"{where}.outputs.{name}")
    outputs, sampling = {}, {}
    for name in template.outputs:
        spec = raw.get(name) or OutputSpec()
        spec = OutputSpec(var=spec) if isinstance(spec, str) else spec
        here = f"{where}.outputs.{name}"
        outputs[name] = _id(spec.var, env.new_id, "v")
        sampling[name] = _output_sampling(spec, defaults, here, env, stops.get(name))
    return outputs, sampling


def _output_sampling(spec: OutputSpec, defaults: dict, where: str, env: SpecContext,
                     block_stop: str | None) -> SamplingParams:
    """An output's SamplingParams: its settings over the call's defaults, with its constraint
    (a constrained output ends with its grammar: it inherits no default stop), or else the
    stop its assistant block implies."""
    fields = spec.model_dump(exclude_none=True, exclude={"var", "sampling"})
    constraint = parse_constraint(fields, where)
    inherited = {k: v for k, v in defaults.items() if not (constraint and k == "stop")}
    own = spec.sampling.settings() if spec.sampling is not None else {}
    settings = {**inherited, **own}
    if constraint is None and block_stop is not None:
        stop = settings.get("stop") or []
        settings["stop"] = [*([stop] if isinstance(stop, str) else stop), block_stop]
    params = _sampling(settings, f"{where}.sampling", constraint)
    if constraint is not None and env.compile is not None:
        _compile(env.compile, params, f"{where}.{constraint_key(fields, where)}")
    return params


def _compile(compile: Compile, params: SamplingParams, where: str) -> None:
    try:
        compile(params)
    except ValueError as e:
        raise BadRequest(f"{where}: {e}", param=where) from None


def sampling_params(settings: dict, where: str,
                    constraint: Constraint | None = None) -> SamplingParams:
    """SamplingParams from a native `sampling` object; 400 naming the field otherwise."""
    checked = validated(NativeSampling, settings, where)
    return _sampling(checked.settings(), where, constraint)


def _sampling(settings: dict, where: str, constraint: Constraint | None) -> SamplingParams:
    try:  # the fields are checked; what is left is between them (min_tokens <= max_tokens)
        return SamplingParams(**settings, constraint=constraint)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"{where}: {e}", param=where) from None


def _parse_join(spec: JoinSpec, where: str, new_id: NewId) -> CallSpec:
    pieces: list = []
    for i in range(len(spec.parts)):
        pieces += [Text(spec.sep)] if i else []
        pieces.append(Placeholder(INPUT, f"p{i}"))
    template = Template.from_pieces(pieces + [Placeholder(OUTPUT, "out")])
    inputs = {f"p{i}": _binding(p) for i, p in enumerate(spec.parts)}
    return CallSpec(_id(spec.id, new_id, "c"), template, inputs,
                    {"out": _output_var(spec.output, new_id)}, name=spec.name or "join",
                    kind=CallKind.RENDER)


def _parse_project(spec: ProjectSpec, where: str, new_id: NewId) -> CallSpec:
    template = Template.from_pieces([Placeholder(INPUT, "source"), Placeholder(OUTPUT, "out")])
    return CallSpec(_id(spec.id, new_id, "c"), template, {"source": VarRef(spec.source.var)},
                    {"out": _output_var(spec.output, new_id)}, kind=CallKind.PROJECT,
                    name=spec.name or "project", path=tuple(spec.path))


def _output_var(output: Any, new_id: NewId) -> str:
    var = output if isinstance(output, str) else None if output is None else output.var
    return _id(var, new_id, "v")


def _binding(raw: str | VarRefSpec | ValueSpec) -> Binding:
    if isinstance(raw, VarRefSpec):
        return VarRef(raw.var)
    return raw.value if isinstance(raw, ValueSpec) else raw


def _id(raw: str | None, new_id: NewId, prefix: str) -> str:
    return new_id(prefix) if raw is None else raw
