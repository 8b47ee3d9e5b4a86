"""Sampling settings of one output of a semantic function (client side, no engine import)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop",
                   "stop_token_ids", "ignore_eos", "min_tokens", "presence_penalty",
                   "frequency_penalty", "repetition_penalty")


@dataclass(frozen=True)
class Output:
    """Per-output sampling settings; a field left None falls back to the function's default.

    Used two ways: the decorator's keyword arguments (`max_tokens=32, stop=["\\n"]`) form the
    default for every output, and `outputs={"name": P.Output(...)}` overrides fields for one
    output. The server validates the merged values (ValueError naming the field -> HTTP 400).
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool | None = None
    min_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", [self.stop])
        if self.max_tokens is not None and (
                isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int)
                or self.max_tokens < 1):
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")

    def over(self, base: "Output") -> "Output":
        """These settings, with every unset field taken from `base`."""
        merged = {f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                  else getattr(base, f.name) for f in fields(self)}
        return Output(**merged)

    def to_json(self) -> dict:
        """The set fields only, as the native API's `sampling` object."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if v is not None}
