"""Constrained decoding on llguidance: each constraint compiled once, a matcher per request.

A `Constraint` (JSON schema, JSON object, regex, choice list, Lark grammar) becomes an
llguidance grammar, compiled into a pristine matcher kept in a small LRU cache; every
request gets a cheap copy of it. Before each step the engine asks for the token bitmask of
every constrained row in one call (llguidance fills the rows on its own threads, outside
the GIL); the sampler masks the logits with it, and the engine feeds each sampled token
back to its matcher.
"""
from __future__ import annotations

import functools
import json
from collections import OrderedDict
from typing import Any

import llguidance
import llguidance.hf
import torch

from parrot.engine.sampling_params import Constraint

MAX_CACHED_GRAMMARS = 256
MAX_CHOICES = 256
# JSON laid out as json.dumps does ({"a": 1, "b": [2, 3]}): no free whitespace for a small
# model to wander into; a schema's own "x-guidance" options take precedence.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# For every byte value v, the 8 logit offsets its bits stand for: 0 where bit k is set (the
# token is allowed), -inf where it is clear. A bitmask becomes an additive bias in one gather
# (6x faster here than unpacking to bools and masked_fill).
_BYTE_BIAS = torch.where(((torch.arange(256)[:, None] >> torch.arange(8)) & 1).bool(),
                         0.0, float("-inf"))  # [256, 8] float32


class ConstraintError(ValueError):
    """A constraint that cannot be compiled (bad schema, regex or grammar)."""


class GrammarCompiler:
    """Compiles constraints against one tokenizer and fills their token bitmasks."""

    def __init__(self, tokenizer: Any, vocab_size: int, num_threads: int = 2) -> None:
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size  # the model's logits width (may exceed the tokenizer's)
        self._num_threads = num_threads
        self._cache: OrderedDict[Constraint, llguidance.LLMatcher] = OrderedDict()

    @functools.cached_property
    def _tokenizer(self) -> llguidance.LLTokenizer:  # ~0.4 s for a 49k vocabulary, once
        n_vocab = max(self.vocab_size, len(self._hf_tokenizer))
        return llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab=n_vocab)

    @functools.cached_property
    def _executor(self) -> llguidance.LLExecutor:
        return llguidance.LLExecutor(num_threads=self._num_threads)

    @property
    def mask_width(self) -> int:
        return (self._tokenizer.vocab_size + 31) // 32

    def matcher(self, constraint: Constraint) -> llguidance.LLMatcher:
        """A fresh matcher at the start of `constraint`; ConstraintError if it is invalid."""
        pristine = self._cache.get(constraint)
        if pristine is None:
            pristine = llguidance.LLMatcher(self._tokenizer, grammar_of(constraint))
            if pristine.is_error():
                raise ConstraintError(f"invalid {constraint.kind}: {pristine.get_error()}")
            self._cache[constraint] = pristine
            if len(self._cache) > MAX_CACHED_GRAMMARS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(constraint)
        return pristine.deep_copy()

    def fill_masks(self, matchers: list[llguidance.LLMatcher]) -> torch.Tensor:
        """The next-token bitmask of each matcher: [len(matchers), mask_width] int32."""
        masks = torch.empty(len(matchers), self.mask_width, dtype=torch.int32)
        # What llguidance.torch.fill_next_token_bitmask_par does, without importing that
        # module: it applies torch.compile at import (torch._dynamo and inductor, ~3 s of
        # every server start). `masks` is ours: contiguous int32 rows on the CPU.
        self._executor.unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(matchers)],
                                               masks.data_ptr(), self.mask_width * 4, len(matchers))
        return masks


def grammar_of(constraint: Constraint) -> str:
    """The llguidance grammar (its JSON form) of a constraint."""
    kind, spec = constraint.kind, constraint.spec
    if kind == "json_object":
        return json_grammar({"type": "object"})
    if kind == "json_schema":
        schema = _json(spec, "json_schema")
        if not isinstance(schema, dict):
            raise ConstraintError("invalid json_schema: a schema must be a JSON object")
        return json_grammar(schema)
    if kind == "regex":
        return llguidance.grammar_from("regex", spec)
    if kind == "choice":
        return llguidance.grammar_from("lark", choice_grammar(_choices(spec)))
    return llguidance.grammar_from("lark", spec)


def json_grammar(schema: dict[str, Any]) -> str:
    schema = closed_objects(schema)
    schema = {**schema, "x-guidance": {**JSON_LAYOUT, **schema.get("x-guidance", {})}}
    return llguidance.grammar_from("json_schema", json.dumps(schema))


def closed_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object schema that lists its
    properties and says nothing of others: OpenAI's strict mode and vLLM's default (xgrammar's
    strict mode). Otherwise a small model fills an open object with keys of its own."""
    if isinstance(schema, list):
        return [closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):  # name -> schema
            out[key] = {name: closed_objects(s) for name, s in value.items()}
        elif key in _LITERALS:
            out[key] = value
        else:
            out[key] = closed_objects(value)
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LITERALS = ("enum", "const", "default", "examples", "required")


def choice_grammar(choices: list[str]) -> str:
    """A Lark grammar matching exactly one of `choices` (JSON string escapes are Lark's)."""
    return "start: " + " | ".join(json.dumps(c) for c in choices)


def _choices(spec: str) -> list[str]:
    choices = _json(spec, "choice")
    if not (isinstance(choices, list) and 0 < len(choices) <= MAX_CHOICES
            and all(isinstance(c, str) and c for c in choices)):
        raise ConstraintError(f"invalid choice: give 1 to {MAX_CHOICES} non-empty strings")
    return choices


def _json(spec: str, kind: str) -> Any:
    try:
        return json.loads(spec)
    except json.JSONDecodeError as e:
        raise ConstraintError(f"invalid {kind}: not JSON ({e})") from None


def apply_masks(logits: torch.Tensor, rows: list[int], masks: torch.Tensor) -> None:
    """Set to -inf, in place, every logit of `rows` whose bit in `masks` is clear."""
    # logits: [B, vocab] float32, any device; masks: [len(rows), W] int32 (any device), bit j
    # of word w = token 32w+j
    if not rows:
        return
    vocab, device = logits.shape[1], logits.device
    # Little-endian words: byte b of word w holds tokens 32w + 8b .. 32w + 8b + 7, in order.
    as_bytes = masks.contiguous().view(torch.uint8).reshape(-1).to(device).long()  # [R * 4W]
    bias = _BYTE_BIAS.to(device).index_select(0, as_bytes).view(len(rows), -1)  # [R, 32W]
    if bias.shape[1] < vocab:  # logits wider than the tokenizer: the rest is never allowed
        bias = torch.nn.functional.pad(bias, (0, vocab - bias.shape[1]), value=float("-inf"))
    bias = bias[:, :vocab]
    if len(rows) == logits.shape[0]:  # every row constrained (rows are 0..B-1)
        logits.add_(bias)
    else:
        logits.index_add_(0, torch.tensor(rows, device=device), bias)
