"""RESULTS.md's table of benchmarks/vq_diffusion (full chain against strided steps), from results.jsonl.

Intervals: 95% bootstrap over samples, bias-shifted, paired across rows for the difference to the full
chain, recomputed from the committed per-sample judge output in scores/.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from dit.eval.intervals import verdict
from dit.eval.records import describe, read_rows
from dit.eval.tables import benchmark_module, markdown_table

TARGET = 0.35  # class accuracy at the full chain (issue 19)
STEPS = [100, 50, 25, 10]
RESAMPLES = 2000


def summary(folder: Path) -> tuple[list[dict], list[dict]]:
    folder = Path(folder)
    rows = read_rows(folder / "results.jsonl")
    q = next(r for r in rows if r["kind"] == "quality")
    args = SimpleNamespace(samples=q["samples"], steps=STEPS, cfg=q["cfg"], truncation=q["truncation"],
                           bootstrap=RESAMPLES)
    return benchmark_module("vq_diffusion").summarise(folder, rows, args), rows


def markdown(summary: list[dict], rows: list[dict]) -> str:
    def cell(r, k, fmt=".3f", sign=""):
        if r.get(k) is None:
            return "-"
        ci = r.get(f"{k}_ci")
        return f"{r[k]:{sign}{fmt}}" + (f" [{ci[0]:{sign}{fmt}}, {ci[1]:{sign}{fmt}}]" if ci else "")

    def name(r):
        if r["unit"] == "ceiling":
            return "tokenizer reconstructions (ceiling)"
        return f"{r['steps']} steps" + (" (full chain, T = 100)" if r["steps"] == 100 else " (strided)")

    table = markdown_table(
        ["configuration", "class acc [95% CI]", "fd_shapes [95% CI]", "acc − full chain [95% CI]",
         "seconds for N samples", "s / sample"],
        [[name(r), cell(r, "class_acc"), cell(r, "fd_shapes", ".2f"), cell(r, "acc_vs_full", sign="+"),
          "-" if r.get("seconds") is None else f"{r['seconds']:.1f}",
          "-" if r.get("seconds_per_sample") is None else f"{r['seconds_per_sample']:.3f}"] for r in summary])
    full = next(r for r in summary if r["steps"] == 100)
    return (f"N = {full['samples']} samples per row; {describe(rows)}; intervals recomputed from the committed "
            "per-sample scores.\n\n" + table +
            f"\nTarget class acc >= {TARGET} at the full chain: "
            f"{verdict(full['class_acc_ci'], '>=', TARGET)} ({cell(full, 'class_acc')}).\n")


def tables(folder: Path) -> dict[str, str]:
    return {"steps": markdown(*summary(folder))}
