"""Per-request generation settings and what a generation step hands back."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, NamedTuple


SEED_MIN, SEED_MAX = -(2 ** 63), 2 ** 64 - 1  # what torch.Generator.manual_seed takes
PENALTIES = ("presence_penalty", "frequency_penalty", "repetition_penalty")
MAX_STOP_STRINGS, MAX_STOP_CHARS, MAX_STOP_TOKEN_IDS = 16, 512, 64  # each token scans them
MAX_LOGPROBS = 20  # top alternatives per token (OpenAI's top_logprobs limit)
MAX_CONSTRAINT_CHARS = 64 * 1024  # a schema, regex, grammar or choice list
MAX_TEMPERATURE = 100.0  # temperature in [0, MAX_TEMPERATURE]; top_p in (0, 1]
MAX_PENALTY = 2.0  # presence/frequency in [-MAX_PENALTY, MAX_PENALTY]; repetition in (0, it]
ConstraintKind = Literal["json_schema", "json_object", "regex", "choice", "grammar"]
CONSTRAINT_KINDS: tuple[str, ...] = ConstraintKind.__args__


@dataclass(frozen=True)
class Constraint:
    """What a generation's text must match; the engine compiles it once (engine/grammar.py).

    `spec` per kind: json_schema, a JSON schema as JSON text; json_object, unused (any JSON
    object); regex, a regular expression over the whole output; choice, a JSON list of the
    allowed strings; grammar, a Lark grammar (llguidance's dialect, `%json` included).
    """

    kind: ConstraintKind
    spec: str = ""

    def validate(self) -> None:
        if self.kind not in CONSTRAINT_KINDS:
            raise ValueError(f"constraint kind must be one of {', '.join(CONSTRAINT_KINDS)}, "
                             f"got {self.kind!r}")
        if not isinstance(self.spec, str) or len(self.spec) > MAX_CONSTRAINT_CHARS:
            raise ValueError(f"constraint {self.kind} must be text of at most "
                             f"{MAX_CONSTRAINT_CHARS} characters")


class Priority(IntEnum):
    """Scheduling class of a request. Lower value is served first."""

    LATENCY = 0  # latency-critical: served first, small per-step token budget
    NORMAL = 1
    THROUGHPUT = 2  # throughput work: fills large batches


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 disables
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    min_tokens: int = 0
    presence_penalty: float = 0.0  # vLLM's penalties: see sampler.Penalties
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # 1 is off
    constraint: Constraint | None = None  # output must match it (grammar-masked sampling)
    logprobs: int | None = None  # None: off; k: each token's logprob and its top k rivals

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if isinstance(self.stop, list):
            self.stop = [s for s in self.stop if s != ""]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field for out-of-range or mistyped values."""
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        for name in ("temperature", "top_p", *PENALTIES):
            if not _is_number(getattr(self, name)):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -MAX_PENALTY <= getattr(self, name) <= MAX_PENALTY:
                raise ValueError(f"{name} must be in [-{MAX_PENALTY:g}, {MAX_PENALTY:g}], "
                                 f"got {getattr(self, name)!r}")
        if not 0.0 < self.repetition_penalty <= MAX_PENALTY:
            raise ValueError(f"repetition_penalty must be in (0, {MAX_PENALTY:g}], "
                             f"got {self.repetition_penalty!r}")
        if not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must be in [0, {MAX_TEMPERATURE:g}], "
                             f"got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        if not _is_int(self.min_tokens) or not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens], got {self.min_tokens!r}")
        if self.seed is not None and not (_is_int(self.seed) and SEED_MIN <= self.seed <= SEED_MAX):
            raise ValueError(f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}], "
                             f"got {self.seed!r}")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) for s in self.stop):
            raise ValueError(f"stop must be a list of strings, got {self.stop!r:.40}")
        if len(self.stop) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in self.stop):
            raise ValueError(f"stop may hold at most {MAX_STOP_STRINGS} strings of at most "
                             f"{MAX_STOP_CHARS} characters")
        if not isinstance(self.stop_token_ids, list) or len(self.stop_token_ids) > \
                MAX_STOP_TOKEN_IDS or not all(_is_int(t) and t >= 0 for t in self.stop_token_ids):
            raise ValueError(f"stop_token_ids must be a list of at most {MAX_STOP_TOKEN_IDS} "
                             "non-negative integers")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be a boolean, got {self.ignore_eos!r}")
        if self.logprobs is not None and not (_is_int(self.logprobs)
                                              and 0 <= self.logprobs <= MAX_LOGPROBS):
            raise ValueError(f"logprobs must be an integer in [0, {MAX_LOGPROBS}], "
                             f"got {self.logprobs!r}")
        if self.constraint is not None:
            if not isinstance(self.constraint, Constraint):
                raise ValueError(f"constraint must be a Constraint, got {self.constraint!r:.40}")
            self.constraint.validate()

    @property
    def is_greedy(self) -> bool:
        return self.temperature < 1e-5 or self.top_k == 1  # as the sampler decides

    @property
    def has_penalties(self) -> bool:
        return (self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
                or self.repetition_penalty != 1.0)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TokenLogprobs(NamedTuple):
    """A sampled token's log-probability under the model (before penalties, masks and
    temperature, as vLLM reports by default) and its `k` likeliest alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, logprob), likeliest first


class GenerationChunk(NamedTuple):
    """One piece of a streamed generation.

    `text` is the new text since the previous chunk (never a broken UTF-8
    character, never part of a stop string). The last chunk has `finish_reason`
    set ("stop" or "length") and carries the request's usage. `logprobs` holds one
    entry per token of `token_ids` when the request asked for them.
    """

    token_ids: list[int]
    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    logprobs: list[TokenLogprobs] | None = None


class Usage(NamedTuple):
    prompt_tokens: int  # tokens of the context when generation started
    cached_tokens: int  # of those, served from the prefix cache / a fork (not recomputed)
    completion_tokens: int
