"""Our torch forward equals Hugging Face transformers' (float32 logits)."""
from __future__ import annotations

import pytest
import torch

from parrot.engine.weights import load_hf_config, load_model
from parrot_kernels import AttentionBatch, make_backend

from .conftest import make_tiny_model


def our_logits(model, cfg, token_ids: list[int], block_size: int = 16) -> torch.Tensor:
    num_blocks = -(-len(token_ids) // block_size) + 1
    dtype = model.norm.weight.dtype
    kv = torch.zeros(cfg.num_layers, 2, num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim, dtype=dtype)
    backend = make_backend(kv, "cpu", enable_cascade=False, use_kernels=model.uses_kernels)
    backend.prepare(AttentionBatch([len(token_ids)], [len(token_ids)], [list(range(num_blocks))]))
    ids = torch.tensor(token_ids)
    with torch.inference_mode():
        return model.compute_logits(model(ids, torch.arange(len(ids)), backend))


def hf_logits(hf_model, token_ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return hf_model(torch.tensor([token_ids])).logits[0].float()


@pytest.mark.parametrize("kind,overrides", [
    ("llama", {}),
    ("llama", {"num_key_value_heads": 1, "tie_word_embeddings": True}),
    ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
               "rope_theta": 500000.0}),
    ("qwen2", {"tie_word_embeddings": False}),
])
def test_tiny_forward_matches_transformers(tmp_path, smollm_dir, kind, overrides):
    path, hf = make_tiny_model(tmp_path, smollm_dir, kind, **overrides)
    cfg = load_hf_config(path)
    model = load_model(path, cfg, torch.float32, "cpu", 512, progress=False)
    tokens = torch.randint(0, cfg.vocab_size, (40,)).tolist()
    ours, theirs = our_logits(model, cfg, tokens), hf_logits(hf, tokens)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()


def test_smollm_forward_matches_transformers(smollm, hf_smollm):
    tokens = smollm.tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 3)
    ours = our_logits(smollm.model, smollm.config, tokens)
    theirs = hf_logits(hf_smollm, tokens)
    assert (ours - theirs).abs().max() < 1e-3
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_converted_checkpoint_is_a_complete_hf_directory(smollm_dir):
    import json

    config = json.loads((smollm_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    from safetensors import safe_open

    with safe_open(str(smollm_dir / "model.safetensors"), framework="pt") as f:
        assert "model.embed_tokens.weight" in f.keys()


def test_smollm_bfloat16_tracks_transformers(smollm_dir):
    """bf16 (oneDNN-prepacked on CPU) stays close to transformers' bf16 forward."""
    from transformers import AutoModelForCausalLM

    cfg = load_hf_config(smollm_dir)
    ours_model = load_model(smollm_dir, cfg, torch.bfloat16, "cpu", 512, progress=False)
    hf = AutoModelForCausalLM.from_pretrained(str(smollm_dir), dtype=torch.bfloat16).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm_dir))
    tokens = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, tokenize=False)
    tokens = tok.encode(tokens + "The capital of France is Paris.")
    ours, theirs = our_logits(ours_model, cfg, tokens), hf_logits(hf, tokens)
    agree = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
    rel = ((ours - theirs).norm() / theirs.norm()).item()
    print(f"bf16 agreement {agree:.3f}, relative error {rel:.4f}")
    assert agree >= 0.95 and rel < 0.05  # gross errors; test_generate checks the answer itself


def test_int8_decode_weights_stay_close_to_bfloat16(smollm_dir):
    """--quantization int8: decode-sized inputs (<= 16 rows) go through int8 weights."""
    cfg = load_hf_config(smollm_dir)
    bf16 = load_model(smollm_dir, cfg, torch.bfloat16, "cpu", 512, progress=False)
    int8 = load_model(smollm_dir, cfg, torch.bfloat16, "cpu", 512, progress=False, int8_decode=True)
    assert int8.layers[0].mlp.down_proj.qweight.dtype == torch.int8
    gen = torch.Generator().manual_seed(0)
    prompts = [[1, 4093, 198, 1780]] + [torch.randint(100, 20000, (4,), generator=gen).tolist() for _ in range(9)]
    a = torch.cat([our_logits(bf16, cfg, p) for p in prompts])  # 4 rows each: the int8 path
    b = torch.cat([our_logits(int8, cfg, p) for p in prompts])
    assert not torch.equal(a, b)  # the int8 path really ran
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9
    assert ((a - b).norm() / a.norm()).item() < 0.1


