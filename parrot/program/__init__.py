"""The client side of Semantic Variables: templates, semantic functions, sessions, futures."""
from parrot.protocol.criteria import LATENCY, THROUGHPUT, Criteria
from parrot.program.errors import NoSessionError, ParrotError, ServerError
from parrot.program.function import BindingError, SemanticFunction, semantic_function
from parrot.program.helpers import concat, join, numbered, variable
from parrot.program.output import Output
from parrot.program.session import Session, current_session
from parrot.protocol.template import Template, TemplateError
from parrot.program.variable import SemanticVariable

__all__ = [
    "LATENCY", "THROUGHPUT", "Criteria", "NoSessionError", "ParrotError", "ServerError",
    "BindingError", "SemanticFunction", "semantic_function", "concat", "join", "numbered",
    "variable", "Output", "Session", "current_session", "Template", "TemplateError",
    "SemanticVariable",
]
