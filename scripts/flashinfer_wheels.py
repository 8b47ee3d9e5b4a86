"""Fetch FlashInfer for a GPU machine without network, slimmed to fit a 64 MiB transfer.

Downloads flashinfer-python (pure Python + CUDA sources compiled on first use),
apache-tvm-ffi for CPython 3.12, llguidance (the engine imports it; abi3) and pydantic (the
server's) into `.whl/` (git-ignored), copies SmolLM2's config and tokenizer (not its weights)
into `.whl/smollm2-dummy/` for the apps benchmark there, then rewrites the FlashInfer
wheel without the sources of kernels Parrot never builds: every subfolder of
`flashinfer/data/csrc/` (MoE, GEMM, MLA, model-specific kernels) and the non-Python files
of the experimental and MoE packages. Kept: every Python module (the package imports
them), the top-level `data/csrc` files (paged prefill/decode, cascade merge, page,
sampling) and the headers under `data/`. Prints the sizes.

    .venv/bin/python scripts/flashinfer_wheels.py   # then, on the GPU machine:
    pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site

Only checked for size here: whether a slimmed wheel JIT-builds every kernel Parrot uses
is known only once it has run on a GPU (scripts/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

FLASHINFER = "flashinfer-python==0.7.2"
TVM_FFI = "apache-tvm-ffi>=0.1.11,<0.2"
LLGUIDANCE = "llguidance==1.9.1"  # the version the CPU install resolves; its wheels are abi3
# The server's request models (the device image has no pydantic): for `parrot bench apps` there.
PYDANTIC = ["pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5"]
# SmolLM2's files but its weights: with --load-format dummy, the apps benchmark's model there.
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
DROP_NON_PY_UNDER = ("flashinfer/experimental/", "flashinfer/moe_ep/", "flashinfer/fused_moe/")


def download(dest: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
         "3.12", "--implementation", "cp", *platforms, "-d", str(dest), FLASHINFER, TVM_FFI, *PYDANTIC],
        check=True,
    )
    subprocess.run(  # abi3 on manylinux_2_31, which the platform list above does not name
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), LLGUIDANCE],
        check=True,
    )


def copy_model_files(dest: Path) -> None:
    """The embedded SmolLM2's config and tokenizer into dest/smollm2-dummy (no weights)."""
    import shutil

    from parrot.engine.model_files import resolve_model_dir

    source, _ = resolve_model_dir(None)
    target = dest / "smollm2-dummy"
    target.mkdir(exist_ok=True)
    for name in MODEL_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)


def keep(name: str) -> bool:
    if name.startswith("flashinfer/data/csrc/"):
        return "/" not in name[len("flashinfer/data/csrc/"):]
    if name.startswith(DROP_NON_PY_UNDER):
        return name.endswith(".py")
    return True


def slim(wheel: Path) -> None:
    """Rewrite `wheel` without the dropped files; RECORD lists exactly what is left."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        names = [n for n in src.namelist() if keep(n)]
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        rows = []
        for name in names:
            if name == record:
                continue
            data = src.read(name)
            dst.writestr(src.getinfo(name), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{name},sha256={digest},{len(data)}")
        dst.writestr(record, "\n".join(rows + [f"{record},,"]) + "\n")
    tmp.replace(wheel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(".whl"))
    args = parser.parse_args()
    args.dest.mkdir(exist_ok=True)
    download(args.dest)
    copy_model_files(args.dest)
    for wheel in sorted(args.dest.glob("flashinfer_python-*.whl")):
        before = wheel.stat().st_size
        slim(wheel)
        print(f"{wheel.name}: {before / 2**20:.1f} -> {wheel.stat().st_size / 2**20:.1f} MiB")
    total = sum(p.stat().st_size for p in args.dest.glob("*.whl"))
    print(f"{args.dest}/: {total / 2**20:.1f} MiB in wheels")


if __name__ == "__main__":
    main()
