"""Decode graphs on CPU: the buckets, which steps a graph serves, and a bucket's padded run
(static buffers, FlashInfer planned in CUDA-graph mode, padding at the scratch block)
against the eager step, through the FlashInfer stand-in and without capture (no graphs
off CUDA); the replay itself is checked on a GPU (test_model_gpu.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from parrot.engine.cuda_graphs import DecodeGraphs, buckets_up_to
from parrot.engine.weights import load_hf_config, load_model
from parrot_kernels import AttentionBatch, TorchAttentionBackend, flashinfer_backend

from .conftest import make_tiny_model

BLOCK = 4
NUM_BLOCKS = 12  # + 1 scratch block at index NUM_BLOCKS


@pytest.fixture
def fake_flashinfer(monkeypatch):
    """`import flashinfer` gives the CPU stand-in (tests/kernels/fake_flashinfer.py)."""
    path = Path(__file__).parents[1] / "kernels" / "fake_flashinfer.py"
    spec = importlib.util.spec_from_file_location("fake_flashinfer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "flashinfer", module)
    return module


def test_buckets_cover_every_batch_size_up_to_the_largest():
    assert buckets_up_to(64) == [1, 2, 4, 8, 16, 24, 32, 48, 64]
    assert buckets_up_to(10) == [1, 2, 4, 8, 10]
    assert buckets_up_to(1) == [1]
    sizes = buckets_up_to(40)
    assert all(next(b for b in sizes if b >= n) - n < n for n in range(2, 41))  # padding < half


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm_dir):
    path, _ = make_tiny_model(tmp_path_factory.mktemp("graphs"), smollm_dir, vocab_size=500)
    cfg = load_hf_config(path)
    return load_model(path, cfg, torch.float32, "cpu", 128, progress=False), cfg


def _graphs(model, cfg, cache, max_batch: int) -> DecodeGraphs:
    def forward(ids, positions, attention):
        return model.compute_logits(model(ids, positions, attention))

    def attention_for(size: int):
        return flashinfer_backend.GraphDecodeAttention(cache, size, size * 8, NUM_BLOCKS, cfg.num_heads,
                                                       torch.zeros(16, dtype=torch.uint8))

    return DecodeGraphs(forward, attention_for, max_batch, "cpu", capture=False)


def _prefilled(model, cfg, seqs, tables):
    """A float32 cache (NUM_BLOCKS + scratch) holding every sequence but its last token."""
    cache = torch.zeros(cfg.num_layers, 2, NUM_BLOCKS + 1, BLOCK, cfg.num_kv_heads, cfg.head_dim)
    backend = TorchAttentionBackend(cache, enable_cascade=False)
    body = [s[:-1] for s in seqs]
    backend.prepare(AttentionBatch([len(b) for b in body], [len(b) for b in body], tables))
    with torch.inference_mode():
        model(torch.tensor([t for b in body for t in b]), torch.tensor([p for b in body for p in range(len(b))]),
              backend)
    return cache


def test_a_padded_graph_step_equals_the_eager_step(tiny, fake_flashinfer):
    """3 decodes in the 4-bucket: the same logits as the eager step, the same cache, and the
    padding row's K/V written only to the scratch block."""
    model, cfg = tiny
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 500, (n,), generator=gen).tolist() for n in (6, 14, 9)]
    tables = [[0, 1], [2, 3, 4, 5], [6, 7, 8]]
    cache = _prefilled(model, cfg, seqs, tables)
    batch = AttentionBatch([1] * 3, [len(s) for s in seqs], tables)
    ids, positions = [s[-1] for s in seqs], [len(s) - 1 for s in seqs]

    eager_cache = cache.clone()
    backend = TorchAttentionBackend(eager_cache, enable_cascade=False)
    backend.prepare(batch)
    with torch.inference_mode():
        eager = model.compute_logits(model(torch.tensor(ids), torch.tensor(positions), backend))

    graphs = _graphs(model, cfg, cache, max_batch=4)
    assert graphs.serves(batch, [0, 1, 2])
    ours = graphs.run(ids, positions, batch)
    assert ours.shape == eager.shape and graphs.bucket(3).size == 4 and graphs.replays == 1
    torch.testing.assert_close(ours, eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cache[:, :, :NUM_BLOCKS], eager_cache[:, :, :NUM_BLOCKS], rtol=1e-5, atol=1e-5)
    assert cache[:, :, NUM_BLOCKS, 0].abs().sum() > 0  # the padding row wrote its scratch slot
    assert cache[:, :, NUM_BLOCKS, 1:].abs().sum() == 0
    wrapper = graphs.bucket(3).attention.wrapper
    assert wrapper.use_cuda_graph and wrapper.use_tensor_cores and wrapper.backend == "fa2"
    indptr, indices, _ = wrapper.buffers
    assert indptr.tolist() == [0, 2, 6, 9, 10] and indices[9].item() == NUM_BLOCKS  # the scratch page


def test_graphs_serve_only_whole_sampled_decode_steps(tiny, fake_flashinfer):
    model, cfg = tiny
    graphs = _graphs(model, cfg, torch.zeros(cfg.num_layers, 2, NUM_BLOCKS + 1, BLOCK, cfg.num_kv_heads,
                                             cfg.head_dim), max_batch=4)
    decode = AttentionBatch([1, 1], [5, 3], [[0, 1], [2]])
    assert graphs.serves(decode, [0, 1])
    assert not graphs.serves(AttentionBatch([2, 1], [5, 3], [[0, 1], [2]]), [1, 2])  # a prefill row
    assert not graphs.serves(decode, [1])  # a row not sampled
    assert not graphs.serves(AttentionBatch([1] * 5, [1] * 5, [[i] for i in range(5)]), list(range(5)))
    with pytest.raises(ValueError, match="cannot run"):
        graphs.bucket(2).attention.plan(AttentionBatch([1, 1, 1], [1] * 3, [[0], [1], [2]]))
    attention = graphs.bucket(4).attention
    attention.plan(AttentionBatch([], [], []))  # what capture plans: every row padding
    assert attention.slots.tolist() == [NUM_BLOCKS * BLOCK] * 4
    assert attention.wrapper.buffers[1][:4].tolist() == [NUM_BLOCKS] * 4
