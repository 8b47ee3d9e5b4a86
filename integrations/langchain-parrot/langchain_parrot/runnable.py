"""`compile_chain(chain)`: an LCEL chain as one Semantic-Variable program per run.

    compiled = compile_chain(prompt | ChatParrot(temperature=0, max_tokens=64) | StrOutputParser())
    compiled.invoke({"topic": "parrots"})      # same value as chain.invoke(...)
    compiled.batch([...])                      # every input's calls in ONE session
    for chunk in compiled.stream({...}): ...   # the final answer's tokens as they come

A run opens a Parrot session, plans every model call of the chain (prompt text with the
server's chat template, wired by Semantic Variables), submits them together and fetches the
final values; the server runs the graph, sharing prompt prefixes and starting dependent
calls without client round trips. Steps that cannot be compiled run on the client, on real
values, where they stand in the chain (the program splits there; one warning says which).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import warnings
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import parrot as P
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.base import coerce_to_runnable
from langchain_core.runnables.config import get_config_list
from parrot.program.loop_thread import background

from langchain_parrot.client_params import ParrotClientParams
from langchain_parrot.compiler import Compiler
from langchain_parrot.program import ChatRenderer, Program
from langchain_parrot.steps import RunContext, Step

T = TypeVar("T")


class ProgramRunner:
    """Opens a session per run and runs steps in it; shared by chains and graphs."""

    def __init__(self, server: ParrotClientParams | None, *, keep_graph: bool = False) -> None:
        self.server = server
        self.keep_graph = keep_graph
        self.last_graph: dict | None = None
        self._renderer = ChatRenderer(server._endpoint()) if server else None

    async def stream(self, step: Step, input: Any, config: RunnableConfig) -> AsyncIterator[Any]:
        """Run `step` on `input` in a session of its own and stream its final value."""
        async with self._session() as session:
            program = Program(session, self._renderer)
            async for chunk in program.stream(await step.run(RunContext(program, config), input)):
                yield chunk
            if self.keep_graph and session is not None:
                self.last_graph = await session.agraph()

    async def run_all(self, run_one: Any, inputs: list[Any], configs: list[RunnableConfig],
                      return_exceptions: bool) -> list[Any]:
        """`run_one(program, input, config)` for every input, concurrently, in one session."""
        async with self._session() as session:
            program = Program(session, self._renderer)
            results = await asyncio.gather(*(run_one(program, x, c) for x, c in
                                              zip(inputs, configs)),
                                            return_exceptions=return_exceptions)
            if self.keep_graph and session is not None:
                self.last_graph = await session.agraph()
        return list(results)

    def _session(self) -> Any:
        if self.server is None:  # nothing compiled: no session needed
            return contextlib.nullcontext()
        key = self.server.api_key.get_secret_value() if self.server.api_key else None
        return P.Session(self.server.base_url, api_key=key)


class ParrotRunnable(Runnable[Any, Any]):
    """A compiled chain: `invoke`/`ainvoke`/`batch`/`abatch`/`stream`/`astream` as on the
    original chain. Streaming yields the final answer's text as it is generated (str
    deltas, or AIMessageChunks when the chain ends with the chat model); a chain whose
    value is not one answer (a dict, a list) streams it whole, once."""

    def __init__(self, chain: Runnable, step: Step, runner: ProgramRunner) -> None:
        self.chain = chain
        self.step = step
        self.runner = runner

    @property
    def InputType(self) -> Any:  # noqa: N802 - LangChain's name
        return self.chain.InputType

    @property
    def OutputType(self) -> Any:  # noqa: N802
        return self.chain.OutputType

    @property
    def last_graph(self) -> dict | None:
        """The server's graph of the last run's session (with `keep_graph=True`)."""
        return self.runner.last_graph

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return name or f"Parrot[{self.chain.get_name()}]" + (suffix or "")

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return run_sync(self.ainvoke(input, config, **kwargs))

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        return (await self.abatch([input], config))[0]

    def batch(self, inputs: list[Any], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        return run_sync(self.abatch(inputs, config, return_exceptions=return_exceptions))

    async def abatch(self, inputs: list[Any],
                     config: RunnableConfig | list[RunnableConfig] | None = None,
                     *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        return await self.runner.run_all(self._run_one, inputs, configs, return_exceptions)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        # On the client's loop thread (which every P.Session call runs on anyway).
        return background().iter(lambda: self.astream(input, config, **kwargs))

    async def astream(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> AsyncIterator[Any]:
        async def one_input() -> AsyncIterator[Any]:
            yield input

        async for chunk in self._atransform_stream_with_config(one_input(), self._stream_one, config):
            yield chunk

    async def _stream_one(self, inputs: AsyncIterator[Any], run_manager: Any,
                          config: RunnableConfig) -> AsyncIterator[Any]:
        async for input in inputs:
            async for chunk in self.runner.stream(self.step, input, config):
                yield chunk

    async def _run_one(self, program: Program, input: Any, config: RunnableConfig) -> Any:
        async def run(value: Any, config: RunnableConfig) -> Any:
            ctx = RunContext(program, config)
            return await program.materialize(await self.step.run(ctx, value))

        return await self._acall_with_config(run, input, config)


def compile_chain(chain: Runnable | dict, *, keep_graph: bool = False) -> ParrotRunnable:
    """Compile an LCEL chain into a runnable that runs it as one Semantic-Variable program.

    `keep_graph=True` keeps the server's view of each run's session (calls, variables,
    shared prefixes, timings) in `.last_graph`, for inspection and tests.
    """
    chain = coerce_to_runnable(chain)  # a dict literal is a RunnableParallel
    compiler = Compiler()
    step = compiler.compile(chain)
    warn_client_steps(compiler, what="chain")
    return ParrotRunnable(chain, step, ProgramRunner(compiler.server, keep_graph=keep_graph))


def warn_client_steps(compiler: Compiler, what: str) -> None:
    if compiler.server is None:
        warnings.warn(f"langchain_parrot: this {what} has no ChatParrot/ParrotLLM call to "
                      "compile; it runs entirely on the client.", stacklevel=3)
    elif compiler.client_steps:
        names = ", ".join(s.reason for s in compiler.client_steps)
        warnings.warn(f"langchain_parrot: {len(compiler.client_steps)} step(s) of this {what} "
                      f"are not compiled and run on the client, splitting the Parrot program "
                      f"there (what comes before each runs on the server first): {names}",
                      stacklevel=3)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from sync code, even when this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
