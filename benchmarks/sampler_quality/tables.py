"""RESULTS.md's table of benchmarks/sampler_quality (quality vs sampler steps), from results.jsonl and scores/.

Intervals: 95% bootstrap over the samples (the rows' `bootstrap` resamples, seed `bootstrap_seed`),
bias-shifted, distances clipped at 0 (dit/eval/intervals.py). The same index sets are drawn for
every row. Differences to the reference are paired (every sampler drew the same seeds and labels):
class accuracy (Inception Score likewise) by `paired_difference` of the per-sample hits, a Fréchet
distance by the shifted interval of the per-resample difference of the row's and the reference's
distance on the same index set. Verdict per metric: "worse" when the whole interval of the
difference is on the reference's worse side of 0, else "not resolvably worse" (not a test of
equivalence: differences narrower than the interval go unseen).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dit.eval.intervals import LEVEL, fmt_ci, paired_difference, shifted_interval
from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table

LOWER_BETTER = ("fd_shapes", "fid")
KEYS = {"shapes": ("fd_shapes", "class_acc"), "inception": ("fid", "inception_score")}
NAMES = {"fd_shapes": "fd_shapes", "class_acc": "class acc", "fid": "FID", "inception_score": "IS"}
DIGITS = {"fd_shapes": 2, "class_acc": 3, "fid": 2, "inception_score": 3}


def _statistics(metric: str, ref: dict):
    """(scores, idx) -> {metric: value} on a resample (dit/eval/scoring.py's scorers, without their networks)."""
    from dit.eval.metrics import FrechetToReference

    fd_to_ref = FrechetToReference(ref["mu"], ref["sigma"])
    if metric == "shapes":
        return lambda d, idx: {"fd_shapes": fd_to_ref(d["features"][idx]), "class_acc": float(d["hits"][idx].mean())}

    def inception(d, idx):
        import torch
        from torch_fidelity.metric_isc import isc_features_to_metric

        isc = isc_features_to_metric(torch.from_numpy(d["logits"][idx]), splits=10)
        return {"fid": fd_to_ref(d["pool"][idx]), "inception_score": float(isc["inception_score_mean"])}
    return inception


def _load(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k].astype(np.float64) for k in f.files}


def summarise(folder: Path, level: float = LEVEL) -> dict:
    """Every row with its intervals and, against the reference, paired differences and verdicts."""
    folder = Path(folder)
    rows = read_rows(folder / "results.jsonl")
    if not rows:
        return {"rows": [], "keys": (), "ref": None}
    first = rows[0]
    keys = KEYS[first["metric"]]
    resamples, n = first["bootstrap"], first["num_samples"]
    stats = _statistics(first["metric"], _load(folder / "scores" / "reference.npz"))
    rng = np.random.default_rng(first["bootstrap_seed"])
    index_sets = [rng.integers(0, n, n) for _ in range(resamples)]  # the same for every row: paired
    ref_sampler, _, ref_steps = first["reference"].partition(":")
    rows = sorted(rows, key=lambda r: (r["sampler"], r["steps"]))
    data, draws = {}, {}
    for r in rows:
        key = (r["sampler"], r["steps"])
        data[key] = _load(folder / r["scores"])
        resampled = [stats(data[key], idx) for idx in index_sets]
        draws[key] = {k: np.array([d[k] for d in resampled]) for k in keys}
    ref_key = (ref_sampler, int(ref_steps))
    ref = next((r for r in rows if (r["sampler"], r["steps"]) == ref_key), None)
    out = []
    for r in rows:
        key = (r["sampler"], r["steps"])
        row = {k: r[k] for k in ("sampler", "steps", "nfe", "seconds", "images_per_s", *keys)}
        for k in keys:
            row[k + "_ci"] = shifted_interval(draws[key][k], r[k], level, clip=k in LOWER_BETTER)
        if ref is not None and key != ref_key:
            worse = []
            for k in keys:
                if k in ("class_acc",):  # a mean over samples: the per-sample paired difference
                    row[k + "_diff"], row[k + "_diff_ci"] = paired_difference(
                        data[key]["hits"], data[ref_key]["hits"], resamples, first["bootstrap_seed"], level)
                else:
                    point = r[k] - ref[k]
                    row[k + "_diff"] = point
                    row[k + "_diff_ci"] = shifted_interval(draws[key][k] - draws[ref_key][k], point, level)
                lo, hi = row[k + "_diff_ci"]
                if (lo > 0) if k in LOWER_BETTER else (hi < 0):
                    worse.append(NAMES[k])
            row["verdict"] = f"worse ({', '.join(worse)})" if worse else "not resolvably worse"
            row["worse"] = bool(worse)
        elif key == ref_key:
            row["verdict"] = "(reference)"
        out.append(row)
    return {"rows": out, "keys": keys, "ref": next((x for x in out if (x["sampler"], x["steps"]) == ref_key), None),
            "reference": first["reference"], "num_samples": n, "cfg_scale": first["cfg_scale"], "resamples": resamples,
            "lower_better": LOWER_BETTER, "describe": describe(rows), "level": level,
            "load": [r["machine"].get("load_avg_1m") for r in rows if r.get("machine", {}).get("load_avg_1m") is not None]}


