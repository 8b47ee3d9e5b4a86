"""`parrot serve` flags, and a graceful SIGTERM with a request in flight."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from parrot.bench.launcher import ServerProcess
from parrot.cli import build_parser, engine_config_from_args
from parrot.engine import EngineConfig


def test_flags_map_onto_engine_config():
    args = build_parser().parse_args([
        "serve", "--dtype", "float32", "--kv-memory-gb", "0.5", "--block-size", "32",
        "--max-num-batched-tokens", "128", "--max-num-seqs", "8", "--no-prefix-caching",
        "--max-model-len", "2048", "--no-cascade", "--cascade-min-saved-tokens", "64"])
    config = engine_config_from_args(args)
    assert (config.dtype, config.kv_memory_gb, config.block_size) == ("float32", 0.5, 32)
    assert (config.max_num_batched_tokens, config.max_num_seqs) == (128, 8)
    assert (config.max_model_len, config.enable_prefix_caching) == (2048, False)
    assert (config.enable_cascade, config.cascade_min_saved_tokens) == (False, 64)


def test_unset_flags_keep_engine_defaults(monkeypatch):
    monkeypatch.setenv("PARROT_API_KEY", "from-env")
    args = build_parser().parse_args(["serve"])
    assert engine_config_from_args(args) == EngineConfig()
    assert (args.host, args.port, args.api_key) == ("127.0.0.1", 8000, "from-env")


def test_the_step_budget_defaults_by_device():
    assert EngineConfig().max_num_batched_tokens == 256  # a CPU prefill token costs ~1.7 ms
    assert EngineConfig(device="cuda").max_num_batched_tokens == 2048
    assert EngineConfig(device="cuda", max_num_batched_tokens=512).max_num_batched_tokens == 512


@pytest.mark.e2e
async def test_sigterm_drains_then_stops(tmp_path):
    server = ServerProcess(["--dtype", "float32", "--kv-memory-gb", "0.1",
                            "--shutdown-timeout", "1"], log_path=tmp_path / "serve.log")
    url = await asyncio.to_thread(server.start)
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(url + "/v1/completions", json={
                "prompt": "Count:", "max_tokens": 1000, "ignore_eos": True, "stream": True})
            assert (await resp.content.readline()).startswith(b"data: ")
            signalled = time.monotonic()
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            try:  # the stream is cut once the drain times out
                while await resp.content.readline():
                    pass
            except aiohttp.ClientPayloadError:
                pass
            assert await stopping == 0
            assert time.monotonic() - signalled < 6  # 1 s drain, then cancelled
    finally:
        server.stop()
    log = server.log()
    assert "cancelling 1 request(s) still running" in log and log.rstrip().endswith("stopped")
    assert "Traceback" not in log
