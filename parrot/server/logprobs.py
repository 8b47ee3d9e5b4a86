"""OpenAI's logprobs shapes, from the engine's per-token log-probabilities."""
from __future__ import annotations

import functools
from typing import Any

from parrot.engine.sampling_params import TokenLogprobs

MIN_LOGPROB = -9999.0  # JSON has no -inf; vLLM reports the same floor


class LogprobsRenderer:
    """Renders token logprobs with one tokenizer's token texts."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.token_text = functools.lru_cache(maxsize=65536)(self._decode)

    def _decode(self, token_id: int) -> str:
        return self._tokenizer.decode([token_id])

    def chat(self, logprobs: list[TokenLogprobs]) -> dict[str, Any]:
        """`choices[i].logprobs` of the chat API: {"content": [one entry per token]}."""
        return {"content": [{**self._entry(lp.token_id, lp.logprob), "top_logprobs": [
            self._entry(t, v) for t, v in lp.top]} for lp in logprobs]}

    def completion(self, logprobs: list[TokenLogprobs], offset: int) -> dict[str, Any]:
        """`choices[i].logprobs` of the completions API; `offset`: characters before them."""
        tokens = [self.token_text(lp.token_id) for lp in logprobs]
        offsets = []
        for text in tokens:
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens,
                "token_logprobs": [_floor(lp.logprob) for lp in logprobs],
                "top_logprobs": [{self.token_text(t): _floor(v) for t, v in lp.top}
                                 for lp in logprobs],
                "text_offset": offsets}

    def _entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.token_text(token_id)
        return {"token": text, "logprob": _floor(logprob), "bytes": list(text.encode())}


def _floor(logprob: float) -> float:
    return max(logprob, MIN_LOGPROB)
