"""`@P.semantic_function`: a Python function whose docstring is a prompt template.

    @P.semantic_function(max_tokens=64, stop=["\\n\\n"],
                         outputs={"title": P.Output(max_tokens=12, stop=["\\n"])})
    def write(topic, title, body):
        '''Write about {{input:topic}}.
        Title: {{output:title}}
        Body: {{output:body}}'''

    title, body = write("parrots")        # SemanticVariable futures, returned at once

Placeholders `{{input:x}}` are the function's inputs, `{{output:y}}` its outputs; each output is
generated in the same context, after the text before it. Decorator keywords are the sampling
settings of every output (`max_tokens`, `temperature`, `top_p`, `top_k`, `seed`, `stop`,
`stop_token_ids`, `ignore_eos`, `min_tokens`, `presence_penalty`, `frequency_penalty`,
`repetition_penalty`); `outputs={name: P.Output(...)}` overrides them per output, and may
constrain it (`P.Output(json_schema=Model)`, `regex=`, `choices=`: docs/typed-outputs.md);
`eager=True` runs the call even if nothing downstream is ever fetched.

Role blocks (`{{#system}}...{{/system}}`, `{{#user}}`, `{{#assistant}}`) are rendered by the
served model's chat template; outputs then sit in assistant blocks.

Calling binds arguments to inputs (positionally in signature order, or by name): a
`SemanticVariable` becomes a graph edge, anything else is rendered as constant text (`str()`).
It returns one `SemanticVariable` per output (a tuple when there are several) without waiting.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from parrot.program.output import Output
from parrot.protocol.template import INPUT, Template, TemplateError


class BindingError(TypeError):
    """A call whose arguments do not match the template's inputs."""


class SemanticFunction:
    def __init__(self, fn: Callable, defaults: Output, outputs: dict[str, Output],
                 eager: bool = False) -> None:
        functools.update_wrapper(self, fn)
        self.name = fn.__name__
        self.template = _parse_docstring(fn)
        self.signature = inspect.signature(fn)
        self.eager = eager
        self._check_parameters()
        self.sampling = self._output_settings(defaults, outputs)
        self.input_params = [p for p in self.signature.parameters if p in self.template.inputs]

    def __call__(self, *args: Any, **kwargs: Any):
        from parrot.program.session import current_session

        bindings = self.bind(*args, **kwargs)
        variables = current_session().submit_call(self, bindings)
        return variables[0] if len(variables) == 1 else tuple(variables)

    def __repr__(self) -> str:
        return f"<semantic_function {self.name}({', '.join(self.template.inputs)}) -> " \
               f"{', '.join(self.template.outputs)}>"

    def bind(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Map arguments onto input names; errors name the template position."""
        if len(args) > len(self.input_params):
            raise BindingError(f"{self.name}() takes {len(self.input_params)} input argument(s) "
                               f"({self._describe_inputs()}), got {len(args)}")
        bound = dict(zip(self.input_params, args))
        for name, value in kwargs.items():
            self._check_keyword(name, bound)
            bound[name] = value
        for name in self.input_params:
            if name not in bound:
                bound[name] = self._default(name)
        return bound

    def to_spec(self, call_id: str, bindings: dict[str, Any], output_ids: list[str]) -> dict:
        """The call as the native API's JSON (`POST /v1/sessions/{sid}/calls`)."""
        from parrot.program.variable import SemanticVariable

        inputs = {name: {"var": v.id} if isinstance(v, SemanticVariable) else str(v)
                  for name, v in bindings.items()}
        outputs = {name: {"var": vid, "sampling": self.sampling[name].to_json(),
                          **self.sampling[name].constraint_json()}
                   for name, vid in zip(self.template.outputs, output_ids)}
        return {"id": call_id, "name": self.name, "template": self.template.source,
                "inputs": inputs, "outputs": outputs, "eager": self.eager}

    def _check_parameters(self) -> None:
        for p in self.template.placeholders:
            if p.kind == INPUT and p.name not in self.signature.parameters:
                raise TemplateError(f"{self.name}: unknown placeholder {{{{input:{p.name}}}}}: "
                                    f"no parameter named '{p.name}'", p.line, p.col)
        names = set(self.template.inputs) | set(self.template.outputs)
        for param in self.signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TemplateError(f"{self.name}: *args/**kwargs are not supported; name each "
                                    "input as a parameter")
            if param.name not in names:
                raise TemplateError(f"{self.name}: parameter '{param.name}' does not appear in "
                                    "the template as {{input:...}} or {{output:...}}")

    def _output_settings(self, defaults: Output, outputs: dict[str, Output]) -> dict[str, Output]:
        for name, setting in outputs.items():
            if name not in self.template.outputs:
                raise TemplateError(f"{self.name}: outputs[{name!r}] is not an output of the "
                                    f"template (outputs: {', '.join(self.template.outputs)})")
            if not isinstance(setting, Output):
                raise TypeError(f"{self.name}: outputs[{name!r}] must be a P.Output, "
                                f"got {type(setting).__name__}")
        return {name: outputs.get(name, Output()).over(defaults) for name in self.template.outputs}

    def _check_keyword(self, name: str, bound: dict[str, Any]) -> None:
        if name in self.template.outputs:
            p = self.template.find(name)
            raise BindingError(f"{self.name}(): '{name}' is an output (at {p.position}), "
                               "not an input; outputs are returned, not passed")
        if name not in self.template.inputs:
            raise BindingError(f"{self.name}(): '{name}' is not a declared input "
                               f"(inputs: {self._describe_inputs()})")
        if name in bound:
            raise BindingError(f"{self.name}(): input '{name}' given twice")

    def _default(self, name: str) -> Any:
        default = self.signature.parameters[name].default
        if default is inspect.Parameter.empty:
            p = self.template.find(name)
            raise BindingError(f"{self.name}(): missing input '{name}' (at {p.position})")
        return default

    def _describe_inputs(self) -> str:
        return ", ".join(f"{n} at {self.template.find(n).position}" for n in self.input_params)


def semantic_function(fn: Callable | None = None, *, outputs: dict[str, Output] | None = None,
                      eager: bool = False, **sampling: Any):
    """Decorator making a `SemanticFunction` (see the module docstring for the template form)."""
    try:
        defaults = Output(**sampling)
    except TypeError:
        unknown = sorted(set(sampling) - set(Output.__dataclass_fields__))
        raise TypeError(f"semantic_function got unknown setting(s) {unknown}; allowed: "
                        f"{', '.join(Output.__dataclass_fields__)}, outputs, eager") from None

    def wrap(f: Callable) -> SemanticFunction:
        return SemanticFunction(f, defaults, dict(outputs or {}), eager)

    return wrap(fn) if fn is not None else wrap


def _parse_docstring(fn: Callable) -> Template:
    doc = inspect.getdoc(fn)
    if not doc:
        raise TemplateError(f"{fn.__name__}: a semantic function needs its template as the "
                            "docstring")
    try:
        return Template.parse(doc)
    except TemplateError as e:
        raise TemplateError(f"{fn.__name__}: {e.reason}", e.line, e.col) from None
