"""Load everything an engine needs: model weights, config, tokenizer."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NamedTuple

import torch

from parrot.engine.config import EngineConfig, ModelConfig
from parrot.engine.model import LlamaModel
from parrot.engine.model_files import resolve_model_dir
from parrot.engine.weights import load_hf_config, load_model

log = logging.getLogger(__name__)


class LoadedModel(NamedTuple):
    model: LlamaModel
    config: ModelConfig
    tokenizer: object
    name: str
    max_model_len: int
    model_dir: Path


def load(config: EngineConfig, progress: bool = True) -> LoadedModel:
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    start = time.perf_counter()
    model_dir, name = resolve_model_dir(config.model, config.cache_dir)
    cfg = load_hf_config(model_dir)
    max_len = min(config.max_model_len or cfg.max_position_embeddings, cfg.max_position_embeddings)
    model = load_model(model_dir, cfg, config.torch_dtype, config.device, max_len, progress,
                       int8_decode=config.quantization == "int8", cpu_kernels=config.cpu_kernels,
                       linear_kernel=config.linear_kernel, step_runner=config.step_runner,
                       dummy=config.load_format == "dummy")
    tokenizer = load_tokenizer(model_dir)
    log.info("loaded %s (%s, %s) in %.1fs", name, cfg.architecture, config.dtype, time.perf_counter() - start)
    return LoadedModel(model, cfg, tokenizer, name, max_len, model_dir)


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    if not any((model_dir / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    return AutoTokenizer.from_pretrained(str(model_dir))
