"""Settings shared by `ChatParrot` and `ParrotLLM`: where the server is, how to sample."""
from __future__ import annotations

from typing import Any

from langchain_core.utils import from_env, secret_from_env
from pydantic import BaseModel, Field, SecretStr

from langchain_parrot.transport import Endpoint

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
OPENAI_DEFAULT_TEMPERATURE = 1.0  # what the server applies when a request names none
PENALTY_KEYS = ("presence_penalty", "frequency_penalty", "repetition_penalty")
SAMPLING_KEYS = ("temperature", "max_tokens", "top_p", "seed", *PENALTY_KEYS)


class ParrotClientParams(BaseModel):
    """Connection and sampling settings; every unset sampling field is the server's default."""

    model: str | None = None
    """Served model name; None: whatever the server serves."""
    base_url: str = Field(default_factory=from_env("PARROT_BASE_URL", default=DEFAULT_BASE_URL))
    """Root URL of the Parrot server (env `PARROT_BASE_URL`)."""
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("PARROT_API_KEY", default=None))
    """The server's `--api-key`, if it has one (env `PARROT_API_KEY`)."""
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    """Subtracted from the logit of every token already generated (vLLM / OpenAI semantics)."""
    frequency_penalty: float | None = None
    """Subtracted once per earlier occurrence in the output."""
    repetition_penalty: float | None = None
    """vLLM's: divides positive (multiplies negative) logits of prompt and output tokens."""
    stop: list[str] | None = None
    """Stop strings (not included in the output); a call's `stop` replaces them."""
    timeout: float | None = None
    """Seconds to wait for the server to connect or send the next bytes; None: no limit."""
    max_retries: int = 2
    """Retries of a request that could not start (connection refused, 429, 5xx)."""

    def _endpoint(self) -> Endpoint:
        key = self.api_key.get_secret_value() if self.api_key else None
        return Endpoint(self.base_url, key, self.timeout, self.max_retries)

    def _request_body(self, stop: list[str] | None, **kwargs: Any) -> dict[str, Any]:
        """The OpenAI request fields for one call: settings, then the call's overrides."""
        body: dict[str, Any] = {k: getattr(self, k) for k in ("model", *SAMPLING_KEYS)}
        body["stop"] = self.stop if stop is None else stop
        body.update(kwargs)
        body = {k: v for k, v in body.items() if v is not None and v != []}
        body.update(stream=True, stream_options={"include_usage": True})
        return body

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, "stop": self.stop,
                **{k: getattr(self, k) for k in SAMPLING_KEYS}}

    def _ls_model_name(self, **kwargs: Any) -> str:
        model = kwargs.get("model")
        return model if isinstance(model, str) else self.model or "parrot-default"
