"""The verdict of scripts/gpu_check.sh: writes OUT/summary.json and exits non-zero, with the
reason on stderr, when a stage failed or timed out or when no test ran.

    python scripts/gpu_check_report.py WORK OUT

WORK holds stages.tsv (one `name rc seconds limit` row per stage that ran, tab-separated),
the stage logs (logs/<stage>.log), the tests' junit XML and the JIT cache listings before
and after the tests. The logs are joined, in stage order, into OUT/stages.log (a device
call brings back few files). A pytest run whose every test skipped exits 0: here it fails,
so a run that tested nothing (flashinfer missing, no GPU) never reads as green.
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

TIMED_OUT = (124, 137)  # timeout's status, and a kill after --kill-after


class Stage(NamedTuple):
    name: str
    rc: int
    seconds: int
    limit: int


def read_stages(work: Path) -> list[Stage]:
    path = work / "stages.tsv"
    rows = path.read_text().splitlines() if path.exists() else []
    return [Stage(name, int(rc), int(secs), int(limit)) for name, rc, secs, limit in (r.split("\t") for r in rows)]


def count_tests(junit: Path) -> dict[str, int] | None:
    """tests, failures, errors, skipped over the junit XML's suites; None without one."""
    if not junit.exists():
        return None
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    keys = ("tests", "failures", "errors", "skipped")
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}


def last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1] if lines else "(no output)"


def verdict(stages: list[Stage], tests: dict[str, int] | None, logs: Path) -> str | None:
    """The reason the check failed, or None when it passed."""
    for stage in stages:
        if stage.rc in TIMED_OUT:
            return f"{stage.name} timed out after {stage.limit} s (see stages.log)"
        if stage.rc != 0:
            return f"{stage.name} failed (exit {stage.rc}): {last_line(logs / f'{stage.name}.log')}"
    if "tests" not in [s.name for s in stages]:
        return "the tests never ran"
    if tests is None or tests["tests"] == 0:
        return "no test was collected"
    if tests["skipped"] == tests["tests"]:
        return f"every test skipped ({tests['tests']}): {last_line(logs / 'tests.log')}"
    return None


def built_during_tests(work: Path) -> list[str]:
    """FlashInfer modules the tests had to compile: missing from the prebuild."""
    before, after = (work / f"jit-{when}-tests.txt" for when in ("before", "after"))
    if not after.exists():
        return []
    seen = set(before.read_text().split()) if before.exists() else set()
    return sorted(set(after.read_text().split()) - seen)


def join_logs(stages: list[Stage], logs: Path, dest: Path) -> None:
    """Every stage's log, in stage order, under a header line each."""
    with dest.open("w") as f:
        for stage in stages:
            log = logs / f"{stage.name}.log"
            f.write(f"===== {stage.name}: exit {stage.rc}, {stage.seconds} s of {stage.limit} s\n")
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            f.write(text if text.endswith("\n") else text + "\n")


def main() -> int:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    stages = read_stages(work)
    tests = count_tests(work / "tests.xml")
    reason = verdict(stages, tests, work / "logs")
    join_logs(stages, work / "logs", out / "stages.log")
    summary = {
        "ok": reason is None,
        "reason": reason,
        "stages": [s._asdict() for s in stages],
        "tests": tests,
        "jit_built_during_tests": built_during_tests(work),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary["jit_built_during_tests"]:
        print(f"compiled during the tests (add to scripts/flashinfer_prebuild.py): "
              f"{summary['jit_built_during_tests']}", file=sys.stderr)
    if reason is not None:
        print(f"GPU CHECK FAILED: {reason}", file=sys.stderr)
        return 1
    print(f"GPU check passed: {tests}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