def decode_logits(model, cfg, prompt: list[int], steps: list[int], block_size: int = 16) -> torch.Tensor:
    """Prefill `prompt`, then decode `steps` one token at a time (teacher-forced); the
    logits of every decode step: [len(steps), vocab]."""
    total = len(prompt) + len(steps)
    num_blocks = -(-total // block_size) + 1
    dtype = model.norm.weight.dtype
    kv = torch.zeros(cfg.num_layers, 2, num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim, dtype=dtype)
    backend = make_backend(kv, "cpu", enable_cascade=False, use_kernels=model.uses_kernels)
    table, out = list(range(num_blocks)), []
    with torch.inference_mode():
        backend.prepare(AttentionBatch([len(prompt)], [len(prompt)], [table]))
        model(torch.tensor(prompt), torch.arange(len(prompt)), backend)
        for i, token in enumerate(steps):
            pos = len(prompt) + i
            backend.prepare(AttentionBatch([1], [pos + 1], [table]))
            out.append(model.compute_logits(model(torch.tensor([token]), torch.tensor([pos]), backend)))
    return torch.cat(out)


def test_cpu_kernels_track_float32_in_prefill_and_decode(smollm, smollm_dir):
    """bf16 through Parrot's fused CPU kernels (prefill and decode attention read in place)
    stays at least as close to the float32 model as the eager bf16 path."""
    from parrot_kernels import cpu_ops

    if not cpu_ops.load():
        pytest.skip("Parrot CPU kernels not available here")
    cfg = load_hf_config(smollm_dir)
    fused = load_model(smollm_dir, cfg, torch.bfloat16, "cpu", 512, progress=False)
    eager = load_model(smollm_dir, cfg, torch.bfloat16, "cpu", 512, progress=False, cpu_kernels=False,
                       linear_kernel="torch")
    # the fused kernels next to other linears (oneDNN's on AVX-512/AMX machines; torch's here)
    mixed = load_model(smollm_dir, cfg, torch.bfloat16, "cpu", 512, progress=False, linear_kernel="torch")
    assert fused.uses_kernels and mixed.uses_kernels and not eager.uses_kernels
    assert mixed.layers[0].mlp.down_proj.packed_for is None
    prompt = smollm.tokenizer.encode("Water boils at 100 degrees Celsius. Ice melts at 0 degrees. " * 4)
    steps = smollm.tokenizer.encode(" The boiling point of water in Fahrenheit is 212 degrees.")
    ref = decode_logits(smollm.model, cfg, prompt, steps)
    errors = {}
    for name, model in (("fused", fused), ("mixed", mixed), ("eager", eager)):
        got = decode_logits(model, cfg, prompt, steps)
        errors[name] = ((got - ref).norm() / ref.norm()).item()
        assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.9, name
    assert errors["fused"] < 0.05 and errors["mixed"] < 0.05, errors
    assert errors["fused"] <= 1.5 * errors["eager"], errors  # fp32 accumulation: no worse than eager


def test_a_tied_table_packed_by_the_kernel_serves_embeddings_exactly(tmp_path, smollm_dir):
    """With Parrot's packed head, a tied model keeps one table: each embedding row read back
    from the packed head equals the checkpoint's row, bit for bit."""
    from parrot_kernels import cpu_ops

    if not cpu_ops.load():
        pytest.skip("Parrot CPU kernels not available here")
    path, hf = make_tiny_model(tmp_path, smollm_dir, "llama", tie_word_embeddings=True)
    cfg = load_hf_config(path)
    model = load_model(path, cfg, torch.bfloat16, "cpu", 512, progress=False, linear_kernel="parrot")
    assert model.lm_head.packed_for == "parrot" and model.embed_tokens.weight is None
    table = hf.model.embed_tokens.weight.detach().to(torch.bfloat16)
    ids = torch.tensor([0, 1, 15, 16, 17, 31, 4097, cfg.vocab_size - 1])
    assert torch.equal(model.embed(ids), table[ids])


# Steps of three sequences (A: 40-token prompt, B: 5, C: 17 in two chunks): a prefill alone,
# decodes next to prefill chunks before and after them, a chunk whose keys are partly cached,
# plain decode steps. Each entry: (sequence, new tokens).
RUNNER_STEPS = [
    [(0, 40)],
    [(0, 1), (1, 5)],
    [(2, 10), (0, 1), (1, 1)],
    [(0, 1), (2, 7), (1, 1)],
    [(0, 1), (1, 1), (2, 1)],
    [(2, 1), (0, 1), (1, 1)],
]


# Forks of sequence 0's first two blocks (32 tokens; 1-3) next to an unrelated sequence (4):
# cascade groups over one run of rows (steps 1, 2, 4) and over rows that are not one run
# (step 3: rows 0 and 7), next to decodes and prefill chunks.
CASCADE_STEPS = [
    [(0, 40)],
    [(1, 5), (2, 3), (3, 1)],
    [(0, 1), (1, 1), (2, 1), (3, 1)],
    [(1, 1), (4, 6), (2, 1)],
    [(2, 1), (3, 1), (1, 1), (0, 1)],
]


def run_steps(model, cfg, steps, block_size: int = 16, forks: tuple[int, ...] = ()):
    """Run `steps` (lists of (sequence, new tokens)) through a kernels backend; `forks`
    start as forks of sequence 0's first two blocks, with cascade attention over them.
    Returns the logits of every row of every step [rows, vocab], the cache, and per step
    (cascade step, the runner could take it)."""
    num_seqs = 1 + max(seq for step in steps for seq, _ in step)
    blocks_each = 8
    kv = torch.zeros(cfg.num_layers, 2, blocks_each * num_seqs, block_size, cfg.num_kv_heads, cfg.head_dim,
                     dtype=model.norm.weight.dtype)
    backend = make_backend(kv, "cpu", enable_cascade=bool(forks), cascade_min_saved_tokens=0 if forks else None,
                           use_kernels=model.uses_kernels)
    tables = [list(range(i * blocks_each, (i + 1) * blocks_each)) for i in range(num_seqs)]
    fed = [0] * num_seqs
    for seq in forks:
        tables[seq], fed[seq] = tables[0][:2] + tables[seq][2:], 2 * block_size
    out, kinds = [], []
    with torch.inference_mode():
        for step in steps:
            ids, positions = [], []
            for seq, n in step:
                positions += range(fed[seq], fed[seq] + n)
                ids += [(7 * seq + 3 * p) % 500 + 1 for p in range(fed[seq], fed[seq] + n)]
                fed[seq] += n
            backend.prepare(AttentionBatch([n for _, n in step], [fed[seq] for seq, _ in step],
                                           [tables[seq] for seq, _ in step]))
            kinds.append((backend.is_cascade_step, backend.in_place_step() is not None))
            out.append(model.compute_logits(model(torch.tensor(ids), torch.tensor(positions), backend)))
    return torch.cat(out), kv, kinds


def runner_model(tmp_path, smollm_dir, monkeypatch):
    """A tiny 3-layer Llama on Parrot's kernels (skips without them), and the list each
    `parrot.decoder_layers` call appends to."""
    from parrot_kernels import cpu_ops

    if not cpu_ops.load():
        pytest.skip("Parrot CPU kernels not available here")
    path, _ = make_tiny_model(tmp_path, smollm_dir, "llama", num_hidden_layers=3, tie_word_embeddings=True)
    cfg = load_hf_config(path)
    model = load_model(path, cfg, torch.bfloat16, "cpu", 512, progress=False, linear_kernel="parrot")
    calls = []
    runner = torch.ops.parrot.decoder_layers
    monkeypatch.setattr(torch.ops.parrot, "decoder_layers", lambda *a: calls.append(1) or runner(*a))
    return model, cfg, calls


def test_the_step_runner_computes_exactly_what_the_layer_by_layer_path_does(tmp_path, smollm_dir, monkeypatch):
    """`parrot.decoder_layers` (a step's layers in one C++ call) runs the same kernels in the
    same order as the Python path: identical logits and KV cache, bit for bit, for prefill
    chunks, decodes next to them and plain decode steps (GQA: 2 query heads per kv head)."""
    model, cfg, calls = runner_model(tmp_path, smollm_dir, monkeypatch)
    assert model.step_runner
    fast, fast_kv, kinds = run_steps(model, cfg, RUNNER_STEPS)
    assert kinds == [(False, True)] * len(RUNNER_STEPS) and len(calls) == len(RUNNER_STEPS)  # one call a step
    model.step_runner = False
    slow, slow_kv, _ = run_steps(model, cfg, RUNNER_STEPS)
    assert len(calls) == len(RUNNER_STEPS)
    assert torch.equal(fast, slow) and torch.equal(fast_kv, slow_kv)


def test_the_step_runner_merges_cascade_groups_exactly_as_the_python_path(tmp_path, smollm_dir, monkeypatch):
    """Cascade steps whose groups are each one run of rows run in one call too: the private
    level, then each group over its shared blocks merged by log-sum-exp, bit for bit what
    cascade.py's in-place path computes; a group over rows that are not one run keeps the
    Python path."""
    model, cfg, calls = runner_model(tmp_path, smollm_dir, monkeypatch)
    fast, fast_kv, kinds = run_steps(model, cfg, CASCADE_STEPS, forks=(1, 2, 3))
    assert kinds == [(False, True), (True, True), (True, True), (True, False), (True, True)]
    assert len(calls) == 4
    model.step_runner = False
    slow, slow_kv, _ = run_steps(model, cfg, CASCADE_STEPS, forks=(1, 2, 3))
    assert len(calls) == 4
    assert torch.equal(fast, slow) and torch.equal(fast_kv, slow_kv)


def test_the_step_runner_steps_aside_for_weights_it_does_not_run(tmp_path, smollm_dir):
    """A projection with a bias (Qwen2's qkv) keeps the layer-by-layer path, and the
    runner refuses weights that are not 6 per layer plus the final norm, and rows that do
    not cover the step."""
    from parrot_kernels import cpu_ops

    if not cpu_ops.load():
        pytest.skip("Parrot CPU kernels not available here")
    path, _ = make_tiny_model(tmp_path, smollm_dir, "qwen2", tie_word_embeddings=False)
    cfg = load_hf_config(path)
    model = load_model(path, cfg, torch.bfloat16, "cpu", 512, progress=False, linear_kernel="parrot")
    assert model._layer_stack() is None and not model.step_runner
    logits, _, _ = run_steps(model, cfg, RUNNER_STEPS[:2])  # still serves
    assert logits.isfinite().all()
    kv = torch.zeros(cfg.num_layers, 2, 4, 16, cfg.num_kv_heads, cfg.head_dim, dtype=torch.bfloat16)
    x = torch.zeros(1, cfg.hidden_size, dtype=torch.bfloat16)
    one = torch.zeros(1, dtype=torch.long)
    rows = (one, torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, dtype=torch.int32), [], [], [], [], [], [], [])
    with pytest.raises(RuntimeError, match="6 per layer"):
        torch.ops.parrot.decoder_layers(x, [x[0]] * 5, [1, 1, 1, 1], one, model.rope.cos_sin, kv, one, *rows,
                                        cfg.num_heads, 1e-5)
    stack = [x[0]] * (6 * cfg.num_layers + 1)
    with pytest.raises(RuntimeError, match="cover the step"):  # one decode row and a 1-token prefill: 2 rows, not 1
        torch.ops.parrot.decoder_layers(x, stack, [1, 1, 1, 1], one, model.rope.cos_sin, kv, one, *rows[:3],
                                        [0], [1], [1], [one], [], [], [], cfg.num_heads, 1e-5)


@pytest.mark.parametrize("flags,onednn,kernels,want", [
    ({"avx2", "avx512_bf16"}, True, True, "parrot"),  # AVX-512 without AMX: Parrot's kernel first
    ({"avx2"}, False, True, "parrot"),
    ({"avx2", "amx_bf16"}, True, True, "onednn"),  # AMX: oneDNN's tiles first
    ({"avx2", "amx_bf16"}, False, True, "parrot"),
    ({"avx2"}, True, False, "onednn"),  # kernels off: whatever else packs
    ({"avx2"}, False, False, None),
])
def test_auto_linear_kernel_by_cpu(monkeypatch, flags, onednn, kernels, want):
    from parrot.engine import model as model_module
    monkeypatch.setattr(model_module.cpu_ops, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(model_module, "onednn_packs_bf16", lambda: onednn)
    assert model_module.packing_for(torch.bfloat16, "cpu", kernels) == want
    assert model_module.packing_for(torch.float32, "cpu", kernels) is None
    if not kernels:
        with pytest.raises(ValueError, match="not available"):
            model_module.packing_for(torch.bfloat16, "cpu", kernels, "parrot")
