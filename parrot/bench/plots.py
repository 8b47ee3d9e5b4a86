"""PNG plots of a `parrot bench apps` summary (matplotlib, the `bench` extra)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from parrot.bench.runner import BASELINE, BASELINE_CACHE, PARROT

COLORS = {PARROT: "#2a9d8f", BASELINE: "#e76f51", BASELINE_CACHE: "#f4a261"}


def write_plots(summary: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    paths = [_workload_plot(name, w, out / f"{name}.png") for name, w in summary.items()]
    if any(w["ratios"] for w in summary.values()):
        paths.append(_speedup_plot(summary, out / "summary.png"))
    return paths


def _workload_plot(name: str, w: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    modes = list(w["modes"])
    colors = [COLORS.get(m, "grey") for m in modes]
    kinds = sorted({k for m in w["modes"].values() for k in m["kinds"]})
    fig, axes = plt.subplots(1, 2 + len(kinds), figsize=(4.2 * (2 + len(kinds)), 3.6))
    ax = axes[0]
    ax.bar(modes, [w["modes"][m]["seconds_median"] for m in modes], color=colors)
    for i, m in enumerate(modes):  # every repeat as a dot over its median bar
        ax.plot([i] * len(w["modes"][m]["seconds"]), w["modes"][m]["seconds"], "k.", ms=4)
    ax.set_title("end-to-end time (s)")
    ax = axes[1]
    ax.bar(modes, [w["modes"][m]["prefill_tokens"] or 0 for m in modes], color=colors)
    ax.set_title("prefill tokens computed")
    for ax, kind in zip(axes[2:], kinds):
        _latency_panel(ax, w, modes, kind)
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=15)
    fig.suptitle(f"{w['title']} ({w['num_calls']} calls, {w['generated_tokens']} tokens "
                 "generated per run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency_panel(ax: Any, w: dict[str, Any], modes: list[str], kind: str) -> None:
    """p50 bars with whiskers to p90, per mode: seconds, or ms/token for streamed chats."""
    key, label = ("per_token", "ms per token") if kind in ("chat", "request") else \
        ("latency", "s")
    unit = "ms" if key == "per_token" else "s"
    p50, p90 = [], []
    for m in modes:
        stats = w["modes"][m]["kinds"].get(kind, {})
        p50.append(stats.get(f"{key}_p50_{unit}") or 0)
        p90.append(stats.get(f"{key}_p90_{unit}") or 0)
    errors = [[0] * len(modes), [max(b - a, 0) for a, b in zip(p50, p90)]]
    ax.bar(modes, p50, yerr=errors, capsize=4, color=[COLORS.get(m, "grey") for m in modes])
    ax.set_title(f"{kind} latency, {label} (p50, p90)")


def _speedup_plot(summary: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.8))
    width = 0.38
    for j, base in enumerate((BASELINE, BASELINE_CACHE)):
        values = [1 / r if (r := summary[n]["ratios"].get(f"seconds_parrot/{base}")) else 0
                  for n in names]
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        ax.bar(xs, values, width, label=f"vs {base}", color=COLORS[base])
        for x, v in zip(xs, values):
            ax.annotate(f"{v:.2f}x", (x, v), ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("speedup of parrot (end-to-end)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
