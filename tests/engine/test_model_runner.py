"""The runner's step on CPU tensors: inputs staged before the forward, sampling on the
logits' device (no [B, vocab] host copy), and the KV pool's budget on CUDA as a fraction
of free device memory."""
from __future__ import annotations

import pytest
import torch

from parrot.engine import model_runner
from parrot.engine.config import EngineConfig
from parrot.engine.model_runner import ModelInput, ModelRunner, kv_bytes_per_block, kv_pool_bytes
from parrot.engine.sampler import SamplingRow, sample
from parrot.engine.weights import load_hf_config, load_model
from parrot_kernels import AttentionBatch

from .conftest import make_tiny_model
from .test_sampler_device import HostReads

VOCAB = 1000
GiB = 2**30


def test_kv_pool_takes_a_fraction_of_free_cuda_memory():
    assert kv_pool_bytes(EngineConfig(), None) == GiB  # off CUDA: 1 GiB
    assert kv_pool_bytes(EngineConfig(), 80 * GiB) == int(0.9 * 80 * GiB)
    assert kv_pool_bytes(EngineConfig(gpu_memory_utilization=0.5), 10 * GiB) == 5 * GiB
    assert kv_pool_bytes(EngineConfig(kv_memory_gb=0.25), 80 * GiB) == GiB // 4  # set: it wins
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="gpu_memory_utilization"):
            EngineConfig(gpu_memory_utilization=bad)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm_dir):
    """A random 2-layer Llama (vocab 1000) loaded on CPU in float32: (model, its config)."""
    path, _ = make_tiny_model(tmp_path_factory.mktemp("runner"), smollm_dir, vocab_size=VOCAB)
    cfg = load_hf_config(path)
    return load_model(path, cfg, torch.float32, "cpu", 512, progress=False), cfg


def test_runner_sizes_its_pool_from_free_device_memory(tiny, monkeypatch):
    model, cfg = tiny
    monkeypatch.setattr(model_runner, "free_device_memory", lambda device: 64 * 2**20)
    runner = ModelRunner(model, cfg, EngineConfig(dtype="float32", gpu_memory_utilization=0.5))
    assert runner.num_blocks == 32 * 2**20 // kv_bytes_per_block(cfg, 16, torch.float32)


def two_prefills() -> ModelInput:
    """Sequences of 3 and 2 new tokens, both sampled: one greedy, one seeded draw."""
    rows = [SamplingRow(0.0, 0, 1.0, None, [], logprobs=2),
            SamplingRow(0.8, 50, 1.0, torch.Generator().manual_seed(0), [])]
    return ModelInput([5, 6, 7, 8, 9], [0, 1, 2, 0, 1], AttentionBatch([3, 2], [3, 2], [[0], [1]]), [], [2, 4], rows)


def test_step_tensors_are_staged_before_the_forward(tiny):
    model, cfg = tiny
    runner = ModelRunner(model, cfg, EngineConfig(dtype="float32", kv_memory_gb=0.01))
    inp = two_prefills()
    ids, positions, rows = runner._step_tensors(inp)
    assert (ids.tolist(), positions.tolist(), rows.tolist()) == (inp.input_ids, inp.positions, inp.sample_rows)
    calls = []
    staged = runner._step_tensors
    runner._step_tensors = lambda i: calls.append("staged") or staged(i)
    forward = runner.model.forward
    runner.model.forward = lambda *a: calls.append("forward") or forward(*a)
    try:
        runner.execute(inp)
    finally:
        del runner.model.forward
    assert calls == ["staged", "forward"]


def test_step_samples_without_copying_logits_to_the_host(tiny):
    """The step reads back only per-row values, and samples what the logits copied to the
    host would have given (the sampler's old input)."""
    model, cfg = tiny
    runner = ModelRunner(model, cfg, EngineConfig(dtype="float32", kv_memory_gb=0.01))
    with HostReads() as reads:
        got = runner.execute(two_prefills())
    assert max(reads.sizes) < VOCAB, reads.sizes
    inp = two_prefills()
    with torch.inference_mode():
        runner.backend.prepare(inp.attn)
        hidden = model(torch.tensor(inp.input_ids), torch.tensor(inp.positions), runner.backend)
        logits = model.compute_logits(hidden[inp.sample_rows]).cpu().clone()  # [2, vocab]
    assert got == sample(logits, inp.sampling)
