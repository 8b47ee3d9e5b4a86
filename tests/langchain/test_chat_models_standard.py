"""LangChain's standard integration suite for ChatParrot, against a live Parrot server."""
from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_parrot import ChatParrot

pytestmark = pytest.mark.e2e

# Long enough to fill whole KV blocks, so a repeat of it is served from the prefix cache.
CACHED_PROMPT = "Read this twice. " * 40 + "Now say hello."


class TestChatParrotIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, parrot_url: str) -> None:
        """ChatParrot() finds the shared e2e server through PARROT_BASE_URL."""

    @property
    def chat_model_class(self) -> type[ChatParrot]:
        return ChatParrot

    @property
    def chat_model_params(self) -> dict:
        return {"temperature": 0, "max_tokens": 8}  # short answers keep the suite fast

    # Honest capabilities of a 135M text model behind an OpenAI-style API without tools.
    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False  # a server serves one model

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        model = ChatParrot(**self.chat_model_params)
        model.invoke(CACHED_PROMPT)  # fills the prefix cache
        if not stream:
            return model.invoke(CACHED_PROMPT)
        full = None
        for chunk in model.stream(CACHED_PROMPT):
            full = chunk if full is None else full + chunk
        return full
