"""Parrot engine: paged-KV contexts that fork, continuous batching, sampling.

See docs/engine-api.md for the public API.
"""
from parrot.engine.config import EngineConfig, ModelConfig
from parrot.engine.context import Context
from parrot.engine.engine import Engine, EngineInputError
from parrot.engine.sampling_params import GenerationChunk, Priority, SamplingParams, Usage
from parrot.engine.stats import EngineStats

__all__ = [
    "Context", "Engine", "EngineConfig", "EngineInputError", "EngineStats", "GenerationChunk",
    "ModelConfig", "Priority", "SamplingParams", "Usage",
]
