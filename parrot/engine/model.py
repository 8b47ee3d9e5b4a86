"""Llama-family decoder (Llama, Mistral, Qwen2, SmolLM2) in plain torch.

One flat batch: tokens of all sequences concatenated; attention reads and
writes the paged KV cache through the backend, which holds the step's batch
metadata (`backend.prepare(batch)` was called before `forward`).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from parrot.engine.config import ModelConfig
from parrot_kernels import InPlaceStep, cpu_ops


class Attention(Protocol):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int) -> torch.Tensor: ...


class Linear(nn.Linear):
    """nn.Linear that can prepack its weight: for oneDNN (bf16 on AVX-512/AMX CPUs) or for
    Parrot's AVX2 kernel (`parrot_kernels.cpu_ops`), and keep an int8 weight-only copy for
    decode-sized inputs (`quantize_int8`)."""

    packed: torch.Tensor | None = None
    packed_for: str | None = None  # "onednn" | "parrot"
    qweight: torch.Tensor | None = None  # [out, in] int8, per-output-channel scales
    scales: torch.Tensor | None = None
    INT8_MAX_ROWS = 4  # measured: int8 GEMV wins at 1 row, loses from ~8 rows to AMX bf16

    def pack(self, kind: str) -> None:
        weight = self.weight.detach()
        if kind == "parrot":
            self.packed = torch.ops.parrot.pack_linear_weight(weight)
        else:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        self.packed_for = kind
        self.register_parameter("weight", None)  # the packed copy replaces it

    def quantize_int8(self) -> None:
        w = self.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp_min(1e-8) / 127.0
        self.qweight = (w / scales[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.scales = scales.to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.qweight is not None and x.shape[0] <= self.INT8_MAX_ROWS:
            out = torch._weight_int8pack_mm(x, self.qweight, self.scales)
            return out if self.bias is None else out + self.bias
        if self.packed_for == "parrot":
            return torch.ops.parrot.linear_packed(x, self.packed, self.out_features, self.bias)
        if self.packed_for == "onednn":
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [None], "")
        return F.linear(x, self.weight, self.bias)


def onednn_packs_bf16() -> bool:
    """oneDNN prepacks bf16 linears only with AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 1)
        return True
    except RuntimeError:
        return False


def packing_for(dtype: torch.dtype, device: str, kernels: bool, choice: str = "auto") -> str | None:
    """Which prepacked linear serves (None: plain F.linear). `choice` "auto": oneDNN first on
    AMX CPUs (its tiles), elsewhere Parrot's kernel first (AVX2, or AVX-512 where the CPU has
    AVX-512-BF16: 1.2-1.9x oneDNN's bf16 projections there, measured), each where available."""
    if device != "cpu" or dtype != torch.bfloat16 or choice == "torch":
        return None
    if choice == "auto":
        prefer = ("onednn", "parrot") if "amx_bf16" in cpu_ops.cpu_flags() else ("parrot", "onednn")
        return next((kind for kind in prefer if _packing_available(kind, kernels)), None)
    if not _packing_available(choice, kernels):
        raise ValueError(f"linear kernel {choice!r} is not available here (parrot needs the CPU kernels "
                         "loaded and not --no-cpu-kernels; onednn needs AVX-512 or AVX-NE-CONVERT)")
    return choice


