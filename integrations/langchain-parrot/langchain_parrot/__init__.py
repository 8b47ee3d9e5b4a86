"""LangChain and LangGraph on Parrot (docs/langchain.md).

- `ChatParrot`, `ParrotLLM`: a chat model and an LLM over Parrot's OpenAI-compatible API.
- `compile_chain(chain)`: an LCEL chain run as one Semantic-Variable program per call.
- `compile_graph(state_graph)`, `parrot_node(...)`: LangGraph graphs on Semantic Variables
  (imported lazily: `langgraph` is needed only for these).
"""
from typing import Any

from langchain_parrot.chat_models import ChatParrot
from langchain_parrot.llms import ParrotLLM
from langchain_parrot.runnable import ParrotRunnable, compile_chain
from langchain_parrot.transport import ParrotAPIError

__all__ = ["ChatParrot", "ParrotLLM", "ParrotAPIError", "ParrotRunnable", "compile_chain",
           "ParrotGraph", "compile_graph", "parrot_node"]

_GRAPH_NAMES = ("ParrotGraph", "compile_graph", "parrot_node")


def __getattr__(name: str) -> Any:
    if name in _GRAPH_NAMES:
        from langchain_parrot import graph

        return getattr(graph, name)
    raise AttributeError(f"module 'langchain_parrot' has no attribute {name!r}")
