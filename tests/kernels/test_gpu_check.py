"""The one-shot GPU check, on CPU: the prebuild's module list is exactly what the FlashInfer
backend asks its (stand-in) wrappers for; scripts/gpu_check.sh runs every command under
`timeout` and fails loudly, with the reason, when nothing was tested."""
from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels_reference import BlockPool, forked_batch, private_batch, random_cache
from parrot_kernels.flashinfer_backend import FlashInferAttentionBackend

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prebuild = load_script("flashinfer_prebuild")
report = load_script("gpu_check_report")


def step_kinds(bs: int) -> dict[str, object]:
    rng = random.Random(0)
    return {
        "decode": private_batch([1] * 4, [9, 30, 17, 2], bs, BlockPool(300, rng)),
        "prefill": private_batch([1, 7, 30], [5, 7, 44], bs, BlockPool(300, rng)),
        "one_prefix": forked_batch([(2 * bs, [(5, 1), (1, 1), (bs + 2, 3)])], bs, BlockPool(300, rng)),
        "unrelated_request": forked_batch([(2 * bs, [(7, 1), (bs + 3, 1)]), (3, 1)], bs, BlockPool(300, rng)),
    }


def modules_asked_for(dtype: torch.dtype, head_dim: int) -> set:
    """The batch-prefill/decode modules the backend's wrappers would load over every kind of step."""
    name = str(dtype).removeprefix("torch.")
    asked = set()
    for batch in step_kinds(16).values():
        backend = FlashInferAttentionBackend(random_cache(1, 300, 16, 2, head_dim, dtype), num_q_heads=6)
        backend.prepare(batch)
        q, k, v = (torch.randn(batch.num_tokens, h, head_dim).to(dtype) for h in (6, 2, 2))
        backend.forward(q, k, v, 0)
        for w in [backend._decode_wrapper, *backend._prefill_wrappers]:
            if w is not None:
                # tensor-core decode runs the prefill module; CUDA-core decode has its own
                kind = "batch_prefill" if getattr(w, "use_tensor_cores", True) else "batch_decode"
                asked.add(prebuild.Module(kind, w.backend, name, head_dim))
    return asked


def test_prebuild_is_exactly_the_modules_the_backend_loads(fake_flashinfer, monkeypatch):
    merges = []
    merge = fake_flashinfer.merge_state_in_place
    monkeypatch.setattr(fake_flashinfer, "merge_state_in_place", lambda *a: merges.append(1) or merge(*a))
    asked = set()
    for dtype_name in prebuild.DTYPES:
        for head_dim in prebuild.HEAD_DIMS:
            asked |= modules_asked_for(getattr(torch, dtype_name), head_dim)
    if merges:
        asked.add(prebuild.Module("cascade"))  # merge_state_in_place's module
    assert asked == set(prebuild.required_modules())
    assert prebuild.HEAD_DIMS == (64, 128)  # SmolLM2's, Llama-3's; FA2 needs >= 64


def test_prebuild_specs_against_the_installed_flashinfer(tmp_path, monkeypatch):
    """Where flashinfer imports (the cuda extra), each module's JIT spec generates from the
    installed wheel's sources; needs no GPU."""
    pytest.importorskip("flashinfer", reason="flashinfer not installed (the cuda extra)")
    from flashinfer.jit import env as jit_env

    monkeypatch.setenv("FLASHINFER_CUDA_ARCH_LIST", "9.0a")  # without a GPU, FlashInfer needs a target
    monkeypatch.setattr(jit_env, "FLASHINFER_GEN_SRC_DIR", tmp_path / "generated")
    monkeypatch.setattr(jit_env, "FLASHINFER_JIT_DIR", tmp_path / "cached_ops")
    specs = [prebuild.jit_spec(m) for m in prebuild.required_modules()]
    assert len({s.name for s in specs}) == len(specs)
    for spec in specs:
        assert spec.sources and all(Path(src).exists() for src in spec.sources), spec.name


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(0o755)


