"""The bench workloads' role blocks render, for SmolLM2, to exactly the ChatML they replaced,
on both paths: the manager's (what a Parrot server prefills for the SV program) and the
baseline client's (what `/v1/completions` gets), so the benchmark measures the same tokens as
before the conversion. The reference is `rendered_prompts.json`, captured from the hand-written
ChatML (see its "about")."""
from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from parrot.bench.baseline_runtime import BaselineRuntime, Result, local_chat_template
from parrot.bench.runtime import Clock
from parrot.bench.workload import fixed_length
from parrot.bench.workloads import WORKLOADS
from parrot.manager.call_spec import SpecContext, parse_call
from parrot.program import SemanticFunction
from parrot.protocol.template import Text, render_source

GOLDEN = json.loads((Path(__file__).parent / "rendered_prompts.json").read_text())
TAG = "tag-1"


class TwoPathRecorder(BaselineRuntime):
    """The baseline client with the server replaced; for every call it records the baseline
    prompt and the prompt the manager builds from the same call spec."""

    def __init__(self, render_chat) -> None:
        super().__init__("http://unused", "baseline", Clock(), http=None, model=None,
                         render_chat=render_chat)
        self.baseline: list[str] = []
        self.manager: list[str] = []

    def request(self, fn: SemanticFunction, output: str, values: dict[str, str]):
        prompt, sampling = super().request(fn, output, values)
        self.baseline.append(prompt)
        self.manager.append(manager_prompt(fn, values, self.render_chat))
        return prompt, sampling

    async def complete(self, prompt: str, sampling: dict) -> Result:
        await asyncio.sleep(0)
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
        return Result(f"<out {digest}>", None, 0.0)  # any order of calls gives the same text


def manager_prompt(fn: SemanticFunction, values: dict[str, str], render_chat) -> str:
    """The first stage's text as the manager fills it, from the spec the client sends."""
    spec = fn.to_spec("c1", values, [f"v{i}" for i in range(len(fn.template.outputs))])
    call = parse_call(spec, "calls[0]", SpecContext(lambda prefix: prefix + "1",
                                                    render_chat=render_chat))
    return "".join(p.text if isinstance(p, Text) else values[p.name]
                   for p in call.template.stages()[0].pieces)


@pytest.fixture(scope="module")
def render_chat():
    return local_chat_template(None)  # what the runner uses: the embedded SmolLM2's template


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    async def instant(self, offset: float) -> None:
        await asyncio.sleep(0)
    monkeypatch.setattr(Clock, "sleep_until", instant)


def functions(workload) -> dict[str, SemanticFunction]:
    """The workload's semantic functions by "module.name" (mixed reuses map_reduce's)."""
    return {f"{fn.__module__.rpartition('.')[2]}.{fn.name}": fn
            for fn in vars(workload).values() if isinstance(fn, SemanticFunction)}


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_role_blocks_lower_to_the_chatml_they_replaced(name, render_chat):
    runtime = TwoPathRecorder(render_chat)
    for key, fn in functions(WORKLOADS[name](1.0, smoke=True)).items():
        assert fn.template.has_roles, key
        lowered, stops = runtime.lowered(fn)
        assert render_source(list(lowered.stages()[0].pieces)) == GOLDEN["templates"][key], key
        assert stops == {}  # nothing follows an output in its block: no stop added


@pytest.mark.parametrize("smoke", [True, False], ids=["smoke", "full"])
@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_call_renders_to_the_prompt_measured_before(name, smoke, render_chat):
    runtime = TwoPathRecorder(render_chat)
    asyncio.run(WORKLOADS[name](1.0, smoke).run(runtime, TAG))
    assert runtime.manager == runtime.baseline  # both paths send the same text, call by call
    digests = sorted(hashlib.sha256(p.encode()).hexdigest() for p in runtime.baseline)
    assert digests == GOLDEN["prompts"][f"{name}/{'smoke' if smoke else 'full'}"]


def test_baseline_adds_the_stop_an_assistant_block_implies_as_the_manager_does(render_chat):
    @fixed_length(4, stop="\n\n")
    def rate(text, score):
        """{{#user}}Rate: {{input:text}}{{/user}}
        {{#assistant}}Score: {{output:score}} out of 10{{/assistant}}"""

    values = {"text": "fine"}
    prompt, sampling = TwoPathRecorder(render_chat).request(rate, "score", values)
    assert prompt == render_chat([{"role": "user", "content": "Rate: fine"}], True) + "Score: "
    assert prompt == manager_prompt(rate, values, render_chat)
    assert sampling["stop"] == ["\n\n", " out of 10"]
    spec = rate.to_spec("c1", values, ["v1"])
    call = parse_call(spec, "calls[0]", SpecContext(lambda p: p + "1", render_chat=render_chat))
    assert call.sampling["score"].stop == sampling["stop"]
