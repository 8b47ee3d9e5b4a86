"""A server start loads only what serving needs: torch's compiler stack (torch._dynamo and
inductor, ~3-4 s of imports on a 2-core machine) stays out until something compiles."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

START_AND_CONSTRAIN = """
import asyncio, json, sys
from parrot.engine import Engine, EngineConfig, SamplingParams
from parrot.engine.sampling_params import Constraint

async def main():
    e = await Engine(EngineConfig(dtype="bfloat16", kv_memory_gb=0.1)).start()
    loaded = {m: m in sys.modules for m in ("torch._dynamo", "torch._inductor")}
    ctx = e.new_context()
    e.append(ctx, e.tokenizer.encode("Answer yes or no:"))
    sp = SamplingParams(max_tokens=4, constraint=Constraint("choice", json.dumps(["yes", "no"])))
    text = "".join([c.text async for c in e.generate(ctx, sp)])
    e.free(ctx)
    e.check_integrity()
    await e.stop()
    print(json.dumps({"loaded": loaded, "text": text}))

asyncio.run(main())
"""


def test_an_engine_starts_and_constrains_without_torchs_compiler_stack():
    out = subprocess.run([sys.executable, "-c", START_AND_CONSTRAIN], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["loaded"] == {"torch._dynamo": False, "torch._inductor": False}
    assert result["text"].strip() in ("yes", "no")  # the generate ran on llguidance's masks
