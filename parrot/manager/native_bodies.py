"""The native (Semantic Variable) API's request bodies as pydantic models: their shape and
types. What needs the session or the template (bindings against placeholders, template
syntax, ids already taken) is checked after, in call_spec.py and the graph. The same models
give /openapi.json its request schemas (server/openapi.py).

The sampling fields shared with the OpenAI endpoints are `SamplingFields`; their limits
are the engine's (engine/sampling_params.py), which checks them again for in-process users.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from parrot.engine.sampling_params import (MAX_PENALTY, MAX_STOP_CHARS, MAX_STOP_STRINGS,
                                           MAX_STOP_TOKEN_IDS, MAX_TEMPERATURE, SEED_MAX,
                                           SEED_MIN)
from parrot.manager.fields import (ID_PATTERN, Body, Boolean, Closed, Integer, Number, String,
                                   TokenId, integer, one_error)
from parrot.manager.projection import MAX_PATH

MAX_CALLS_PER_REQUEST = 4096
MAX_JOIN_PARTS = 4096
MAX_GET_TIMEOUT_S = 3600.0
DEFAULT_GET_TIMEOUT_S = 300.0

Id = Annotated[String, Field(pattern=ID_PATTERN)]
StopText = Annotated[String, Field(max_length=MAX_STOP_CHARS)]
Stop = Annotated[StopText | Annotated[list[StopText], Field(max_length=MAX_STOP_STRINGS)],
                 one_error(f"must be a string or a list of at most {MAX_STOP_STRINGS} strings "
                           f"of at most {MAX_STOP_CHARS} characters")]
TokenIds = Annotated[list[Annotated[TokenId, Field(ge=0)]], Field(max_length=MAX_STOP_TOKEN_IDS),
                     one_error(f"must be a list of at most {MAX_STOP_TOKEN_IDS} non-negative "
                               "integers")]


class SamplingFields(Body):
    """Sampling fields both APIs read (vLLM's names and meanings)."""

    top_p: Number | None = Field(None, gt=0, le=1)
    seed: integer(ge=SEED_MIN, le=SEED_MAX) | None = None
    stop: Stop | None = None
    stop_token_ids: TokenIds | None = None
    ignore_eos: Boolean | None = None
    min_tokens: integer(ge=0) | None = None
    presence_penalty: Number | None = Field(None, ge=-MAX_PENALTY, le=MAX_PENALTY)
    frequency_penalty: Number | None = Field(None, ge=-MAX_PENALTY, le=MAX_PENALTY)
    repetition_penalty: Number | None = Field(None, gt=0, le=MAX_PENALTY,
                                              description="vLLM's; 1 is off")


class NativeSampling(SamplingFields, Closed):
    """An output's (or a call's default) sampling; an unknown field is refused."""

    max_tokens: integer(ge=1) | None = None
    temperature: Number | None = Field(None, ge=0, le=MAX_TEMPERATURE)
    top_k: integer(ge=0) | None = None

    def settings(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class VarRefSpec(Closed):
    var: String


class ValueSpec(Closed):
    value: String


Binding = Annotated[String | VarRefSpec | ValueSpec,
                    one_error('must be a string, {"var": id} or {"value": text}')]


class OutputSpec(Body):
    """Where an output goes, how it is sampled, and at most one constraint on it."""

    var: Id | None = None
    sampling: NativeSampling | None = None
    json_schema: dict[str, Any] | None = None
    json_object: Boolean | None = None
    regex: String | None = None
    choices: list[String] | None = None
    grammar: String | None = None


def _text_or_object(value: Any) -> str:
    return "<id>" if isinstance(value, str) else "<spec>"


OutputRef = Annotated[Annotated[Id, Tag("<id>")] | Annotated[OutputSpec, Tag("<spec>")],
                      Discriminator(_text_or_object)]


class OutputVar(Closed):
    var: Id | None = None


OutputVarRef = Annotated[Annotated[Id, Tag("<id>")] | Annotated[OutputVar, Tag("<spec>")],
                         Discriminator(_text_or_object)]


class _CallBase(Body):
    id: Id | None = None
    name: String | None = None


class LlmCallSpec(_CallBase):
    kind: Literal["llm"] = "llm"
    template: String = Field(description="{{input:x}} / {{output:y}} placeholders; role "
                             "blocks {{#user}}...{{/user}}", examples=["Q: {{input:x}} A: "
                                                                       "{{output:y}}"])
    inputs: dict[str, Binding] | None = Field(None, examples=[{"x": "2+2?"}])
    outputs: dict[str, OutputRef] | None = None
    sampling: NativeSampling | None = None
    eager: Boolean | None = None


class JoinSpec(_CallBase):
    kind: Literal["join"]
    parts: Annotated[list[Binding], Field(max_length=MAX_JOIN_PARTS)]
    sep: String = "\n"
    output: OutputVarRef | None = None


class ProjectSpec(_CallBase):
    kind: Literal["project"]
    source: VarRefSpec
    path: Annotated[list[String | Integer], Field(min_length=1, max_length=MAX_PATH),
                    one_error(f"must be a list of 1 to {MAX_PATH} keys (strings) or indexes "
                              "(integers)")]
    output: OutputVarRef | None = None


def _call_kind(value: Any) -> str | None:
    kind = value.get("kind", "llm") if isinstance(value, dict) else getattr(value, "kind", None)
    return f"<{kind}>" if kind in ("llm", "join", "project") else None


AnyCallSpec = Annotated[
    Annotated[LlmCallSpec, Tag("<llm>")] | Annotated[JoinSpec, Tag("<join>")]
    | Annotated[ProjectSpec, Tag("<project>")],
    Discriminator(_call_kind, custom_error_type="field", custom_error_message=(
        "must be an object whose kind is 'llm' (the default), 'join' or 'project'")),
]


class CallsBody(Body):
    calls: Annotated[list[AnyCallSpec], Field(min_length=1, max_length=MAX_CALLS_PER_REQUEST)]


class VariableSpec(Body):
    id: Id | None = None
    name: String | None = None
    value: String | None = None


class VariablesBody(Body):
    variables: Annotated[list[VariableSpec], Field(min_length=1)]


class GetSpec(Body):
    """Wait for `var` (the GET variable route's criteria and timeout)."""

    var: Annotated[String, Field(min_length=1)]
    criteria: Literal["latency", "throughput"] | None = None
    timeout: Number = Field(DEFAULT_GET_TIMEOUT_S, gt=0, le=MAX_GET_TIMEOUT_S)


class StreamSpec(Body):
    """Stream `var` (the stream route's criteria)."""

    var: Annotated[String, Field(min_length=1)]
    criteria: Literal["latency", "throughput"] | None = None


class OpenSessionBody(Body):
    """Open a session; optionally add variables and calls and wait for a get."""

    idle_timeout: Number | None = Field(None, gt=0, description="seconds (server default)")
    variables: Annotated[list[VariableSpec], Field(min_length=1)] | None = None
    calls: Annotated[list[AnyCallSpec], Field(min_length=1,
                                           max_length=MAX_CALLS_PER_REQUEST)] | None = None
    get: GetSpec | None = Field(None, description=(
        "wait for this variable and answer its value with the session; a failed get "
        "answers that route's error plus session_id and token: the session stays open"))
    stream: StreamSpec | None = Field(None, description=(
        "answer an event stream of this variable instead: first a `session` event "
        "(session_id, token, idle_timeout), then the stream route's events"))


class StreamBody(Body):
    """`POST .../variables/{vid}/stream`: the client's queued variables and calls, added
    (variables first) before the stream opens, so submit and stream are one round trip."""

    variables: Annotated[list[VariableSpec], Field(min_length=1)] | None = None
    calls: Annotated[list[AnyCallSpec], Field(min_length=1,
                                           max_length=MAX_CALLS_PER_REQUEST)] | None = None


class SetVariableBody(Body):
    value: String