def _packing_available(kind: str, kernels: bool) -> bool:
    return kernels if kind == "parrot" else onednn_packs_bf16()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalized in float32, scaled in the model dtype (as transformers does)
        return F.rms_norm(x.float(), (x.shape[-1],), None, self.eps).to(x.dtype) * self.weight

    def fused(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The CPU kernel: norm(x), or residual += x in place and norm(residual)."""
        return torch.ops.parrot.rms_norm(x, residual, self.weight, self.eps)


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") / dim))
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        inv_freq = _llama3_scaling(inv_freq, scaling)
    elif kind not in (None, "default"):
        raise ValueError(f"unsupported rope scaling {kind!r}")
    return inv_freq


def _llama3_scaling(inv_freq: torch.Tensor, s: dict) -> torch.Tensor:
    factor, lo, hi = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    mid = (1 - smooth) * scaled / factor + smooth * scaled
    is_mid = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
    return torch.where(is_mid, mid, scaled)


class RotaryEmbedding(nn.Module):
    def __init__(self, cfg: ModelConfig, max_len: int):
        super().__init__()
        # on the CPU even under the loader's meta device (there torch._refs would compute it,
        # importing torch._dynamo: ~1 s of every start); the loader keeps these tables
        t = torch.arange(max_len, dtype=torch.float64, device="cpu")
        freqs = torch.outer(t, rope_inv_freq(cfg))  # [max_len, head_dim/2]
        self.register_buffer("cos", freqs.cos().float(), persistent=False)
        self.register_buffer("sin", freqs.sin().float(), persistent=False)
        # [max_len, head_dim]: cos then sin of each frequency, the CPU kernel's table; a plain
        # attribute, so the model's cast to bf16 leaves it float32
        self.cos_sin = torch.cat((freqs.cos(), freqs.sin()), -1).float()

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: [T] -> cos, sin: [T, 1, head_dim] (both halves), once per step
        cos, sin = self.cos[positions], self.sin[positions]
        return torch.cat((cos, cos), -1).unsqueeze(1).to(dtype), torch.cat((sin, sin), -1).unsqueeze(1).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [T, H, D]; neox-style halves (the HF Llama convention)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.attention_bias)
        self.o_proj = Linear(self.q_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], attn: Attention):
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)  # [T, Hq, D]
        k = k.view(-1, self.num_kv_heads, self.head_dim)  # [T, Hkv, D]
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = attn.forward(q, k, v, self.layer)  # [T, Hq, D]
        return self.o_proj(out.reshape(-1, self.q_size))

    def fused(self, x: torch.Tensor, rope: "FusedRope", attn: "FusedAttention") -> torch.Tensor:
        """CPU kernels: RoPE on q and k and the K/V cache write in one pass, then attention
        over the cache as it is (nothing gathered)."""
        k_cache, v_cache, slots = attn.kv_target(self.layer)
        q = torch.ops.parrot.rope_write_kv(self.qkv_proj(x), rope.positions, rope.cos_sin,
                                           k_cache, v_cache, slots, self.num_heads)  # [T, Hq, D]
        return self.o_proj(attn.attend(q, self.layer).view(-1, self.q_size))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.ops.parrot.silu_mul(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = SelfAttention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, rope, attn):
        x = x + self.self_attn(self.input_layernorm(x), rope, attn)
        return x + self.mlp(self.post_attention_layernorm(x))

    def fused(self, x, residual, rope, attn):
        """CPU kernels, vLLM's residual convention: returns (this layer's output delta, the
        residual stream before it); the next norm adds them in place."""
        h = self.self_attn.fused(self.input_layernorm.fused(x, residual), rope, attn)
        residual = x if residual is None else residual
        return self.mlp.fused(self.post_attention_layernorm.fused(h, residual)), residual


class FusedRope(NamedTuple):
    positions: torch.Tensor  # [T] long
    cos_sin: torch.Tensor  # [max_len, head_dim] float32


class FusedAttention(Attention, Protocol):
    """What the fused path needs of the attention backend (the CPU torch backend has it)."""

    def kv_target(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(k_cache, v_cache, slots) of this step for `layer`."""
        ...

    def attend(self, q: torch.Tensor, layer: int) -> torch.Tensor:
        """Attention of q [T, Hq, D] over the cache, the new K/V already written."""
        ...

    def in_place_step(self) -> InPlaceStep | None:
        """This step's whole-cache inputs when every row reads the cache in place and each
        cascade group, if any, is one run of rows; None for any other step."""
        ...


class LayerStack(NamedTuple):
    """The weights `parrot.decoder_layers` runs: per layer input norm, qkv, o, post-attention
    norm, gate_up, down (packed for Parrot's kernel), then the final norm."""

    weights: list[torch.Tensor]
    out_features: list[int]  # qkv, o, gate_up, down


