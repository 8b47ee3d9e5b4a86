"""`parrot bench apps --smoke` end to end: the real command, its own two servers (prefix
cache on, then off), every workload in all three modes. Marked e2e (about a minute)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from parrot.bench.workloads import WORKLOADS

pytestmark = pytest.mark.e2e

MODES = ("parrot", "baseline", "baseline+cache")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-apps")
    proc = subprocess.run([sys.executable, "-m", "parrot", "bench", "apps", "--smoke",
                           "--workload", "all", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "apps.json").read_text()), proc.stdout


def test_every_workload_ran_in_every_mode(smoke_run):
    _, data, stdout = smoke_run
    assert list(data["summary"]) == list(WORKLOADS)
    for name, w in data["summary"].items():
        assert set(w["modes"]) == set(MODES), name
        assert f"| {name} | parrot |" in stdout


def test_all_modes_generate_the_same_tokens(smoke_run):
    _, data, _ = smoke_run
    for name, w in data["summary"].items():
        counts = {mode: m["generated_tokens"] for mode, m in w["modes"].items()}
        assert all(c == [w["generated_tokens"]] for c in counts.values()), (name, counts)


def test_parrot_prefills_less_where_prefixes_are_shared(smoke_run):
    _, data, _ = smoke_run
    for name, w in data["summary"].items():
        if not WORKLOADS[name].shares_prefix:
            continue
        parrot, baseline = (w["modes"][m]["prefill_tokens"] for m in ("parrot", "baseline"))
        assert parrot < baseline, (name, parrot, baseline)
        assert w["ratios"]["prefill_parrot/baseline"] < 1


def test_kv_is_free_after_every_run_and_latencies_are_recorded(smoke_run):
    _, data, _ = smoke_run
    for run in data["runs"]:
        assert run["used_blocks_after"] == 0, run
        assert run["server_cpu_s"] > 0, run  # the bench started the servers: CPU is known
        assert run["samples"] and all(s["end"] >= s["start"] for s in run["samples"]), run
    for w in data["summary"].values():
        for m in w["modes"].values():
            assert m["kinds"][w["primary_kind"]]["latency_p50_s"] > 0


def test_outputs_written(smoke_run):
    out, data, _ = smoke_run
    assert (out / "apps.md").read_text().startswith("| workload | mode |")
    assert data["meta"]["num_cpus"] and data["meta"]["command"].startswith("parrot bench apps")
    if importlib.util.find_spec("matplotlib"):
        assert all((out / f"{name}.png").stat().st_size > 0 for name in WORKLOADS)
        assert (out / "summary.png").exists()
