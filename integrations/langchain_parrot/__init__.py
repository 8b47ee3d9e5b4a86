"""LangChain and LangGraph on Parrot: a chat model and an LLM over Parrot's OpenAI-compatible
API, a compiler from LCEL chains to Semantic-Variable programs, and a LangGraph adapter.
See docs/langchain.md."""
from langchain_parrot.chat_models import ChatParrot
from langchain_parrot.llms import ParrotLLM
from langchain_parrot.runnable import ParrotRunnable, compile_chain
from langchain_parrot.transport import ParrotAPIError

__all__ = ["ChatParrot", "ParrotLLM", "ParrotAPIError", "ParrotRunnable", "compile_chain"]