class LlamaModel(nn.Module):
    uses_kernels = False
    # a step that reads the cache in place (cascade groups as runs of rows included) runs
    # every layer in one C++ call (`parrot.decoder_layers`) where the weights allow it;
    # False: layer by layer from Python (the runner's reference)
    step_runner = False
    _stack: LayerStack | None = None

    def __init__(self, cfg: ModelConfig, max_len: int):
        super().__init__()
        self.config = cfg
        # `_weight`: no random init (under the loader's meta device that goes through
        # torch._refs, importing torch._dynamo); the loader fills it
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                         _weight=torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rope = RotaryEmbedding(cfg, max_len)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn: Attention) -> torch.Tensor:
        # input_ids, positions: [T] -> hidden: [T, hidden]
        x = self.embed(input_ids)
        if self.uses_kernels:
            return self._forward_fused(x, positions, attn)
        rope = self.rope(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, rope, attn)
        return self.norm(x)

    def _forward_fused(self, x: torch.Tensor, positions: torch.Tensor, attn: "FusedAttention") -> torch.Tensor:
        step = attn.in_place_step() if self.step_runner else None
        stack = self._layer_stack() if step is not None else None
        if stack is not None:
            return torch.ops.parrot.decoder_layers(
                x, stack.weights, stack.out_features, positions, self.rope.cos_sin, *step,
                self.config.num_heads, self.norm.eps)
        rope, residual = FusedRope(positions, self.rope.cos_sin), None
        for layer in self.layers:
            x, residual = layer.fused(x, residual, rope, attn)
        return self.norm.fused(x, residual)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.embed_tokens.weight is None:  # a tied table lives only in the packed head
            return torch.ops.parrot.packed_rows(self.lm_head.packed, input_ids, self.config.hidden_size)
        return self.embed_tokens(input_ids)

    def use_kernels(self, step_runner: bool = True) -> None:
        """Run the fused CPU kernels (bf16; `parrot_kernels.cpu_ops` loaded). The eager
        path above stays the reference (and serves every other dtype and device).
        `step_runner`: a step's layers in one C++ call where it can (see `decoder_layers`)."""
        self.uses_kernels = True
        self.step_runner = step_runner

    def _layer_stack(self) -> LayerStack | None:
        """The runner's weights, gathered once; None where a projection is not packed for
        Parrot's kernel, has a bias or an int8 copy (those keep the layer-by-layer path)."""
        if self._stack is None:
            layers = [(lay.input_layernorm, lay.self_attn.qkv_proj, lay.self_attn.o_proj,
                       lay.post_attention_layernorm, lay.mlp.gate_up_proj, lay.mlp.down_proj) for lay in self.layers]
            linears = [m for parts in layers for m in parts if isinstance(m, Linear)]
            if any(m.packed_for != "parrot" or m.bias is not None or m.qweight is not None for m in linears):
                self.step_runner = False  # asked once: the weights do not change
                return None
            weights = [m.packed if isinstance(m, Linear) else m.weight for parts in layers for m in parts]
            self._stack = LayerStack(weights + [self.norm.weight], [m.out_features for m in linears[:4]])
        return self._stack

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # hidden: [B, hidden] -> logits: [B, vocab] in float32
        if self.lm_head is None:
            return F.linear(hidden, self.embed_tokens.weight).float()
        return self.lm_head(hidden).float()

    def pack_weights(self, kind: str, int8_decode: bool = False) -> None:
        """Prepack every projection for `kind` ("onednn" or "parrot"); a tied head gets its
        own packed copy (Parrot's layout also serves the embedding lookups, so the table is
        dropped; oneDNN's is opaque, so it is kept). With `int8_decode`, decode-sized inputs
        use int8 weight-only copies (about half the bytes per step; outputs differ slightly
        from bf16)."""
        tied = self.lm_head is None
        if tied:
            self.lm_head = Linear(self.config.hidden_size, self.config.vocab_size, bias=False)
            self.lm_head.weight = nn.Parameter(self.embed_tokens.weight.detach(), requires_grad=False)
        for module in self.modules():
            if isinstance(module, Linear):
                if int8_decode:
                    module.quantize_int8()
                module.pack(kind)
        if tied and kind == "parrot":  # embeddings read from the head's copy: one table, not two
            self.embed_tokens.register_parameter("weight", None)
