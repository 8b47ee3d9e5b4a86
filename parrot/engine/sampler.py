"""Turn last-position logits into next tokens: grammar masks, penalties, greedy,
temperature, top-k/p, seeds; and the log-probabilities a request asked for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence

from parrot.engine.grammar import apply_masks
from parrot.engine.sampling_params import SamplingParams, TokenLogprobs

MIN_TEMPERATURE = 1e-5  # below it sampling is greedy: logits / t would overflow to inf
MAX_PENALIZED_LOGIT = 1e30  # a tiny repetition_penalty may not overflow a logit to inf (NaN probs)


class Penalties(NamedTuple):
    """vLLM's penalties of one row, and the tokens they count."""

    presence: float  # subtracted once from every token in the output
    frequency: float  # subtracted once per occurrence in the output
    repetition: float  # divides positive, multiplies negative logits of prompt and output tokens
    prompt_token_ids: list[int]  # empty when repetition is 1 (nothing reads them)
    output_token_ids: list[int]

    @classmethod
    def of(cls, sp: SamplingParams, token_ids: list[int],
           num_prompt_tokens: int) -> Penalties | None:
        """The penalties of `sp` over a context whose first `num_prompt_tokens` are the prompt
        and the rest generated; None when none applies (the row then costs nothing)."""
        if not sp.has_penalties:
            return None
        prompt = token_ids[:num_prompt_tokens] if sp.repetition_penalty != 1.0 else []
        return cls(sp.presence_penalty, sp.frequency_penalty, sp.repetition_penalty,
                   prompt, token_ids[num_prompt_tokens:])


@dataclass
class SamplingRow:
    """What the sampler needs for one sequence in one step."""

    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator | None  # per-request, seeded: same seed, same output
    banned_token_ids: list[int]  # e.g. EOS before min_tokens
    penalties: Penalties | None = None
    allowed: torch.Tensor | None = None  # [vocab/32] int32 grammar bitmask (engine/grammar.py)
    logprobs: int | None = None  # report the token's logprob and this many top rivals


class Sampled(NamedTuple):
    tokens: list[int]  # one per row
    logprobs: list[TokenLogprobs | None]  # one per row; None where the row asked for none


def sample(logits: torch.Tensor, rows: list[SamplingRow]) -> Sampled:
    # logits: [B, vocab] float32 -> one token id per row
    logprob_rows = [i for i, row in enumerate(rows) if row.logprobs is not None]
    raw = logits[logprob_rows].log_softmax(-1) if logprob_rows else None  # [L, vocab]
    masked = [i for i, row in enumerate(rows) if row.allowed is not None]
    if masked:
        apply_masks(logits, masked, torch.stack([rows[i].allowed for i in masked]))
    for i, row in enumerate(rows):
        if row.banned_token_ids:
            logits[i, row.banned_token_ids] = float("-inf")
    apply_penalties(logits, rows)  # greedy rows too, as in vLLM
    out = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        if row.temperature >= MIN_TEMPERATURE and row.top_k != 1:
            out[i] = _sample_row(logits[i], row)
    logprobs: list[TokenLogprobs | None] = [None] * len(rows)
    for j, i in enumerate(logprob_rows):
        logprobs[i] = _token_logprobs(raw[j], out[i], rows[i].logprobs)
    return Sampled(out, logprobs)


def _token_logprobs(logprobs: torch.Tensor, token: int, k: int) -> TokenLogprobs:
    # logprobs: [vocab]
    top = torch.topk(logprobs, k) if k else None
    pairs = [] if top is None else list(zip(top.indices.tolist(), top.values.tolist()))
    return TokenLogprobs(token, float(logprobs[token]), pairs)


def apply_penalties(logits: torch.Tensor, rows: list[SamplingRow]) -> None:
    """Penalize `logits` in place, in vLLM's order: repetition over prompt and output
    tokens, then frequency, then presence over output tokens. Rows without penalties are
    not touched."""
    # logits: [B, vocab]
    idx = [i for i, row in enumerate(rows) if row.penalties is not None]
    if not idx:
        return
    pens = [rows[i].penalties for i in idx]
    vocab = logits.shape[1]
    sub = logits[idx]  # [P, vocab], a copy
    counts = _bin_counts([p.output_token_ids for p in pens], vocab)  # [P, vocab]
    repetition = torch.tensor([p.repetition for p in pens])[:, None]  # [P, 1]
    repetition.clamp_(min=torch.finfo(torch.float32).tiny)  # 5e-324 is 0 in float32: -inf * 0
    if (repetition != 1.0).any():
        seen = (_bin_counts([p.prompt_token_ids for p in pens], vocab) > 0) | (counts > 0)
        repetition = torch.where(seen, repetition, 1.0)  # [P, vocab]
        sub = torch.where(sub > 0, sub / repetition, sub * repetition)
        sub.clamp_(max=MAX_PENALIZED_LOGIT)
    sub -= torch.tensor([p.frequency for p in pens])[:, None] * counts
    sub -= torch.tensor([p.presence for p in pens])[:, None] * (counts > 0)
    logits[idx] = sub


def _bin_counts(token_lists: list[list[int]], vocab: int) -> torch.Tensor:
    # -> [len(token_lists), vocab] float32: how often each token occurs in each list
    ids = pad_sequence([torch.tensor(t, dtype=torch.long) for t in token_lists],
                       batch_first=True, padding_value=vocab)  # vocab: a spare column
    counts = torch.zeros(len(token_lists), vocab + 1)
    counts.scatter_add_(1, ids, torch.ones(ids.shape))
    return counts[:, :vocab]


def _sample_row(logits: torch.Tensor, row: SamplingRow) -> int:
    # logits: [vocab]
    logits = logits / row.temperature
    if row.top_k > 0:
        kth = torch.topk(logits, min(row.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if row.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= row.top_p  # keep the smallest set reaching top_p
        drop[0] = False  # and always the likeliest token (a top_p below float32's reach drops all)
        logits = logits.index_put((order[drop],), torch.tensor(float("-inf")))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=row.generator).item())
