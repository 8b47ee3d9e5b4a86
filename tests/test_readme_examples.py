"""README.md's Python examples run as written: each ```python block, with the README's server
address (http://127.0.0.1:8000) replaced by a real `parrot serve`'s, runs in a fresh
interpreter and must exit 0 (and print something, where it prints).

A block that cannot run here says so in the README with a comment line
`# not run by tests: <reason>`; it is reported as skipped, never dropped silently.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
README_URL = "http://127.0.0.1:8000"
SKIP_MARKER = "# not run by tests:"
TIMEOUT_S = 120  # a few seconds each on a 2-core CPU; generous for a loaded machine

_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) for every ```python block."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _FENCE.finditer(text)]


BLOCKS = python_blocks(README.read_text())
BLOCK_IDS = [f"README.md:{line}" for line, _ in BLOCKS]


def skip_reason(code: str) -> str | None:
    for line in code.splitlines():
        if line.strip().startswith(SKIP_MARKER):
            return line.strip()[len(SKIP_MARKER):].strip() or "marked in README"
    return None


def test_readme_has_python_examples_that_compile():
    assert BLOCKS, "no ```python blocks found in README.md"
    for (line, code), block_id in zip(BLOCKS, BLOCK_IDS):
        compile(code, block_id, "exec")


def test_skip_marker_is_read():
    assert skip_reason("import torch\n# not run by tests: needs CUDA\n") == "needs CUDA"
    assert skip_reason("print('hi')  # not a marker\n") is None


@pytest.mark.e2e
@pytest.mark.parametrize("code", [code for _, code in BLOCKS], ids=BLOCK_IDS)
def test_readme_example_runs(code, parrot_server, tmp_path):
    reason = skip_reason(code)
    if reason:
        pytest.skip(f"README says: {reason}")
    script = code.replace(README_URL, parrot_server)
    try:  # cwd outside the repository: the example runs against the installed package
        done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"example did not finish in {TIMEOUT_S} s; stderr:\n{e.stderr}")
    exit_code, stdout, stderr = done.returncode, done.stdout, done.stderr
    assert exit_code == 0, f"exit {exit_code}; stderr:\n{stderr}"
    if "print(" in code:
        assert stdout.strip(), f"printed nothing; stderr:\n{stderr}"
