"""End-to-end typed Semantic Variables on a real `parrot serve` (embedded SmolLM2, greedy):
constrained outputs, a projected JSON field feeding a second call, a bad regex as a 400, and
role blocks rendered by the model's chat template. Marked e2e."""
import json
import re

import pytest
from pydantic import BaseModel

import parrot as P

pytestmark = pytest.mark.e2e


class Person(BaseModel):
    model_config = {"extra": "forbid"}  # additionalProperties: false, or the model may add some

    name: str
    age: int


@P.semantic_function(max_tokens=48, outputs={
    "person": P.Output(json_schema=Person), "year": P.Output(regex="(19|20)[0-9]{2}"),
    "mood": P.Output(choices=["happy", "sad"])})
def profile(text, person, year, mood):
    """{{#system}}You extract facts.{{/system}}
    {{#user}}{{input:text}} Give the person as JSON.{{/user}}
    {{#assistant}}{{output:person}}{{/assistant}}
    {{#user}}Which year? Which mood?{{/user}}
    {{#assistant}}Year: {{output:year}}. Mood: {{output:mood}}{{/assistant}}"""


@P.semantic_function(max_tokens=8, min_tokens=2)
def greet(name, reply):
    """{{#user}}Say hello to {{input:name}}.{{/user}}
    {{#assistant}}{{output:reply}}{{/assistant}}"""


@P.semantic_function(max_tokens=8, min_tokens=2)
def greet_chatml(name, reply):
    """<|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    <|im_start|>user
    Say hello to {{input:name}}.<|im_end|>
    <|im_start|>assistant
    {{output:reply}}"""


@P.semantic_function(max_tokens=8, outputs={"n": P.Output(regex="([0-9")})
def broken(q, n):
    """{{input:q}} {{output:n}}"""


TEXT = "Alice is 34 years old, born in 1990, and she smiles all day."


def test_constrained_outputs_parse_and_match(parrot_server):
    with P.Session(parrot_server):
        person, year, mood = profile(TEXT)
        values = person.get(), year.get(), mood.get()
    Person.model_validate_json(values[0])  # parses and validates
    assert re.fullmatch("(19|20)[0-9]{2}", values[1]), values
    assert values[2] in ("happy", "sad"), values


def test_projected_field_feeds_a_second_call_server_side(parrot_server):
    with P.Session(parrot_server) as s:
        person, _, _ = profile(TEXT)
        reply = greet(person["name"])
        value = reply.get()
        graph = s.graph()
        name, doc = person["name"].get(), person.get()
    assert json.loads(doc)["name"] == name and value
    gets = [r["what"] for r in graph["requests"] if r["what"].startswith("get")]
    assert gets == [f"get {reply.id}"], gets  # the name never went through the client
    with P.Session(parrot_server):
        assert greet(name).get() == value  # same prompt as if the client had passed it


def test_role_blocks_render_as_the_chat_template(parrot_server):
    with P.Session(parrot_server):
        by_blocks, by_hand = greet("Bob").get(), greet_chatml("Bob").get()
    assert by_blocks == by_hand and by_blocks


def test_bad_regex_is_a_400_and_the_server_keeps_serving(parrot_server):
    with pytest.raises(P.ServerError) as err:
        with P.Session(parrot_server):
            broken("q").get()
    assert err.value.status == 400 and "regex" in err.value.message, err.value.message
    with P.Session(parrot_server):
        assert greet("Carol").get()
