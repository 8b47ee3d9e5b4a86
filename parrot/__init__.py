"""Parrot: serving LLM applications with Semantic Variables.

The programming API, used as `import parrot as P`:

    @P.semantic_function(max_tokens=64)
    def summarize(chunk, summary):
        '''Summarize the text below in two sentences.
        Text: {{input:chunk}}
        Summary: {{output:summary}}'''

    text = "Parrots are long-lived birds that can learn words. Many live in the tropics."
    with P.Session("http://127.0.0.1:8000"):
        print(summarize(text).get(P.LATENCY))

Importing `parrot` loads neither torch nor the engine: client programs run without them.
"""
from parrot.program import (
    LATENCY,
    THROUGHPUT,
    BindingError,
    Criteria,
    NoSessionError,
    Output,
    ParrotError,
    SemanticFunction,
    SemanticVariable,
    ServerError,
    Session,
    Template,
    TemplateError,
    concat,
    join,
    numbered,
    semantic_function,
    variable,
)

__version__ = "0.1.0"

__all__ = [
    "LATENCY", "THROUGHPUT", "BindingError", "Criteria", "NoSessionError", "Output",
    "ParrotError", "SemanticFunction", "SemanticVariable", "ServerError", "Session",
    "Template", "TemplateError", "concat", "join", "numbered", "semantic_function", "variable",
]
