"""FlashInfer attention backend for CUDA (placeholder until written)."""


def flashinfer_available() -> bool:
    return False
