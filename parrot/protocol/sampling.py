"""The native API's names for an output's settings: its `sampling` keys and its constraints.

The client sends these (`P.Output.to_json`, `constraint_json`); the server reads them into the
engine's `SamplingParams` and `Constraint` (manager/call_spec.py, constraint_spec.py), which
accept every sampling name here (tests/program/test_output_vocabulary.py checks it) and a few
more that only the OpenAI API exposes (`logprobs`) or only the server spells (`json_object`,
`grammar`).
"""
from __future__ import annotations

SAMPLING_FIELDS: tuple[str, ...] = (
    "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stop_token_ids",
    "ignore_eos", "min_tokens", "presence_penalty", "frequency_penalty", "repetition_penalty",
)
CONSTRAINT_FIELDS: tuple[str, ...] = ("json_schema", "regex", "choices")
