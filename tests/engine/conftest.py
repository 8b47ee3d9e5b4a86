"""Shared models for engine tests: the embedded SmolLM2 (float32) and tiny random ones."""
from __future__ import annotations

import shutil

import pytest
import torch

from parrot.engine import Engine, EngineConfig


@pytest.fixture(scope="session")
def hf_smollm(smollm_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(smollm_dir), dtype=torch.float32).eval()


def make_tiny_model(tmp_path, smollm_dir, kind: str = "llama", **overrides):
    """A random-init HF checkpoint of a tiny Llama/Qwen2 with SmolLM2's tokenizer."""
    import transformers

    base = dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                rms_norm_eps=1e-5, eos_token_id=2, bos_token_id=1)
    base.update(overrides)
    cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[kind]
    torch.manual_seed(0)
    model = cls[1](cls[0](**base)).eval()
    out = tmp_path / f"tiny-{kind}"
    model.save_pretrained(str(out))
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (smollm_dir / f).exists():
            shutil.copy(smollm_dir / f, out / f)
    return out, model


async def start_engine(loaded, **config) -> Engine:
    config.setdefault("dtype", "float32")
    config.setdefault("kv_memory_gb", 0.1)
    return await Engine(EngineConfig(**config), loaded=loaded).start()
