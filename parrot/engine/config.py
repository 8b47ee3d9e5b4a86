"""Engine and model configuration: plain data."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

LINEAR_KERNELS = ("auto", "parrot", "onednn", "torch")
LOAD_FORMATS = ("auto", "dummy")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EngineConfig:
    model: str | None = None  # HF directory, .gguf file, or None for the embedded SmolLM2
    dtype: str = "bfloat16"
    device: str = "cpu"
    kv_memory_gb: float | None = None  # KV pool budget; None: 1 GiB, or on CUDA the next field
    # CUDA without `kv_memory_gb`: the KV pool takes this fraction of the device memory free
    # once the weights are loaded (vLLM's flag of the name takes it of the whole device).
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    # Per-step token budget (chunked prefill); None: 256 on CPU, 2048 on CUDA. On a 2-core
    # CPU a prefill token costs ~1.7 ms, so a 512-token chunk held every running decode for
    # ~0.9 s: gpts-style apps ran 4.4-4.8 s at 256 vs 5.2-6.2 s at 512 (alternated), the
    # other workloads equal within noise.
    max_num_batched_tokens: int | None = None
    # Step budget of other work's prefills while latency-critical work runs, until the
    # step-cost model is warm (a few steps; then the model sizes it). Measured on a 2-core
    # AMX Xeon (a prefill token ~0.33 ms, a step's fixed cost ~27 ms), where a small cap only
    # added steps: mixed chat + map-reduce chat 2.04 s / jobs 4.09 s at 64, 1.85 s / 3.50 s
    # at 512. At or above `max_num_batched_tokens` it caps nothing.
    latency_token_budget: int = 512
    # While latency-critical work runs, a step may take this many times the predicted step
    # of the latency work alone; other work's prefill chunks fill the difference.
    latency_step_factor: float = 1.5
    max_num_seqs: int = 64
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    enable_prefix_caching: bool = True
    enable_cascade: bool = True
    # A shared prefix is read once per group only where that saves >= this many token
    # reads per layer ((sharers - 1) * shared tokens); None: the attention backend's default
    # (on CPU 10,000 and >= 16 sharers with the CPU kernels, 2,048 eager, both measured; every
    # shared block on CUDA).
    cascade_min_saved_tokens: int | None = None
    num_threads: int | None = None  # torch intra-op threads; None = all cores
    cache_dir: str | None = None  # where converted GGUF checkpoints go
    quantization: str | None = None  # "int8": int8 weight-only GEMV for decode (CPU bf16)
    # The fused CPU kernels (parrot_kernels.cpu_ops: AVX2, bf16); False: the eager torch
    # reference path everywhere.
    cpu_kernels: bool = True
    # With the CPU kernels, a step with no cascade group runs every layer in one C++ call;
    # False: layer by layer from Python (the runner's reference, same kernels).
    step_runner: bool = True
    linear_kernel: str = "auto"  # auto | parrot | onednn | torch: the bf16 CPU projections
    # "dummy": random weights of the model directory's config.json, its checkpoint unread
    # (vLLM's --load-format dummy; benchmarks of shapes no checkpoint travels for).
    load_format: str = "auto"
    # On CUDA with FlashInfer: decode steps replay a CUDA graph captured per batch-size
    # bucket (parrot.engine.cuda_graphs); False: every step eager.
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens is None:
            self.max_num_batched_tokens = 2048 if str(self.device).startswith("cuda") else 256
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.quantization not in (None, "int8"):
            raise ValueError(f"quantization must be 'int8' or unset, got {self.quantization!r}")
        if self.load_format not in LOAD_FORMATS:
            raise ValueError(f"load_format must be one of {LOAD_FORMATS}, got {self.load_format!r}")
        if self.linear_kernel not in LINEAR_KERNELS:
            raise ValueError(f"linear_kernel must be one of {LINEAR_KERNELS}, got {self.linear_kernel!r}")
        if self.cascade_min_saved_tokens is not None and self.cascade_min_saved_tokens < 0:
            raise ValueError(f"cascade_min_saved_tokens must be >= 0, got {self.cascade_min_saved_tokens}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.latency_step_factor < 1.0:
            raise ValueError(f"latency_step_factor must be >= 1, got {self.latency_step_factor}")
        if self.block_size < 1 or self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ValueError("block_size, max_num_batched_tokens and max_num_seqs must be positive")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


@dataclass(frozen=True)
class ModelConfig:
    """The few fields of a Llama-family Hugging Face config the model needs."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    eos_token_ids: tuple[int, ...]
    architecture: str

    @classmethod
    def from_hf(cls, hf: Any) -> "ModelConfig":
        num_heads = hf.num_attention_heads
        rope = dict(getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {})
        theta = rope.pop("rope_theta", None) or getattr(hf, "rope_theta", None) or 10000.0
        if rope.get("rope_type", rope.get("type", "default")) == "default":
            rope = {}
        eos = hf.eos_token_id
        eos = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        arch = (getattr(hf, "architectures", None) or [hf.model_type])[0]
        return cls(
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            intermediate_size=hf.intermediate_size,
            num_layers=hf.num_hidden_layers,
            num_heads=num_heads,
            num_kv_heads=getattr(hf, "num_key_value_heads", None) or num_heads,
            head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // num_heads,
            rms_norm_eps=hf.rms_norm_eps,
            rope_theta=float(theta),
            rope_scaling=rope or None,
            max_position_embeddings=hf.max_position_embeddings,
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            attention_bias=hf.model_type == "qwen2" or bool(getattr(hf, "attention_bias", False)),
            eos_token_ids=eos,
            architecture=arch,
        )
