"""UNIT tests over FakeEngine: output constraints reach SamplingParams and are compiled at
submit time, projections feed later calls server-side, role blocks lower to ChatML."""
import json

import pytest

from parrot.manager import BadRequest, ProducerFailed
from parrot.manager.projection import ProjectionError, project
from parrot.protocol.criteria import LATENCY

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}},
          "examples": [{"city": "Paris", "facts": {"river": "Seine", "rank": [1, 2]}}]}
ASK = "Answer as JSON: {{input:x}}\n{{output:y}}"
USE = "Tell me about {{input:x}}: {{output:y}}"


def llm(cid, x, out, template=ASK, **output):
    binding = {"var": x[1:]} if x.startswith("$") else x
    output.setdefault("sampling", {"max_tokens": 64})
    return {"id": cid, "template": template, "inputs": {"x": binding},
            "outputs": {"y": {"var": out, **output}}}


def proj(cid, source, path, out):
    return {"id": cid, "kind": "project", "source": {"var": source}, "path": path,
            "output": {"var": out}}


def test_project_values_and_errors():
    doc = json.dumps({"a": {"b": "text", "n": [1, {"x": None}]}, "s": "plain"})
    assert project(doc, ("s",)) == "plain"
    assert project(doc, ("a", "n")) == "[1, {\"x\": null}]"
    assert project(doc, ("a", "n", -1, "x")) == "null"
    for path, error in [(("zz",), "no field \\['zz'\\]"), (("a", "n", 5), "has 2 items"),
                        (("s", "x"), "is a string, not an object")]:
        with pytest.raises(ProjectionError, match=error):
            project(doc, path)
    with pytest.raises(ProjectionError, match="not JSON"):
        project("Paris, of course", ("city",))


async def test_constraints_become_sampling_params(manager):
    s = manager.open_session()
    calls = [llm("c1", "a", "v1", json_schema=SCHEMA), llm("c2", "b", "v2", choices=["yes", "no"]),
             llm("c3", "c", "v3", regex="[0-9]+", sampling={"max_tokens": 4, "stop": ["."]}),
             llm("c4", "d", "v4")]
    manager.submit_calls(s, {"calls": [{**c, "sampling": {"stop": ["\n"]}} for c in calls]})
    sp = {c: s.graph.calls[c].sampling["y"] for c in ("c1", "c2", "c3", "c4")}
    assert (sp["c1"].constraint.kind, json.loads(sp["c1"].constraint.spec)) == ("json_schema",
                                                                                 SCHEMA)
    assert sp["c2"].constraint.kind == "choice" and json.loads(sp["c2"].constraint.spec) == [
        "yes", "no"]
    assert sp["c1"].stop == [] and sp["c3"].stop == ["."]  # no inherited stop when constrained
    assert sp["c3"].constraint.spec == "[0-9]+" and sp["c4"].constraint is None
    assert sp["c4"].stop == ["\n"]
    assert await manager.get_variable(s, "v2", LATENCY, timeout=5) == "yes"


@pytest.mark.parametrize("output, needle", [
    ({"regex": "([a-z"}, "calls[0].outputs.y.regex: invalid regex"),
    ({"regex": "a", "choices": ["a"]}, "at most one constraint"),
    ({"choices": []}, "calls[0].outputs.y.choices must be a list"),
    ({"json_schema": "str"}, "'calls[0].outputs.y.json_schema' must be an object"),
    ({"sampling": {"constraint": {"kind": "regex"}}},
     "'calls[0].outputs.y.sampling' has an unknown field 'constraint'"),
])
async def test_bad_constraints_are_refused_before_anything_runs(manager, engine, output, needle):
    s = manager.open_session()
    with pytest.raises(BadRequest) as err:
        manager.submit_calls(s, {"calls": [llm("c1", "x", "v1", **output)]})
    assert needle in err.value.message
    assert s.graph.calls == {} and engine.log == []


async def test_projection_feeds_a_later_call_server_side(manager, engine):
    s = manager.open_session()
    manager.submit_calls(s, {"calls": [
        llm("c1", "capital of France", "doc", json_schema=SCHEMA),
        proj("p1", "doc", ["city"], "city"), proj("p2", "doc", ["facts", "rank"], "rank"),
        llm("c2", "$city", "about", USE), llm("c3", "$rank", "r", USE)]})
    about = await manager.get_variable(s, "about", LATENCY, timeout=5)
    assert s.graph.variables["city"].value == "Paris"
    assert about == engine.alone("Tell me about Paris: ", 64)
    assert await manager.get_variable(s, "r", LATENCY, timeout=5) == engine.alone(
        "Tell me about [1, 2]: ", 64)
    assert [r for r in s.requests if r[1].startswith("get")][0][1] == "get about"
    assert s.graph.calls["p1"].to_json()["path"] == ["city"]


async def test_missing_field_fails_only_its_consumers(manager, engine):
    s = manager.open_session()
    manager.submit_calls(s, {"calls": [
        llm("c1", "q", "doc", json_schema=SCHEMA), proj("p1", "doc", ["country"], "country"),
        llm("c2", "$country", "bad", USE), llm("c3", "$doc", "good", USE)]})
    with pytest.raises(ProducerFailed, match=r"projection of 'doc' failed: no field \['country'\]"):
        await manager.get_variable(s, "bad", LATENCY, timeout=5)
    assert s.graph.calls["c2"].state.value == "failed"
    assert await manager.get_variable(s, "good", LATENCY, timeout=5)
    assert s.graph.calls["c1"].state.value == "done" and s.graph.calls["c3"].state.value == "done"


async def test_role_blocks_lower_to_the_chat_template(manager, engine):
    s = manager.open_session()
    template = ("{{#system}}Be brief.{{/system}}\n{{#user}}{{input:x}}{{/user}}\n"
                "{{#assistant}}Sure: {{output:y}} done{{/assistant}}")
    manager.submit_calls(s, {"calls": [llm("c1", "hello", "v1", template)]})
    call = s.graph.calls["c1"]
    assert call.sampling["y"].stop == [" done"]
    value = await manager.get_variable(s, "v1", LATENCY, timeout=5)
    prompt = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n"
              "<|im_start|>assistant\nSure: ")
    assert value == engine.alone(prompt, 64)
