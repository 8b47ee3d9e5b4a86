"""Unit tests: template parsing and its errors (no engine, no server)."""
import pytest

from parrot.protocol.template import INPUT, OUTPUT, Placeholder, Template, TemplateError, Text


def test_parse_pieces_and_positions():
    t = Template.parse("Hi {{input:name}}!\nSay: {{ output : reply }} end")
    assert t.pieces == (Text("Hi "), Placeholder(INPUT, "name", 1, 4), Text("!\nSay: "),
                        Placeholder(OUTPUT, "reply", 2, 6), Text(" end"))
    assert t.inputs == ["name"] and t.outputs == ["reply"]
    assert t.find("reply").position == "2:6"


def test_stages_split_at_outputs_and_drop_trailing_text():
    t = Template.parse("A {{input:x}} B {{output:y}} C {{input:x}} {{output:z}} tail")
    stages = t.stages()
    assert [s.output for s in stages] == ["y", "z"]
    assert stages[0].pieces == (Text("A "), Placeholder(INPUT, "x", 1, 3), Text(" B "))
    assert stages[1].pieces == (Text(" C "), Placeholder(INPUT, "x", 1, 32), Text(" "))
    assert t.inputs == ["x"]  # repeated input listed once


def test_input_may_repeat():
    assert Template.parse("{{input:a}} {{input:a}} {{output:b}}").inputs == ["a"]


@pytest.mark.parametrize("source, reason, where", [
    ("ok\nbad {{input:x", "unclosed placeholder", (2, 5)),
    ("{{foo:x}} {{output:y}}", "unknown placeholder kind 'foo'", (1, 1)),
    ("{{input}} {{output:y}}", "must look like", (1, 1)),
    ("{{input:1x}} {{output:y}}", "is not an identifier", (1, 1)),
    ("{{output:y}}\n  {{output:y}}", "duplicate output 'y'", (2, 3)),
    ("{{input:y}} {{output:y}}", "both as an input and an output", (1, 13)),
    ("no outputs {{input:x}}", "declares no {{output:name}}", (1, 23)),
    ("{{input:{{x}} {{output:y}}", "'{{' inside placeholder", (1, 1)),
])
def test_errors_name_line_and_col(source, reason, where):
    with pytest.raises(TemplateError) as err:
        Template.parse(source)
    assert reason in str(err.value)
    assert (err.value.line, err.value.col) == where
    assert f"(at {where[0]}:{where[1]})" in str(err.value)


def test_not_a_string():
    with pytest.raises(TemplateError, match="must be a string"):
        Template.parse(None)


def test_from_pieces_validates():
    t = Template.from_pieces([Placeholder(INPUT, "p0"), Text(""), Placeholder(OUTPUT, "out")])
    assert t.outputs == ["out"] and Text("") not in t.pieces
    with pytest.raises(TemplateError):
        Template.from_pieces([Placeholder(INPUT, "p0")])
