"""CUDA graphs for decode steps: the model's forward and logits captured once per
batch-size bucket, replayed for every decode step that fits one.

A decode step of B requests (one new token each, every one sampled, no cascade group)
runs the graph of the smallest bucket >= B: its inputs are copied into the bucket's static
buffers, FlashInfer is planned on the host (`GraphDecodeAttention.plan`, outside the
graph), the graph replays, and the sampler reads the first B rows of the static logits.
The padding rows decode at a scratch KV block no request owns. Every other step (prefill,
mixed, cascade, larger than the largest bucket) runs eagerly. `capture=False` builds the
same buffers and runs the same function without a graph: the CPU tests' path (there is no
graph capture off CUDA), which is also what a replay must equal.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from parrot_kernels import AttentionBatch

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def buckets_up_to(max_batch: int) -> list[int]:
    """The bucket sizes serving 1..max_batch requests (the last one is max_batch itself)."""
    sizes = [b for b in BUCKETS if b < max_batch]
    return sizes + [max_batch]


class DecodeGraph:
    """One bucket: static ids / positions, the attention over fixed buffers, the graph."""

    def __init__(self, size: int, attention: Any, device: torch.device) -> None:
        self.size = size
        self.attention = attention
        self.ids = torch.zeros(size, dtype=torch.long, device=device)
        self.positions = torch.zeros(size, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # [size, vocab] float32, the graph's output


class DecodeGraphs:
    """The decode graphs of one model and KV pool. `attention_for(size)` makes a bucket's
    attention (`GraphDecodeAttention` on CUDA); `forward(ids, positions, attention)` is the
    model's forward + logits."""

    def __init__(self, forward: Callable, attention_for: Callable[[int], Any], max_batch: int,
                 device: torch.device | str, capture: bool = True) -> None:
        self.device = torch.device(device)
        self.forward = forward
        self.capture_graphs = capture
        self.graphs = [DecodeGraph(size, attention_for(size), self.device) for size in buckets_up_to(max_batch)]
        self.replays = 0

    @property
    def max_batch(self) -> int:
        return self.graphs[-1].size

    @torch.inference_mode()
    def capture(self) -> float:
        """Capture every bucket, largest first, in one memory pool; returns the seconds."""
        if not self.capture_graphs:
            return 0.0
        start = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        for g in reversed(self.graphs):
            g.attention.plan(AttentionBatch([], [], []))  # every row is padding
            self.forward(g.ids, g.positions, g.attention)  # warm-up: kernels loaded, workspaces sized
            torch.cuda.synchronize(self.device)
            g.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g.graph, pool=pool):
                g.logits = self.forward(g.ids, g.positions, g.attention)
        torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        log.info("captured %d decode CUDA graphs (batch sizes %s) in %.1fs",
                 len(self.graphs), [g.size for g in self.graphs], seconds)
        return seconds

    def bucket(self, batch_size: int) -> DecodeGraph | None:
        return next((g for g in self.graphs if g.size >= batch_size), None)

    def serves(self, attn: AttentionBatch, sample_rows: list[int]) -> bool:
        """A decode-only step of at most `max_batch` requests, every one sampled."""
        n = len(attn.q_lens)
        return 0 < n <= self.max_batch and all(q == 1 for q in attn.q_lens) and sample_rows == list(range(n))

    @torch.inference_mode()
    def run(self, input_ids: list[int], positions: list[int], attn: AttentionBatch) -> torch.Tensor:
        """The step's logits [B, vocab] (a view of the bucket's static output)."""
        g = self.bucket(len(input_ids))
        pad = g.size - len(input_ids)
        host = torch.tensor([input_ids + [0] * pad, positions + [0] * pad], dtype=torch.long,
                            pin_memory=self.device.type == "cuda")
        g.ids.copy_(host[0], non_blocking=True)
        g.positions.copy_(host[1], non_blocking=True)
        g.attention.plan(attn)
        if g.graph is not None:
            g.graph.replay()
        else:
            g.logits = self.forward(g.ids, g.positions, g.attention)
        self.replays += 1
        return g.logits[: len(input_ids)]
