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
    drawn = [i for i, row in enumerate(rows) if row.temperature >= MIN_TEMPERATURE
             and row.top_k != 1]
    if drawn:
        for i, token in zip(drawn, _draw(logits[drawn], [rows[i] for i in drawn])):
            out[i] = token
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


def _draw(logits: torch.Tensor, rows: list[SamplingRow]) -> list[int]:
    """Sample one token per row, all rows at once: temperature, top-k, top-p, then one
    uniform draw per row through the cumulative distribution (a seeded row's from its own
    generator, so its tokens do not depend on what shares the batch). One random number per
    row: noise over the whole vocabulary costs ~0.3 ms a row on a CPU."""
    # logits: [S, vocab], a copy
    logits /= torch.tensor([row.temperature for row in rows])[:, None]
    if any(row.top_k > 0 for row in rows):
        _top_k(logits, [row.top_k for row in rows])
    nucleus = [j for j, row in enumerate(rows) if row.top_p < 1.0]
    if nucleus:
        logits[nucleus] = _top_p(logits[nucleus], [rows[j].top_p for j in nucleus])
    cdf = logits.softmax(-1).double().cumsum_(-1)  # [S, vocab]; float64: 49k terms add up
    u = torch.rand(len(rows), dtype=torch.float64)
    for j, row in enumerate(rows):
        if row.generator is not None:
            u[j] = torch.rand(1, generator=row.generator, dtype=torch.float64)
    target = (u * cdf[:, -1])[:, None]  # scaled by the row's total: rounding never overshoots
    tokens = torch.searchsorted(cdf, target, right=True)  # first token whose cdf exceeds it
    return tokens.clamp_(max=logits.shape[1] - 1).flatten().tolist()


def _top_k(logits: torch.Tensor, ks: list[int]) -> None:
    """Keep, in place, each row's k largest logits (k == 0: all)."""
    # logits: [S, vocab]
    vocab = logits.shape[1]
    k = torch.tensor([min(k, vocab) if k > 0 else vocab for k in ks])
    values = torch.topk(logits, int(k.max())).values  # [S, kmax], descending
    kth = values.gather(1, (k - 1).clamp(max=values.shape[1] - 1)[:, None])  # [S, 1]
    kth[k == vocab] = float("-inf")
    logits.masked_fill_(logits < kth, float("-inf"))


NUCLEUS_CANDIDATES = 256  # tokens sorted per row; a nucleus wider than that sorts it all


def _top_p(logits: torch.Tensor, ps: list[float]) -> torch.Tensor:
    """Each row's smallest set of likeliest tokens whose probability reaches p (always the
    likeliest one); the rest -inf. Sorts only the top candidates of a row unless its nucleus
    is wider than them."""
    # logits: [S, vocab] -> [S, vocab]
    p = torch.tensor(ps)[:, None]
    probs = logits.softmax(-1)
    top = probs.topk(min(NUCLEUS_CANDIDATES, logits.shape[1]))  # sorted, descending
    out = _nucleus(logits, p, top.values, top.indices)
    wide = (top.values.sum(-1) < p[:, 0]).nonzero().flatten().tolist()
    if wide:  # the candidates hold less than p: sort those rows whole
        full = probs[wide].sort(descending=True)
        out[wide] = _nucleus(logits[wide], p[wide], full.values, full.indices)
    return out


def _nucleus(logits: torch.Tensor, p: torch.Tensor, sorted_probs: torch.Tensor,
             order: torch.Tensor) -> torch.Tensor:
    # logits: [S, vocab]; p: [S, 1]; sorted_probs, order: [S, K] -> [S, vocab]
    before = sorted_probs.cumsum(-1) - sorted_probs  # probability of the likelier tokens
    keep = before < p
    keep[:, 0] = True  # a top_p below float32's reach would drop everything
    kept = torch.where(keep, logits.gather(1, order), float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter_(1, order, kept)
