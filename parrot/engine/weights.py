"""Build the torch model from a Hugging Face directory (safetensors), with a progress bar."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from parrot.engine.config import ModelConfig
from parrot.engine.model import LlamaModel, packing_for
from parrot_kernels import cpu_ops

SUPPORTED = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "llama", "mistral", "qwen2"}
# HF name fragment -> (our fused parameter, shard index within it)
_FUSED = {
    "self_attn.q_proj": ("self_attn.qkv_proj", 0),
    "self_attn.k_proj": ("self_attn.qkv_proj", 1),
    "self_attn.v_proj": ("self_attn.qkv_proj", 2),
    "mlp.gate_proj": ("mlp.gate_up_proj", 0),
    "mlp.up_proj": ("mlp.gate_up_proj", 1),
}


def load_hf_config(model_dir: Path) -> ModelConfig:
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(str(model_dir))
    cfg = ModelConfig.from_hf(hf)
    if cfg.architecture not in SUPPORTED:
        raise ValueError(f"unsupported architecture {cfg.architecture!r}; supported: Llama, Mistral, Qwen2")
    return cfg


def load_model(model_dir: Path, cfg: ModelConfig, dtype: torch.dtype, device: str, max_len: int,
               progress: bool = True, int8_decode: bool = False, cpu_kernels: bool = True,
               linear_kernel: str = "auto", step_runner: bool = True, dummy: bool = False) -> LlamaModel:
    """`cpu_kernels`: run the fused CPU kernels where they serve (bf16 on an AVX2 CPU);
    `linear_kernel`: auto | parrot | onednn | torch (see `packing_for`); `step_runner`:
    a step's layers in one C++ call where the kernels run; `dummy`: random weights, no
    checkpoint read (see `init_dummy`)."""
    with torch.device("meta"):
        model = LlamaModel(cfg, max_len)
    rope = model.rope  # computed (on the CPU even here), not loaded: kept out of to_empty
    del model.rope
    model = model.to_empty(device=device)
    model.rope = rope.to(device)
    if dummy:
        init_dummy(model)
    else:
        _load_checkpoint(model, model_dir, cfg, progress)
    model = model.to(dtype).eval()
    kernels = cpu_kernels and cpu_ops.supports_shape(
        cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
    ) and cpu_ops.usable_for(dtype, device)
    if kernels:
        model.use_kernels(step_runner)
    kind = packing_for(dtype, device, kernels, linear_kernel)
    if kind is not None:
        model.pack_weights(kind, int8_decode)
    elif int8_decode:
        raise ValueError("int8 decode weights need bfloat16 on CPU")
    return model


def _load_checkpoint(model: LlamaModel, model_dir: Path, cfg: ModelConfig, progress: bool) -> None:
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    for name, tensor in tqdm(_iter_tensors(files), desc=f"Loading {model_dir.name}",
                             total=_count_tensors(files), disable=not progress, unit="tensor"):
        target = _place(name, tensor, params, cfg)
        if target:
            loaded.add(target)
    missing = set(params) - loaded
    if missing:
        raise ValueError(f"checkpoint is missing weights: {sorted(missing)[:5]}")


def init_dummy(model: LlamaModel, seed: int = 0) -> None:
    """Random weights in place (vLLM's `--load-format dummy`): norms 1, every other weight
    N(0, 0.02), from a fixed seed, on the weights' device."""
    gen = torch.Generator(device=model.embed_tokens.weight.device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.data.fill_(1.0)
        else:
            param.data.normal_(0.0, 0.02, generator=gen)


def _iter_tensors(files):
    from safetensors import safe_open

    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                yield name, st.get_tensor(name)


def _count_tensors(files) -> int:
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            total += len([k for k in json.loads(fh.read(n)) if k != "__metadata__"])
    return total


def _place(name: str, tensor: torch.Tensor, params: dict, cfg: ModelConfig) -> str | None:
    """Copy one checkpoint tensor into its (possibly fused) parameter; return the parameter name."""
    name = name.removeprefix("model.")
    if name == "lm_head.weight" and cfg.tie_word_embeddings:
        return None
    if "rotary_emb" in name:
        return None
    for frag, (fused, shard) in _FUSED.items():
        if frag in name:
            target = name.replace(frag, fused)
            param = params[target]
            _shard_view(param, fused, shard, cfg).copy_(tensor)
            return target
    if name not in params:
        raise ValueError(f"unexpected weight {name!r} in checkpoint")
    params[name].data.copy_(tensor)
    return name


def _shard_view(param: torch.Tensor, fused: str, shard: int, cfg: ModelConfig) -> torch.Tensor:
    if "gate_up" in fused:
        sizes = [cfg.intermediate_size] * 2
    else:  # qkv
        sizes = [cfg.num_heads * cfg.head_dim] + [cfg.num_kv_heads * cfg.head_dim] * 2
    start = sum(sizes[:shard])
    return param.data[start:start + sizes[shard]]
