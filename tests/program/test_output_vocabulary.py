"""The shared vocabulary (parrot/protocol): one list of names both sides read, owned by neither."""
from __future__ import annotations

import ast
import sys
from dataclasses import fields
from pathlib import Path

from parrot.engine.sampling_params import SamplingParams
from parrot.program.output import Output
from parrot.protocol.sampling import CONSTRAINT_FIELDS, SAMPLING_FIELDS

PARROT = Path(__file__).resolve().parents[2] / "parrot"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_output_settings_are_the_protocol_names():
    assert tuple(f.name for f in fields(Output)) == SAMPLING_FIELDS + CONSTRAINT_FIELDS


def test_the_server_accepts_every_sampling_name_the_client_sends():
    accepted = {f.name for f in fields(SamplingParams)}
    assert set(SAMPLING_FIELDS) <= accepted, set(SAMPLING_FIELDS) - accepted
    sent = Output(max_tokens=3, temperature=0.5, top_p=0.9, top_k=4, seed=1, stop="x",
                  stop_token_ids=[2], ignore_eos=True, min_tokens=1, presence_penalty=0.1,
                  frequency_penalty=0.2, repetition_penalty=1.1).to_json()
    assert set(sent) == set(SAMPLING_FIELDS)
    SamplingParams(**sent)  # the engine takes the client's values as they are sent


def test_protocol_imports_only_the_standard_library_and_itself():
    for path in sorted((PARROT / "protocol").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name.startswith("parrot.protocol") \
                or top == "__future__", f"{path.name} imports {name}"


def test_server_side_never_imports_the_client_package():
    for layer in ("engine", "manager", "server"):
        for path in sorted((PARROT / layer).rglob("*.py")):
            bad = {n for n in _imports(path) if n == "parrot.program" or
                   n.startswith("parrot.program.")}
            assert not bad, f"{layer}/{path.name} imports {sorted(bad)}"