def _load_note(load: list[float]) -> str:
    """Seconds are comparable only on a quiet machine: say how loaded it was (1-minute load average per row)."""
    if not load:
        return ""
    quiet = max(load) < 1.5
    return (f" Seconds: 1-minute load average {min(load):.1f}-{max(load):.1f} while timing"
            + ("." if quiet else ", the machine shared with other work: indicative only, compare NFE."))


def render(summary: dict) -> dict[str, str]:
    rows, keys = summary["rows"], summary["keys"]
    if not rows:
        return {}
    ref = summary["ref"]

    def diff(r, k):
        return fmt_ci(r[k + "_diff"], r[k + "_diff_ci"], DIGITS[k], sign=True) if k + "_diff" in r else "-"

    header = ["sampler", "steps", "NFE", "seconds", *(f"{NAMES[k]} [95% CI]" for k in keys),
              *(f"{NAMES[k]} − ref [95% CI]" for k in keys), "verdict"]
    body = [[r["sampler"], r["steps"], f"{r['nfe']:g}", f"{r['seconds']:.1f}",
             *(fmt_ci(r[k], r[k + "_ci"], DIGITS[k]) for k in keys), *(diff(r, k) for k in keys), r.get("verdict", "-")]
            for r in rows]
    head = (f"Measured at {summary['describe']}; {summary['num_samples']} samples, cfg {summary['cfg_scale']:g}. "
            f"Reference {summary['reference']}; differences paired (same seeds and labels), "
            f"{summary['resamples']} bootstrap resamples." + _load_note(summary.get("load") or []) + "\n\n")
    lines = []
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        compared = [r for r in rows if r["sampler"] == sampler and r.get("verdict") != "(reference)"]
        if not compared:
            continue
        ok = [r for r in compared if not r.get("worse")]
        best = min(ok, key=lambda r: r["steps"], default=None)
        if ref is not None and best is not None:
            lines.append(f"{sampler} {best['steps']} steps ({ref['nfe'] / best['nfe']:.0f}x fewer network evaluations)")
        elif ref is not None:
            lines.append(f"{sampler} none")
    tail = ("\nFewest steps not resolvably worse than the reference on every metric (not a test of equivalence: "
            "differences inside the interval go unseen at this N): " + "; ".join(lines) + ".\n") if lines else ""
    return {"samplers": head + markdown_table(header, body, "lrrr" + "l" * (2 * len(keys) + 1)) + tail}


def tables(folder: Path) -> dict[str, str]:
    """RESULTS.md's table of this benchmark ({} until results.jsonl has rows)."""
    return render(summarise(folder))
