"""A CI-sized run of benchmarks/load_soak.py: concurrent sessions running small graphs plus
streaming chats on a server of its own, then nothing lost, duplicated or leaked."""
from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from parrot.bench.launcher import ServerProcess

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load_soak.py"


def load_soak_module():
    spec = importlib.util.spec_from_file_location("load_soak", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_load_smoke(tmp_path):
    soak = load_soak_module()
    cfg = soak.Config(sessions=48, chats=4, duration=10.0, warmup=5.0)
    with ServerProcess(soak.SERVER_ARGS, log_path=tmp_path / "serve.log") as server:
        summary = asyncio.run(soak.run_soak(server.url, server.proc.pid, cfg))
    print(summary)
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["lost"] == summary["duplicated"] == summary["http_429"] == 0, summary
    assert summary["session_rounds_ok"] >= cfg.sessions and summary["chats_ok"] >= cfg.chats
    assert summary["calls_done"] == 4 * summary["session_rounds_ok"]
    assert summary["num_used_blocks_after"] == summary["num_contexts_after"] == 0, summary
    assert summary["ok"], summary  # RSS back within the slack of its warmed-up baseline
