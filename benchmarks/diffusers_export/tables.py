"""RESULTS.md's table of benchmarks/diffusers_export/diffusers_export.py, from its results.jsonl.

"psnr": per (steps, cfg), the newest row: stock DiTPipeline against our samples (uint8 PSNR, mean / max
absolute difference in 0..255 levels), the same with its timestep frequencies patched to DiT's, and the
max absolute difference of the float images before quantisation (0..255 levels) for both.
"""

from __future__ import annotations

from pathlib import Path

from dit.eval.records import describe, read_rows
from dit.eval.tables import markdown_table


def _number(x: float) -> str:
    return f"{x:g}"


def _float_diff(x: float) -> str:
    return "0" if x == 0 else f"{x:.2g}" if x < 0.01 else f"{x:.2f}"


def tables(folder: Path) -> dict[str, str]:
    rows = read_rows(Path(folder) / "results.jsonl")
    newest = {}
    for r in rows:
        if r.get("kind") == "psnr":
            newest[(r["steps"], r["cfg"])] = r  # a later row of the same (steps, cfg) replaces an earlier one
    shown = [newest[k] for k in sorted(newest)]
    runs = {r["ckpt"] for r in shown}
    train = [r for r in rows if r.get("kind") == "train" and r.get("run") in runs][-1:]

    def patched(r):
        return "identical" if r["identical_patched"] else f"{r['psnr_patched']:.1f} dB"

    def stock(r):
        return "identical" if r["psnr_stock"] is None else f"{r['psnr_stock']:.1f} dB"

    table = markdown_table(
        ["steps", "cfg", "PSNR stock vs ours", "mean / max abs. difference (0..255)", "float max abs. stock",
         "PSNR patched vs ours", "float max abs. patched"],
        [[r["steps"], _number(r["cfg"]), stock(r), f"{r['mean_abs_stock']:.2f} / {r['max_abs_stock']}",
          _float_diff(r["float_max_abs_stock"]), patched(r), _float_diff(r["float_max_abs_patched"])]
         for r in shown], "rrrlrrr")
    head = f"Measured at {describe(shown + train)}."
    if shown:
        r = shown[0]
        n, seeds = r["samples"], r["seeds"]
        head += (f" {n} samples, seeds {seeds[0]}..{seeds[-1]}, labels {r['labels']}; a {r['params'] / 1e6:.1f}M-parameter"
                 f" latent DiT, {r['image_size']} px images as {'x'.join(map(str, r['latent_shape'][1:]))}x"
                 f"{r['latent_shape'][0]} latents")
        if train:
            t = train[0]
            head += f", trained by `{t['command']}` ({t['train_loop_seconds']:.0f} s in the training loop)"
        head += ". Float columns: the float images before rounding, both clamped to [-1, 1], in 0..255 levels."
    return {"psnr": head + "\n\n" + table}
