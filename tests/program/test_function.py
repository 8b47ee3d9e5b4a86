"""Unit tests: @semantic_function definition/call errors, bindings, specs (no server)."""
import subprocess
import sys

import pytest

import parrot as P
from parrot.program.session import Session


@P.semantic_function(max_tokens=32, stop=["\n"],
                     outputs={"title": P.Output(max_tokens=8, temperature=0.5)})
def write(topic, style, title, body):
    """Write about {{input:topic}} in a {{input:style}} style.
    Title: {{output:title}}
    Body: {{output:body}}"""


def test_definition_reads_template_and_settings():
    assert write.template.inputs == ["topic", "style"]
    assert write.template.outputs == ["title", "body"]
    assert write.sampling["title"].to_json() == {"max_tokens": 8, "temperature": 0.5,
                                                 "stop": ["\n"]}
    assert write.sampling["body"].to_json() == {"max_tokens": 32, "stop": ["\n"]}
    assert write.__doc__.startswith("Write about")  # still a normal function object


def test_penalties_are_sampling_settings():
    @P.semantic_function(frequency_penalty=1.5, outputs={"b": P.Output(repetition_penalty=1.2)})
    def f(x, a, b):
        """{{input:x}} {{output:a}} {{output:b}}"""
    assert f.sampling["a"].to_json() == {"frequency_penalty": 1.5}
    assert f.sampling["b"].to_json() == {"frequency_penalty": 1.5, "repetition_penalty": 1.2}


def test_bind_positional_keyword_and_default():
    @P.semantic_function
    def f(a, b="dflt", out=None):
        """{{input:a}} {{input:b}} {{output:out}}"""

    assert f.bind(1) == {"a": 1, "b": "dflt"}
    assert f.bind(b=2, a=3) == {"a": 3, "b": 2}


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {"topic": "x", "style": "y", "title": "t"}, "'title' is an output (at 2:8)"),
    (("x",), {"mood": "y"}, "'mood' is not a declared input (inputs: topic at 1:13, "
                            "style at 1:34)"),
    (("x",), {}, "missing input 'style' (at 1:34)"),
    (("x", "y", "z"), {}, "takes 2 input argument(s)"),
    (("x",), {"topic": "again"}, "input 'topic' given twice"),
])
def test_call_errors_name_the_template_position(args, kwargs, message):
    with pytest.raises(P.BindingError) as err:
        write.bind(*args, **kwargs)
    assert message in str(err.value)


def test_definition_errors():
    with pytest.raises(P.TemplateError, match=r"unknown placeholder \{\{input:y\}\}.*\(at 1:4\)"):
        @P.semantic_function
        def g(x, z):
            """Hi {{input:y}} {{output:z}}"""
    with pytest.raises(P.TemplateError, match="parameter 'extra' does not appear"):
        @P.semantic_function
        def h(x, extra, z):
            """{{input:x}} {{output:z}}"""
    with pytest.raises(P.TemplateError, match=r"h2: duplicate output 'z' \(at 2:1\)"):
        @P.semantic_function
        def h2(x):
            """{{input:x}} {{output:z}}
{{output:z}}"""
    with pytest.raises(P.TemplateError, match="needs its template as the docstring"):
        @P.semantic_function
        def nodoc(x):
            pass
    with pytest.raises(P.TemplateError, match=r"outputs\['nope'\] is not an output"):
        @P.semantic_function(outputs={"nope": P.Output(max_tokens=1)})
        def k(x, z):
            """{{input:x}} {{output:z}}"""
    with pytest.raises(TypeError, match="unknown setting"):
        P.semantic_function(max_tokenz=3)
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        P.Output(max_tokens=0)


def test_calling_outside_a_session_is_an_error():
    with pytest.raises(P.NoSessionError, match="no active Parrot session"):
        write("parrots", "dry")


def test_spec_is_what_the_native_api_takes():
    session = Session("http://unused")
    bindings = write.bind(P.SemanticVariable(session, "v1"), 42)
    spec = write.to_spec("c1", bindings, ["v2", "v3"])
    assert spec["inputs"] == {"topic": {"var": "v1"}, "style": "42"}
    assert spec["outputs"]["title"] == {"var": "v2", "sampling": write.sampling["title"].to_json()}
    assert spec["template"] == write.template.source and spec["eager"] is False


def test_import_parrot_loads_neither_torch_nor_engine():
    code = ("import sys, parrot as P; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'aiohttp') or m.startswith('parrot.engine')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
