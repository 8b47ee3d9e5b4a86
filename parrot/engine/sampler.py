"""Turn last-position logits into next tokens: greedy, temperature, top-k, top-p, seeds."""
from __future__ import annotations

from dataclasses import dataclass

import torch


MIN_TEMPERATURE = 1e-5  # below it sampling is greedy: logits / t would overflow to inf


@dataclass
class SamplingRow:
    """What the sampler needs for one sequence in one step."""

    temperature: float
    top_k: int
    top_p: float
    generator: torch.Generator | None  # per-request, seeded: same seed, same output
    banned_token_ids: list[int]  # e.g. EOS before min_tokens


def sample(logits: torch.Tensor, rows: list[SamplingRow]) -> list[int]:
    # logits: [B, vocab] float32 -> one token id per row
    for i, row in enumerate(rows):
        if row.banned_token_ids:
            logits[i, row.banned_token_ids] = float("-inf")
    out = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        if row.temperature >= MIN_TEMPERATURE and row.top_k != 1:
            out[i] = _sample_row(logits[i], row)
    return out


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
