"""Sampling on the logits' device, exercised on CPU tensors: the same tokens and logprobs
as the host sampler it replaced (values recorded from it), and nothing of [B, vocab] size
read back to the host, in the sampler or in the runner's step."""
from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from parrot.engine.sampler import Penalties, SamplingRow, sample

VOCAB = 1000
# Every way a host reads a tensor's values (on a GPU each is a device-to-host copy).
HOST_READS = {torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.cpu, torch.Tensor.numpy,
              torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__}


class HostReads(TorchFunctionMode):
    """Records the size of every tensor whose values the host reads. (A `.to("cpu")` would
    read too, but on CPU tensors it cannot be told from moving host data to the device;
    the sampler and runner read only through the calls above.)"""

    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.sizes.append(args[0].numel())
        return func(*args, **(kwargs or {}))


def golden_batch() -> tuple[torch.Tensor, list[SamplingRow]]:
    """Logits and one row of each kind the sampler handles; drawn rows seeded."""
    logits = torch.randn(9, VOCAB, generator=torch.Generator().manual_seed(7)) * 3
    allowed = torch.zeros(VOCAB // 32 + 1, dtype=torch.int32)
    allowed[:4] = -1  # tokens 0..127
    seeded = [torch.Generator().manual_seed(s) for s in range(7)]
    rows = [
        SamplingRow(0.0, 0, 1.0, None, []),  # greedy
        SamplingRow(0.0, 0, 1.0, None, [int(logits[1].argmax())]),  # greedy, its argmax banned
        SamplingRow(0.7, 0, 1.0, seeded[0], []),  # temperature
        SamplingRow(1.0, 5, 1.0, seeded[1], []),  # top-k
        SamplingRow(1.0, 0, 0.9, seeded[2], []),  # top-p
        SamplingRow(0.9, 40, 0.8, seeded[3], [], Penalties(0.5, 0.25, 1.3, [1, 2, 3], [4, 4, 5])),
        SamplingRow(1.0, 0, 1.0, seeded[4], [], allowed=allowed),  # grammar mask
        SamplingRow(0.0, 0, 1.0, None, [], logprobs=3),  # greedy, logprob and 3 rivals
        SamplingRow(1.2, 0, 0.95, seeded[5], [], logprobs=0),  # drawn, its logprob only
    ]
    return logits, rows


# What the host sampler (before sampling moved to the device) returned for golden_batch().
GOLDEN_TOKENS = [405, 82, 953, 52, 600, 47, 72, 596, 766]
GOLDEN_LOGPROBS = [None] * 7 + [
    (596, -1.5550369024276733, [(596, -1.5550369024276733), (309, -2.965416431427002), (592, -2.983463764190674)]),
    (766, -4.319054126739502, []),
]


def test_device_sampler_returns_what_the_host_sampler_did():
    logits, rows = golden_batch()
    got = sample(logits, rows)
    assert got.tokens == GOLDEN_TOKENS
    # logprobs to float rounding: torch's log_softmax differs in the last bits by CPU (AVX2 / AVX-512)
    assert [lp and (lp.token_id, pytest.approx(lp.logprob, rel=1e-5), [(t, pytest.approx(v, rel=1e-5)) for t, v in lp.top])
            for lp in got.logprobs] == GOLDEN_LOGPROBS


def test_sampler_reads_back_only_per_row_values():
    """The host reads the [B] tokens and the logprob rows' few values, never [B, vocab]."""
    logits, rows = golden_batch()
    with HostReads() as reads:
        sample(logits, rows)
    assert reads.sizes and max(reads.sizes) < VOCAB, reads.sizes
