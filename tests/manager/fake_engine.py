"""A small in-process stand-in for `parrot.engine.Engine`, for UNIT tests only.

It keeps the engine contract (`parrot/engine/client.py`): contexts are int ids. One
character is one token. Generation is a pure function of the context's tokens (so a
fork and a fresh context give the same text, like a greedy model). It records every fill
and generate with timestamps, counts prefilled tokens, and tracks live contexts so tests can
check that everything is freed. Real-engine behaviour is covered by the e2e tests.

Constraints: `compile` refuses a bad regex or schema like `Engine.compile` (a ValueError), and a
constrained generation yields a canned matching text: the first choice, or the schema's first
`examples` entry as JSON (`{}` without one); it then ends with finish_reason "stop". The
tokenizer carries a ChatML chat template (rendered with jinja2), for role blocks.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass, field

import jinja2

from parrot.engine.config import EngineConfig
from parrot.engine.engine import EngineInputError
from parrot.engine.sampling_params import Constraint, GenerationChunk, SamplingParams, Usage
from parrot.engine.status import ContextStatus, EngineStatus

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_ids = itertools.count(1)


class CharTokenizer:
    eos_token_id = 0
    chat_template = CHATML
    SIZE = 0x110000  # every code point

    def __len__(self) -> int:
        return self.SIZE

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        assert not tokenize
        return jinja2.Template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


@dataclass(eq=False)
class FakeContext:
    token_ids: list[int] = field(default_factory=list)
    id: int = field(default_factory=lambda: next(_ids))
    is_freed: bool = False
    is_busy: bool = False

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class FakeStats:
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0
    num_cached_tokens: int = 0
    num_used_blocks: int = 0
    num_running: int = 0


class FakeEngine:
    def __init__(self, step_s: float = 0.002, max_model_len: int = 4096,
                 vocab_size: int = CharTokenizer.SIZE) -> None:
        self.tokenizer = CharTokenizer()
        self.model_name = "fake"
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size  # like a model's, it may differ from len(tokenizer)
        self.step_s = step_s
        self.live: dict[int, FakeContext] = {}
        self.groups: dict[int, str | None] = {}  # ctx id -> the task group its generate named
        self.pinned: set[int] = set()  # ids pin() was called on (kept after free, for tests)
        self.log: list[tuple] = []  # (what, ctx id, n tokens, priority, time)
        self.counters = FakeStats()
        self.step_observers: list = []  # like Engine's; the fake has no steps to report
        self.name, self.is_alive, self.error = "fake engine", True, None
        self.config = EngineConfig(enable_prefix_caching=False)  # it has no prefix cache

    def new_context(self) -> int:
        ctx = FakeContext()
        self.live[ctx.id] = ctx
        return ctx.id

    def fork(self, parent_id: int) -> int:
        parent = self.live[parent_id]
        assert not parent.is_freed and not parent.is_busy, "fork of a freed or busy context"
        child = FakeContext(list(parent.token_ids))
        self.live[child.id] = child
        self.counters.num_cached_tokens += len(parent.token_ids)
        return child.id

    def append(self, ctx_id: int, token_ids: list[int]) -> None:
        ctx = self.live[ctx_id]
        """Like Engine.append: the tokens count as prefilled by the next generate."""
        self._check_len(ctx, len(token_ids))
        self._check_ids(token_ids)
        self.log.append(("append", ctx.id, len(token_ids), 0, time.time()))
        ctx.token_ids += token_ids
        self.counters.num_prefill_tokens += len(token_ids)

    async def fill(self, ctx_id: int, token_ids: list[int], priority=1) -> None:
        ctx = self.live[ctx_id]
        self._check_len(ctx, len(token_ids))
        self._check_ids(token_ids)
        self.log.append(("fill", ctx.id, len(token_ids), int(priority), time.time()))
        ctx.is_busy = True
        try:
            await asyncio.sleep(self.step_s)
        finally:
            ctx.is_busy = False
        ctx.token_ids += token_ids
        self.counters.num_prefill_tokens += len(token_ids)

    def compile(self, sampling: SamplingParams) -> Constraint | None:
        """Like Engine.compile: a ValueError naming what is wrong with a bad constraint."""
        c = sampling.constraint
        if c is not None and c.kind == "regex":
            try:
                re.compile(c.spec)
            except re.error as e:
                raise ValueError(f"invalid regex: {e}") from None
        elif c is not None and c.kind in ("json_schema", "choice"):
            json.loads(c.spec)
        return c

    async def generate(self, ctx_id: int, sampling: SamplingParams, priority=1, group=None):
        ctx = self.live[ctx_id]
        self._check_len(ctx, sampling.max_tokens)
        self.log.append(("generate", ctx.id, len(ctx.token_ids), int(priority), time.time()))
        self.groups[ctx.id] = group
        prompt = len(ctx.token_ids)
        canned = self.constrained_text(sampling.constraint)
        text = canned if canned is not None else self.expected(ctx.token_ids, sampling.max_tokens)
        for i, ch in enumerate(text):
            await asyncio.sleep(self.step_s)
            ctx.token_ids.append(ord(ch))
            self.counters.num_decode_tokens += 1
            last = i == len(text) - 1
            usage = Usage(prompt, 0, len(text)) if last else None
            finish = None if not last else "length" if canned is None else "stop"
            yield GenerationChunk([ord(ch)], ch, finish, usage)

    @staticmethod
    def constrained_text(constraint: Constraint | None) -> str | None:
        if constraint is None or constraint.kind not in ("choice", "json_schema"):
            return None
        spec = json.loads(constraint.spec)
        if constraint.kind == "choice":
            return spec[0]
        return json.dumps(spec["examples"][0]) if spec.get("examples") else "{}"

    def pin(self, ctx_id: int) -> None:
        assert ctx_id in self.live, "pin of an unknown or freed context"
        self.pinned.add(ctx_id)

    def free(self, ctx_id: int) -> None:
        ctx = self.live.get(ctx_id)
        assert ctx is not None and not ctx.is_freed, "double free"
        ctx.is_freed = True
        self.live.pop(ctx.id, None)

    def stats(self) -> FakeStats:
        return FakeStats(self.counters.num_prefill_tokens, self.counters.num_decode_tokens,
                         self.counters.num_cached_tokens, len(self.live), 0)

    def status(self) -> EngineStatus:
        """Blocks as a 16-token paged engine would hold them; a busy context is computing."""
        return EngineStatus(16, {c.id: ContextStatus(c.num_tokens, c.num_tokens,
                                                     -(-c.num_tokens // 16), c.is_busy)
                                 for c in self.live.values()})

    def check_integrity(self) -> None:
        assert all(not c.is_freed for c in self.live.values())

    @staticmethod
    def expected(token_ids: list[int], max_tokens: int) -> str:
        """What `generate` yields after `token_ids` (greedy-like: a function of the prompt)."""
        digest = hashlib.sha1(bytes(str(token_ids), "utf-8")).hexdigest()
        return (" " + digest)[:max_tokens]

    def alone(self, prompt: str, max_tokens: int) -> str:
        return self.expected(self.tokenizer.encode(prompt), max_tokens)

    def _check_ids(self, token_ids: list[int]) -> None:
        """Like Engine: an id outside the model's vocabulary is refused."""
        bad = next((t for t in token_ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise EngineInputError(f"token id {bad} is outside the vocabulary "
                                   f"(size {self.vocab_size})")

    def _check_len(self, ctx: FakeContext, extra: int) -> None:
        if ctx.num_tokens + extra > self.max_model_len:
            raise ValueError(f"context of {ctx.num_tokens + extra} tokens exceeds "
                             f"max_model_len {self.max_model_len}")
