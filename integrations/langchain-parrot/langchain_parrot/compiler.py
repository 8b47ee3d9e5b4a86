"""LCEL to steps: what compiles into the Semantic-Variable program, and what splits it.

Compiled: `RunnableSequence`, `RunnableParallel` (and dict literals), `RunnablePassthrough`
and `.assign(...)`, `itemgetter(...)` / `RunnablePick`, `"sep".join`, `as_list`, `.map()`, prompt
templates, `StrOutputParser`, and `ChatParrot` / `ParrotLLM` (also `.bind(stop=...,
temperature=..., max_tokens=..., top_p=..., seed=...)`) talking to the chain's Parrot server.
Everything else (functions, `RunnableLambda`, other parsers and models, retries, fallbacks)
becomes a `ClientStep`: the program splits there.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import BasePromptTemplate
from langchain_core.runnables import (Runnable, RunnableBinding, RunnableLambda,
                                      RunnableParallel, RunnablePassthrough, RunnableSequence)
from langchain_core.runnables.base import RunnableEach
from langchain_core.runnables.passthrough import RunnableAssign, RunnablePick

from langchain_parrot.chat_models import ChatParrot
from langchain_parrot.client_params import OPENAI_DEFAULT_TEMPERATURE, SAMPLING_KEYS, ParrotClientParams
from langchain_parrot.llms import ParrotLLM
from langchain_parrot.steps import (AssignStep, ClientStep, EachStep, JoinStep, ListStep,
                                    ModelStep, ParallelStep, ParseStep, PassthroughStep,
                                    PickStep, PromptStep, SequenceStep, Step, as_list)

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the OpenAI default the server applies
BINDABLE = frozenset({"stop", *SAMPLING_KEYS})


@dataclass
class Compiler:
    """Turns one runnable tree into steps; remembers the server and the client-side steps."""

    server: ParrotClientParams | None = None  # the first Parrot model met: its server runs all
    client_steps: list[ClientStep] = field(default_factory=list)

    def compile(self, runnable: Runnable) -> Step:
        for kind, build in _BUILDERS:
            if isinstance(runnable, kind):
                step = build(self, runnable)
                if step is not None:
                    return step
                break
        return self.client(runnable, describe(runnable))

    def client(self, runnable: Runnable, reason: str) -> ClientStep:
        step = ClientStep(runnable, reason)
        self.client_steps.append(step)
        return step

    def model(self, model: ParrotClientParams, kwargs: dict[str, Any]) -> Step:
        self.server = self.server or model
        if (model.base_url, model.api_key) != (self.server.base_url, self.server.api_key):
            return self.client(model, "a model on another Parrot server")
        sampling = model_sampling(model, kwargs)
        if isinstance(sampling, str):
            return self.client(model, sampling)
        return ModelStep(model, sampling, is_chat=isinstance(model, ChatParrot))


def model_sampling(model: ParrotClientParams, kwargs: dict[str, Any]) -> dict[str, Any] | str:
    """The sampling settings a plain call of `model` would use, or why they cannot be had."""
    unknown = sorted(set(kwargs) - BINDABLE)
    if unknown:
        return f"bound argument(s) {unknown} are not compiled"
    logprobs = getattr(model, "logprobs", None)
    if logprobs is not None and logprobs is not False:  # ParrotLLM's 0 asks for logprobs
        return "logprobs are not compiled"
    settings = {k: kwargs.get(k, getattr(model, k)) for k in BINDABLE}
    if settings["max_tokens"] is None:
        if isinstance(model, ChatParrot):
            return "max_tokens=None (generate until the context is full) is not compiled"
        settings["max_tokens"] = COMPLETIONS_DEFAULT_MAX_TOKENS
    if settings["temperature"] is None:
        settings["temperature"] = OPENAI_DEFAULT_TEMPERATURE
    return {k: v for k, v in settings.items() if v is not None and v != []}


def describe(runnable: Runnable) -> str:
    """How a client-side step is named in warnings."""
    func = getattr(runnable, "func", None) or getattr(runnable, "afunc", None)
    name = getattr(func, "__name__", None)
    return f"{type(runnable).__name__}({name})" if name else type(runnable).__name__


def _sequence(c: Compiler, r: RunnableSequence) -> Step:
    return SequenceStep([c.compile(s) for s in r.steps])


def _parallel(c: Compiler, r: RunnableParallel) -> Step:
    return ParallelStep({k: c.compile(s) for k, s in r.steps__.items()})


def _assign(c: Compiler, r: RunnableAssign) -> Step:
    return AssignStep(_parallel(c, r.mapper))


def _passthrough(c: Compiler, r: RunnablePassthrough) -> Step | None:
    return PassthroughStep() if r.func is None and r.afunc is None else None


def _pick(c: Compiler, r: RunnablePick) -> Step:
    return PickStep(lambda value: r.invoke(value))


def _each(c: Compiler, r: RunnableEach) -> Step:
    return EachStep(c.compile(r.bound))


def _lambda(c: Compiler, r: RunnableLambda) -> Step | None:
    func = getattr(r, "func", None)
    if isinstance(func, operator.itemgetter):
        return PickStep(func)
    if func is as_list:
        return ListStep()
    if getattr(func, "__name__", None) == "join" and isinstance(getattr(func, "__self__", None),
                                                                 str):
        return JoinStep(func.__self__)
    return None


def _binding(c: Compiler, r: RunnableBinding) -> Step | None:
    if isinstance(r.bound, (ChatParrot, ParrotLLM)):
        return c.model(r.bound, dict(r.kwargs))
    return c.compile(r.bound) if not r.kwargs else None


_BUILDERS: list[tuple[type, Callable[[Compiler, Any], Step | None]]] = [
    (RunnableSequence, _sequence),
    (RunnableAssign, _assign),
    (RunnablePick, _pick),
    (RunnableParallel, _parallel),
    (RunnablePassthrough, _passthrough),
    (RunnableEach, _each),
    (RunnableLambda, _lambda),
    (BasePromptTemplate, lambda c, r: PromptStep(r)),
    ((ChatParrot, ParrotLLM), lambda c, r: c.model(r, {})),
    (StrOutputParser, lambda c, r: ParseStep(r) if type(r) is StrOutputParser else None),
    (RunnableBinding, _binding),
]
