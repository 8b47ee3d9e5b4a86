"""Owns the tensors: the model, the KV pool, the attention backend. Runs one step.

`build_input` runs on the event loop thread (it reads scheduler state);
`execute` runs in the engine's worker thread and touches only tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from parrot.engine.config import EngineConfig, ModelConfig
from parrot.engine.cuda_graphs import DecodeGraphs
from parrot.engine.model import LlamaModel
from parrot.engine.sampler import Sampled, SamplingRow, sample
from parrot.engine.scheduler import StepPlan
from parrot_kernels import AttentionBatch, make_backend
from parrot_kernels.backend import uses_flashinfer


@dataclass
class ModelInput:
    """Explicit metadata of one step, detached from scheduler state."""

    input_ids: list[int]
    positions: list[int]
    attn: AttentionBatch
    copies: list[tuple[int, int]]
    sample_rows: list[int]  # flat row of each sampled sequence's last token
    sampling: list[SamplingRow]


def kv_bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    elem = torch.empty((), dtype=dtype).element_size()
    return cfg.num_layers * 2 * block_size * cfg.num_kv_heads * cfg.head_dim * elem


CPU_KV_MEMORY_GB = 1.0  # the KV pool off CUDA when `kv_memory_gb` is unset


def kv_pool_bytes(config: EngineConfig, free_device_bytes: int | None) -> int:
    """The KV pool's budget: `kv_memory_gb` when set; else, on CUDA (`free_device_bytes`:
    the device memory free once the weights are loaded), `gpu_memory_utilization` of that
    free memory, the rest left to activations and workspaces (vLLM's flag takes a fraction
    of the whole device instead); else CPU_KV_MEMORY_GB."""
    if config.kv_memory_gb is not None:
        return int(config.kv_memory_gb * 2**30)
    if free_device_bytes is None:
        return int(CPU_KV_MEMORY_GB * 2**30)
    return int(free_device_bytes * config.gpu_memory_utilization)


def free_device_memory(device: torch.device | str) -> int | None:
    """Bytes free on a CUDA device (None elsewhere)."""
    device = torch.device(device)
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


class ModelRunner:
    def __init__(self, model: LlamaModel, cfg: ModelConfig, config: EngineConfig):
        self.model = model
        self.cfg = cfg
        self.device = torch.device(config.device)
        per_block = kv_bytes_per_block(cfg, config.block_size, config.torch_dtype)
        budget = kv_pool_bytes(config, free_device_memory(config.device))
        self.num_blocks = max(1, budget // per_block)  # the blocks requests get
        # With decode graphs (FlashInfer's), one block more: the padding rows' scratch block,
        # owned by none.
        graphs = config.cuda_graphs and uses_flashinfer(self.device, config.torch_dtype)
        shape = (cfg.num_layers, 2, self.num_blocks + graphs, config.block_size, cfg.num_kv_heads, cfg.head_dim)
        self.kv_cache = torch.zeros(shape, dtype=config.torch_dtype, device=config.device)
        self.backend = make_backend(self.kv_cache, config.device, config.enable_cascade,
                                    config.cascade_min_saved_tokens, use_kernels=model.uses_kernels,
                                    num_q_heads=cfg.num_heads)
        self.graphs = self._decode_graphs(config) if graphs else None
        self.is_cascade_step = False  # whether the last step ran a cascade

    def _decode_graphs(self, config: EngineConfig) -> DecodeGraphs:
        """Decode graphs over FlashInfer, captured now (bucket sizes up to max_num_seqs)."""
        from parrot_kernels.flashinfer_backend import GraphDecodeAttention

        max_pages = -(-self.model.max_len // config.block_size)
        workspace = self.backend.float_workspace

        def attention_for(size: int) -> GraphDecodeAttention:
            return GraphDecodeAttention(self.kv_cache, size, size * max_pages, self.num_blocks,
                                        self.cfg.num_heads, workspace)

        graphs = DecodeGraphs(self._logits_of, attention_for, config.max_num_seqs, self.device)
        graphs.capture()
        return graphs

    def _logits_of(self, input_ids: torch.Tensor, positions: torch.Tensor, attention) -> torch.Tensor:
        return self.model.compute_logits(self.model(input_ids, positions, attention))

    def build_input(self, plan: StepPlan, sampling: list[SamplingRow]) -> ModelInput:
        ids, positions, q_lens, kv_lens, tables, sample_rows = [], [], [], [], [], []
        for s in plan.seqs:
            ctx = s.request.ctx
            start, end = ctx.num_computed, ctx.num_computed + s.num_new
            ids += ctx.token_ids[start:end]
            positions += range(start, end)
            q_lens.append(s.num_new)
            kv_lens.append(end)
            tables.append(list(ctx.block_table))
            if s.sample:
                sample_rows.append(len(ids) - 1)
        return ModelInput(ids, positions, AttentionBatch(q_lens, kv_lens, tables),
                          list(plan.copies), sample_rows, sampling)

    @torch.inference_mode()
    def execute(self, inp: ModelInput) -> Sampled:
        """Run the forward pass and sample one token per sampled sequence, on the device:
        the host gets back only the sampled ids (and asked-for logprobs). A decode step a
        CUDA graph serves replays it (see parrot.engine.cuda_graphs)."""
        self._copy_blocks(inp.copies)
        if self.graphs is None:
            self.backend.prepare(inp.attn)
        else:  # FlashInfer: a plain decode step replays its graph
            cascade = self.backend.cascade_plan(inp.attn)
            if cascade is None and self.graphs.serves(inp.attn, inp.sample_rows):
                self.is_cascade_step = False
                return sample(self.graphs.run(inp.input_ids, inp.positions, inp.attn), inp.sampling)
            self.backend.prepare_with(inp.attn, cascade)
        input_ids, positions, rows = self._step_tensors(inp)
        self.is_cascade_step = self.backend.is_cascade_step
        hidden = self.model(input_ids, positions, self.backend)  # [T, hidden]
        if not inp.sample_rows:
            return Sampled([], [])
        logits = self.model.compute_logits(hidden[rows])  # [B, vocab] float32
        return sample(logits, inp.sampling)

    def _step_tensors(self, inp: ModelInput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids [T], positions [T] and the sampled rows [B], all made before the
        forward, in one host-to-device copy (from pinned memory on CUDA)."""
        host = torch.tensor(inp.input_ids + inp.positions + inp.sample_rows, dtype=torch.long,
                            pin_memory=self.device.type == "cuda")
        staged = host.to(self.device, non_blocking=True)
        num_tokens = len(inp.input_ids)
        return staged[:num_tokens], staged[num_tokens: 2 * num_tokens], staged[2 * num_tokens:]

    def _copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        if copies:
            src = torch.tensor([c[0] for c in copies], device=self.device)
            dst = torch.tensor([c[1] for c in copies], device=self.device)
            self.kv_cache[:, :, dst] = self.kv_cache[:, :, src]