def run_check(tmp_path: Path, *, wheels: bool, skipped: int, total: int = 3,
              aot: bytes | None = None) -> tuple[int, str, dict, list[str]]:
    """scripts/gpu_check.sh with stand-ins for python3 (but the report), nvidia-smi, nvcc and
    ninja, and a `timeout` that marks what runs under it; pytest's stand-in writes a junit
    XML of `total` tests, `skipped` of them skipped; `aot`: a carried flashinfer-aot.tar.gz.
    FlashInfer's JIT cache is tmp_path/jit, holding one built module (cached_ops/mod/mod.so).
    Returns (status, stderr, summary, calls)."""
    bin_dir, out, log = tmp_path / "bin", tmp_path / "out", tmp_path / "calls.log"
    bin_dir.mkdir()
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    if wheels:
        (wheel_dir / "flashinfer_python-0.7.2-py3-none-any.whl").write_bytes(b"")
    if aot is not None:
        (wheel_dir / "flashinfer-aot.tar.gz").write_bytes(aot)
    built = tmp_path / "jit" / "90a" / "cached_ops" / "mod"
    built.mkdir(parents=True)
    (built / "mod.so").write_bytes(b"built")
    real_timeout = subprocess.run(["bash", "-c", "command -v timeout"], capture_output=True, text=True).stdout.strip()
    stub(bin_dir, "timeout", f'UNDER_TIMEOUT=1 exec {real_timeout} "$@"')
    for tool in ("nvidia-smi", "nvcc", "ninja"):
        stub(bin_dir, tool, f'echo "{tool} ${{UNDER_TIMEOUT:-0}}" >>{log}; echo {tool} 1.0')
    junit = (f'<testsuites><testsuite tests="{total}" failures="0" errors="0" skipped="{skipped}"/>'
             '</testsuites>')
    stub(bin_dir, "python3", f'''echo "python3 ${{UNDER_TIMEOUT:-0}} $1" >>{log}
case "$1" in *gpu_check_report.py) exec {sys.executable} "$@";; esac
for a in "$@"; do case "$a" in --junitxml=*) echo '{junit}' >"${{a#--junitxml=}}";; esac; done''')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(out), "PARROT_WHEELS": str(wheel_dir),
           "FLASHINFER_WORKSPACE_BASE": str(tmp_path / "jit")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, done.stderr, json.loads((out / "summary.json").read_text()), calls


def test_gpu_check_runs_every_command_under_timeout_and_passes_when_tests_ran(tmp_path):
    status, _, summary, calls = run_check(tmp_path, wheels=True, skipped=1)
    assert status == 0 and summary["ok"], summary
    names = ["install", "probe", "prebuild", "tests", "bench", "engine-llama3-8b", "engine-smollm2-135m",
             "apps"]
    assert [s["name"] for s in summary["stages"]] == names
    assert all(s["limit"] > 0 for s in summary["stages"])
    assert len(calls) >= 7 and all(call.split()[1] == "1" for call in calls), calls  # 1: under timeout


def test_gpu_check_packs_the_built_modules_and_a_carried_pack_replaces_the_prebuild(tmp_path):
    import io
    import tarfile

    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    status, _, summary, _ = run_check(tmp_path / "first", wheels=True, skipped=1)
    assert status == 0, summary
    pack = (tmp_path / "first" / "out" / "flashinfer-aot.tar.gz").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(pack)) as tar:  # FlashInfer's AOT layout
        assert [m.name for m in tar.getmembers() if m.isfile()] == ["./mod/mod.so"]
    status, _, summary, _ = run_check(tmp_path / "second", wheels=True, skipped=1, aot=pack)
    assert status == 0, summary
    assert "prebuild" not in [s["name"] for s in summary["stages"]]
    log = (tmp_path / "second" / "out" / "stages.log").read_text()
    assert "AOT modules:" in log and "mod" in log


def test_gpu_check_fails_loudly_when_every_test_skipped(tmp_path):
    status, stderr, summary, _ = run_check(tmp_path, wheels=True, skipped=3)
    assert status != 0 and not summary["ok"]
    assert "every test skipped" in summary["reason"] and "every test skipped" in stderr


def test_gpu_check_fails_loudly_without_the_wheels(tmp_path):
    status, stderr, summary, calls = run_check(tmp_path, wheels=False, skipped=0)
    assert status != 0 and "no wheels" in summary["reason"] and "no wheels" in stderr
    assert all("gpu_check_report.py" in call for call in calls)  # nothing else ran


def test_report_names_a_timed_out_stage(tmp_path):
    stages = [report.Stage("install", 0, 3, 45), report.Stage("prebuild", 124, 270, 270)]
    assert report.verdict(stages, None, tmp_path) == "prebuild timed out after 270 s (see stages.log)"
