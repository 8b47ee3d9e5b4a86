"""Turn last-position logits into next tokens: grammar masks, penalties, greedy,
temperature, top-k/p, seeds; and the log-probabilities a request asked for.

Everything over [B, vocab] runs on the logits' device (a GPU's, when serving there); the
host receives only what it needs, the [B] token ids and the asked-for logprobs, in one
copy. The one random number per drawn row comes from the host (a seeded request's own
CPU generator), so a seed draws the same tokens whatever the device or the batch."""
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
    """One token per row, on `logits`' device (modified in place); see the module docstring."""
    # logits: [B, vocab] float32, on any device -> one token id per row, on the host
    logprob_rows = [i for i, row in enumerate(rows) if row.logprobs is not None]
    raw = logits[logprob_rows].log_softmax(-1) if logprob_rows else None  # [L, vocab]
    masked = [i for i, row in enumerate(rows) if row.allowed is not None]
    if masked:
        apply_masks(logits, masked, torch.stack([rows[i].allowed for i in masked]))
    for i, row in enumerate(rows):
        if row.banned_token_ids:
            logits[i, row.banned_token_ids] = float("-inf")
    apply_penalties(logits, rows)  # greedy rows too, as in vLLM
    tokens = logits.argmax(dim=-1)  # [B]
    drawn = [i for i, row in enumerate(rows) if row.temperature >= MIN_TEMPERATURE
             and row.top_k != 1]
    if drawn:
        tokens[drawn] = _draw(logits[drawn], [rows[i] for i in drawn])
    return _to_host(tokens, raw, [(i, rows[i].logprobs) for i in logprob_rows])


def _to_host(tokens: torch.Tensor, raw: torch.Tensor | None, logprob_rows: list[tuple[int, int]]) -> Sampled:
    """The tokens and, per (row, k) in `logprob_rows`, its token's logprob and the k likeliest
    rivals, copied to the host in one transfer (as float64: ids below 2**53 stay exact)."""
    # tokens: [B] long; raw: [L, vocab] log-softmax of the logprob rows' raw logits
    parts = [tokens.double()]
    if logprob_rows:
        index = torch.tensor([i for i, _ in logprob_rows], device=tokens.device)
        parts.append(raw.gather(1, tokens[index][:, None]).flatten().double())  # [L]
        for j, (_, k) in enumerate(logprob_rows):
            if k:
                top = torch.topk(raw[j], k)
                parts += [top.indices.double(), top.values.double()]
    host = torch.cat(parts).tolist()
    out, host = [int(t) for t in host[: len(tokens)]], host[len(tokens):]
    chosen, host = host[: len(logprob_rows)], host[len(logprob_rows):]
    logprobs: list[TokenLogprobs | None] = [None] * len(out)
    for (i, k), logprob in zip(logprob_rows, chosen):
        ids, values, host = host[:k], host[k: 2 * k], host[2 * k:]
        logprobs[i] = TokenLogprobs(out[i], logprob, [(int(t), v) for t, v in zip(ids, values)])
    return Sampled(out, logprobs)


def apply_penalties(logits: torch.Tensor, rows: list[SamplingRow]) -> None:
    """Penalize `logits` in place, in vLLM's order: repetition over prompt and output
    tokens, then frequency, then presence over output tokens. Rows without penalties are
    not touched."""
    # logits: [B, vocab]
    idx = [i for i, row in enumerate(rows) if row.penalties is not None]
    if not idx:
        return
    pens = [rows[i].penalties for i in idx]
    vocab, device = logits.shape[1], logits.device
    sub = logits[idx]  # [P, vocab], a copy
    counts = _bin_counts([p.output_token_ids for p in pens], vocab, device)  # [P, vocab]
    # 5e-324 is 0 in float32 (then -inf * 0): at least float32's smallest normal
    tiny = torch.finfo(torch.float32).tiny
    if any(max(p.repetition, tiny) != 1.0 for p in pens):
        repetition = torch.tensor([max(p.repetition, tiny) for p in pens], device=device)[:, None]  # [P, 1]
        seen = (_bin_counts([p.prompt_token_ids for p in pens], vocab, device) > 0) | (counts > 0)
        repetition = torch.where(seen, repetition, 1.0)  # [P, vocab]
        sub = torch.where(sub > 0, sub / repetition, sub * repetition)
        sub.clamp_(max=MAX_PENALIZED_LOGIT)
    sub -= torch.tensor([p.frequency for p in pens], device=device)[:, None] * counts
    sub -= torch.tensor([p.presence for p in pens], device=device)[:, None] * (counts > 0)
    logits[idx] = sub


