"""Unit tests: role blocks in templates, and output constraints on the client (no server)."""
import pytest
from pydantic import BaseModel

import parrot as P
from parrot.protocol.template import RoleMark, Template, TemplateError, render_source

CHAT = """{{#system}}You are terse.{{/system}}
{{#user}}Q: {{input:q}}{{/user}}
{{#assistant}}{{output:a}}{{/assistant}}"""


class City(BaseModel):
    name: str
    population: int


def test_role_blocks_parse_into_blocks():
    t = Template.parse(CHAT)
    assert t.has_roles and t.inputs == ["q"] and t.outputs == ["a"]
    assert [(b.role, len(b.pieces)) for b in t.blocks()] == [
        ("system", 1), ("user", 2), ("assistant", 1)]
    assert RoleMark("user", True, 2, 1) in t.pieces
    assert Template.parse(render_source(list(t.pieces))).pieces == t.pieces
    assert not Template.parse("Q: {{input:q}} A: {{output:a}}").has_roles


@pytest.mark.parametrize("source, reason", [
    ("{{#user}}{{output:a}}{{/user}}", "outputs belong in {{#assistant}} blocks"),
    ("hi {{#assistant}}{{output:a}}{{/assistant}}", "outside a role block"),
    ("{{input:x}}{{#assistant}}{{output:a}}{{/assistant}}", "outside a role block"),
    ("{{#assistant}}{{#user}}x{{/user}}{{output:a}}{{/assistant}}", "do not nest"),
    ("{{#assistant}}{{output:a}}", "never closed"),
    ("{{#assistant}}{{output:a}}{{/user}}", "{{/user}} inside {{#assistant}}"),
    ("{{/user}}{{#assistant}}{{output:a}}{{/assistant}}", "with no open block"),
    ("{{#tool}}x{{/tool}}{{#assistant}}{{output:a}}{{/assistant}}", "unknown role 'tool'"),
])
def test_role_block_errors(source, reason):
    with pytest.raises(TemplateError, match=reason.replace("{", r"\{").replace("}", r"\}")):
        Template.parse(source)


def test_pydantic_schema_and_constraint_wire_format():
    @P.semantic_function(max_tokens=40, stop=["\n"],
                         outputs={"city": P.Output(json_schema=City),
                                  "yes": P.Output(choices=("yes", "no"))})
    def ask(q, city, yes, free):
        """Q: {{input:q}} {{output:city}} ok? {{output:yes}} more: {{output:free}}"""

    spec = ask.to_spec("c1", {"q": "x"}, ["v1", "v2", "v3"])
    city, yes, free = (spec["outputs"][k] for k in ("city", "yes", "free"))
    assert city["json_schema"] == City.model_json_schema()
    assert city["sampling"] == {"max_tokens": 40}  # a constrained output drops default stops
    assert yes["choices"] == ["yes", "no"] and "json_schema" not in yes
    assert free["sampling"] == {"max_tokens": 40, "stop": ["\n"]} and "regex" not in free


def test_constrained_output_keeps_its_own_stop_and_default_constraint_applies():
    out = P.Output(regex="[0-9]+", stop=["."]).over(P.Output(stop=["\n"], max_tokens=5))
    assert out.stop == ["."] and out.regex == "[0-9]+" and out.max_tokens == 5
    inherited = P.Output(max_tokens=3).over(P.Output(choices=["a", "b"]))
    assert inherited.choices == ["a", "b"] and inherited.constraint_json() == {
        "choices": ["a", "b"]}
    own = P.Output(regex="x").over(P.Output(choices=["a"]))
    assert own.constraint_json() == {"regex": "x"}


@pytest.mark.parametrize("kwargs, error", [
    ({"regex": "a", "choices": ["a"]}, "at most one constraint"),
    ({"choices": []}, "non-empty list"),
    ({"choices": ["a", 1]}, "non-empty list"),
    ({"json_schema": "not a schema"}, "dict or a pydantic model"),
    ({"regex": 5}, "regex must be a string"),
])
def test_bad_constraints_fail_at_definition(kwargs, error):
    with pytest.raises((TypeError, ValueError), match=error):
        P.Output(**kwargs)
