"""RESULTS.md's table of benchmarks/flow_closed_forms/flow_closed_forms.py, from its results.jsonl."""

from __future__ import annotations

import math
import re
from pathlib import Path

from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table


def percent(x: float) -> str:
    """A relative error in percent, three decimals, or one significant digit below 0.001%."""
    p = 100 * x
    decimals = 3 if p == 0 or abs(p) >= 0.00095 else min(6, -math.floor(math.log10(abs(p))))
    return f"{p:+.{decimals}f}%"


def pair(values: list[float]) -> str:
    return ", ".join(percent(v) for v in values)


def number(v: float) -> str:
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{v:g}").replace("e+", "e")  # 1e-06 -> 1e-6


def label(r: dict) -> str:
    if r["steps"] is not None:
        return f"{r['label']}, {r['steps']:,} steps"
    options = r.get("options") or {}
    if "atol" in options and options.get("atol") == options.get("rtol"):
        return f"{r['label']}, atol = rtol = {number(options['atol'])}"
    if options:
        return f"{r['label']}, " + ", ".join(f"{k} = {number(v)}" for k, v in options.items())
    return r["label"]


def tables(folder: Path) -> dict[str, str]:
    rows = read_rows(Path(folder) / "results.jsonl")
    samples = sorted({r["samples"] for r in rows})
    table = markdown_table(
        ["sampler (linear path, velocity)", "NFE", "variance, relative error (dim 1, dim 2)",
         "mean, relative error (dim 1, dim 2)"],
        [[label(r), f"{r['nfe']:,}" if r["nfe"] else "–", pair(r["var_rel_err"]), pair(r["mean_rel_err"])]
         for r in rows], "lrrr")
    return {"samplers": f"Measured at {describe(rows)}; {', '.join(f'{n:,}' for n in samples)} samples, "
                        f"seed {', '.join(str(s) for s in sorted({r['seed'] for r in rows}))}.\n\n" + table}
