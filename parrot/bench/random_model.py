"""Model directories of a named shape with no weights: a config.json and a word-level
tokenizer (token i is the word `w{i}`), for engines started with `load_format="dummy"`
(random weights), so a benchmark of, say, Llama-3-8B's shape needs no checkpoint."""
from __future__ import annotations

from pathlib import Path

SHAPES = {
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, tie_word_embeddings=True),
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                      rope_theta=500000.0, tie_word_embeddings=False),
}


def write_model_dir(path: Path | str, shape: str) -> Path:
    """`path` holding `shape`'s config.json and a word-level tokenizer (EOS `w2`)."""
    from transformers import LlamaConfig

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
    path = Path(path)
    dims = SHAPES[shape]
    LlamaConfig(**dims, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                architectures=["LlamaForCausalLM"]).save_pretrained(str(path))
    write_word_tokenizer(path, dims["vocab_size"])
    return path


def write_word_tokenizer(path: Path | str, vocab_size: int) -> None:
    """A word-level tokenizer (token i is the word `w{i}`, EOS `w2`) saved in `path`, so an
    engine on random weights has something to decode; no tokenizer files need to travel."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w2").save_pretrained(str(path))
