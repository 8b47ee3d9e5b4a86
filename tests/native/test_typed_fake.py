"""UNIT tests of typed Semantic Variables through HTTP and the Python client, over FakeEngine:
a bad constraint is a 400 and the server keeps serving; sv["field"] feeds a later call."""
import pytest
from pydantic import BaseModel

import parrot as P
from parrot.server.keys import MANAGER
from tests.manager.fake_engine import FakeEngine
from tests.native.fake_app import make_fake_app


class Answer(BaseModel):
    city: str
    population: int

    model_config = {"json_schema_extra": {"examples": [{"city": "Lyon", "population": 5}]}}


@P.semantic_function(max_tokens=64, outputs={"answer": P.Output(json_schema=Answer)})
def ask(question, answer):
    """{{#user}}{{input:question}}{{/user}}
    {{#assistant}}{{output:answer}}{{/assistant}}"""


@P.semantic_function(max_tokens=6)
def describe(city, text):
    """Describe {{input:city}}: {{output:text}}"""


@P.semantic_function(max_tokens=6, outputs={"n": P.Output(regex="([0-9")})
def broken(q, n):
    """{{input:q}} {{output:n}}"""


@pytest.fixture
async def served(aiohttp_server):
    engine = FakeEngine()
    server = await aiohttp_server(make_fake_app([engine]))
    yield str(server.make_url("")).rstrip("/"), engine, server.app[MANAGER]


async def test_json_output_and_projection_run_server_side(served):
    url, engine, manager = served
    async with P.Session(url) as s:
        answer = ask("Which city?")
        city = answer["city"]
        assert answer["city"] is city  # one projection per field
        text = describe(city)
        value = await text.aget()
        graph = await s.agraph()
    assert Answer.model_validate_json(await_value(graph, answer.id)) == Answer(city="Lyon",
                                                                               population=5)
    assert value == engine.alone("Describe Lyon: ", 6)
    gets = [r["what"] for r in graph["requests"] if r["what"].startswith("get")]
    assert gets == [f"get {text.id}"]  # the field never went through the client
    kinds = {c["kind"] for c in graph["calls"]}
    assert kinds == {"llm", "project"}


def await_value(graph, var_id):
    (var,) = [v for v in graph["variables"] if v["id"] == var_id]
    return var["value_preview"]


async def test_bad_regex_is_400_and_the_server_keeps_serving(served):
    url, engine, manager = served
    with pytest.raises(P.ServerError) as err:
        async with P.Session(url):
            await broken("q").aget()
    assert err.value.status == 400 and "invalid regex" in err.value.message
    assert "outputs.n.regex" in err.value.message
    async with P.Session(url):
        assert await describe("Paris").aget() == engine.alone("Describe Paris: ", 6)
    assert engine.live == {}