def _bin_counts(token_lists: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    # -> [len(token_lists), vocab] float32 on `device`: how often each token occurs in each list
    ids = pad_sequence([torch.tensor(t, dtype=torch.long) for t in token_lists],
                       batch_first=True, padding_value=vocab).to(device)  # vocab: a spare column
    counts = torch.zeros(len(token_lists), vocab + 1, device=device)
    counts.scatter_add_(1, ids, torch.ones(ids.shape, device=device))
    return counts[:, :vocab]


def _draw(logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
    """Sample one token per row, all rows at once: temperature, top-k, top-p, then one
    uniform draw per row through the cumulative distribution (a seeded row's from its own
    generator, so its tokens do not depend on what shares the batch). One random number per
    row: noise over the whole vocabulary costs ~0.3 ms a row on a CPU."""
    # logits: [S, vocab], a copy -> [S] long token ids, on logits' device
    logits /= torch.tensor([row.temperature for row in rows], device=logits.device)[:, None]
    if any(row.top_k > 0 for row in rows):
        _top_k(logits, [row.top_k for row in rows])
    nucleus = [j for j, row in enumerate(rows) if row.top_p < 1.0]
    if nucleus:
        logits[nucleus] = _top_p(logits[nucleus], [rows[j].top_p for j in nucleus])
    cdf = logits.softmax(-1).double().cumsum_(-1)  # [S, vocab]; float64: 49k terms add up
    u = torch.rand(len(rows), dtype=torch.float64)  # on the host, like the generators
    for j, row in enumerate(rows):
        if row.generator is not None:
            u[j] = torch.rand(1, generator=row.generator, dtype=torch.float64)
    target = (u.to(logits.device) * cdf[:, -1])[:, None]  # scaled by the row's total: rounding never overshoots
    tokens = torch.searchsorted(cdf, target, right=True)  # first token whose cdf exceeds it
    return tokens.clamp_(max=logits.shape[1] - 1).flatten()


def _top_k(logits: torch.Tensor, ks: list[int]) -> None:
    """Keep, in place, each row's k largest logits (k == 0: all)."""
    # logits: [S, vocab]
    vocab = logits.shape[1]
    kept = [min(k, vocab) if k > 0 else vocab for k in ks]
    values = torch.topk(logits, max(kept)).values  # [S, kmax], descending
    k = torch.tensor(kept, device=logits.device)[:, None]  # [S, 1]
    kth = torch.where(k == vocab, float("-inf"), values.gather(1, k - 1))  # [S, 1]; k == vocab keeps all
    logits.masked_fill_(logits < kth, float("-inf"))


NUCLEUS_CANDIDATES = 256  # tokens sorted per row; a nucleus wider than that sorts it all


def _top_p(logits: torch.Tensor, ps: list[float]) -> torch.Tensor:
    """Each row's smallest set of likeliest tokens whose probability reaches p (always the
    likeliest one); the rest -inf. Sorts only the top candidates of a row unless its nucleus
    is wider than them."""
    # logits: [S, vocab] -> [S, vocab]
    p = torch.tensor(ps, device=logits.device)[:, None]
    probs = logits.softmax(-1)
    top = probs.topk(min(NUCLEUS_CANDIDATES, logits.shape[1]))  # sorted, descending
    out = _nucleus(logits, p, top.values, top.indices)
    wide = (top.values.sum(-1) < p[:, 0]).nonzero().flatten().tolist()  # [<= S] to the host
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
