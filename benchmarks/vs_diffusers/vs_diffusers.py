"""Our DiT against diffusers' DiTTransformer2DModel, configured identically, side by side in one run.

    python benchmarks/vs_diffusers/vs_diffusers.py --models DiT-S/2 DiT-B/2 --batch 8            # ALONE on the machine
    python benchmarks/vs_diffusers/vs_diffusers.py --models DiT-S/2 --batch 8 --compile
    python benchmarks/vs_diffusers/vs_diffusers.py --report

For each model: the same weights in both (converted with dit/io/diffusers_transformer.py), the same inputs; timed
in alternation (ours, theirs, ours, ...) so that machine noise hits both alike:
- train: forward, hybrid loss, backward and an AdamW step (fp32; fused AdamW for both);
- sample: one classifier-free-guided denoiser call (the batch doubled with the null class), as a
  sampler makes at every step.
`--compile` compiles the transformer blocks of both. Each (model, step) appends a row to
<out>/results.jsonl (default benchmarks/vs_diffusers) with every timed call of both, the commit, the
machine and the command; tables.py renders images/s of each and the ratio ours / diffusers (> 1:
ours is faster) with a 95% paired bootstrap interval over the alternated calls, and the largest
difference between the two outputs (they compute the same function: the timestep features are
aligned first, see dit/io/diffusers_transformer.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


from dit.analysis.timing import add_speed_args, call_seconds, fake_batch, speed_device
from dit.cli import ArgumentParser, run_cli
from dit.errors import UserError
from dit.eval.records import ResultsLog, existing_log
from dit.eval.tables import benchmark_module
from dit.io.diffusers_transformer import config_to_diffusers, to_diffusers
from dit.networks.conditioning import as_cond
from dit.networks.dit import DiT
from dit.networks.dit_config import preset_config
from dit.processes.gaussian import GaussianDiffusion

OUT = Path(__file__).resolve().parent


class DiffusersAsDiT(torch.nn.Module):
    """diffusers' transformer behind our forward(x, t, cond) signature (what a user of it would write)."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, x, t, cond, force_drop_ids=None):
        cond = as_cond(cond)
        y, drop = cond["y"], cond.get("drop", force_drop_ids)
        if drop is not None:
            y = torch.where(drop == 1, self.transformer.config.num_embeds_ada_norm, y)
        return self.transformer(x, timestep=t, class_labels=y).sample


def pair(name: str, image_size: int, device):
    from diffusers import DiTTransformer2DModel

    cfg = preset_config(name, input_size=image_size // 8)
    torch.manual_seed(0)
    ours = DiT.from_config(cfg)
    with torch.no_grad():  # trained-looking weights: the adaLN-Zero init would make every output 0
        for n, p in ours.named_parameters():
            if n != "pos_embed":
                p.normal_(0, 0.02)
    theirs = DiTTransformer2DModel(**config_to_diffusers(cfg))
    theirs.load_state_dict(to_diffusers(ours.state_dict(), cfg.depth), strict=True)
    for block in theirs.transformer_blocks:  # DiT's sinusoid convention (see dit/io/diffusers_transformer.py)
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    return ours.to(device), DiffusersAsDiT(theirs).to(device)


def compile_both(ours, theirs) -> None:
    """torch.compile every transformer block of both, the same treatment (ours: DiT.compile_blocks)."""
    import torch._dynamo

    # Room for every block's train and no-grad graphs in both (diffusers' blocks recompile per
    # instance; at the default limit of 8 its later blocks would silently run eagerly).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    if not ours.compile_blocks(backward=True):
        raise UserError("--compile: torch.compile does not work here (see the warning above)")
    for block in theirs.transformer.transformer_blocks:
        block.compile()


def compare(name: str, args, device) -> list[dict]:
    ours, theirs = pair(name, args.image_size, device)
    if args.compile:
        compile_both(ours, theirs)
    B = args.batch
    batch = fake_batch(B, args.image_size, device, seed=1)
    x, t, y, noise, drop = (batch[k] for k in ("x", "t", "y", "noise", "drop"))
    diffusion = GaussianDiffusion.from_schedule()
    rows = []

    with torch.no_grad():  # the two compute the same function
        diff = (ours.eval()(x, t.float(), y) - theirs.eval()(x, t.float(), y)).abs().max().item()

    def train_step(model, opt):
        def run():
            loss = diffusion.training_losses(model, x, t, {"y": y, "drop": drop}, noise)["loss"].mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run

    fused = device.type in ("cuda", "cpu")
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-4, fused=fused) for m in (ours, theirs)]
    ours.train(), theirs.train()
    sec = call_seconds([train_step(ours, opts[0]), train_step(theirs, opts[1])], device, args.warmup, args.iters)
    rows.append(_row(name, "train", args, sec, diff))

    from dit.networks.conditioning import unconditional
    from dit.sampling.guidance import guided

    def guided_call(model):
        denoiser = guided(model, y, unconditional(y, ours.num_classes), 4.0)
        tt = t.float()

        def run():
            with torch.no_grad():
                denoiser(x, tt)
        return run

    ours.eval(), theirs.eval()
    sec = call_seconds([guided_call(ours), guided_call(theirs)], device, args.warmup, args.iters)
    rows.append(_row(name, "guided sampling step", args, sec, diff))
    return rows


def _row(name, what, args, sec, diff) -> dict:
    import diffusers

    return {"model": name, "what": what, "batch": args.batch, "image_size": args.image_size, "compile": args.compile,
            "warmup": args.warmup, "ours_seconds": sec[0], "diffusers_seconds": sec[1],
            "max_abs_output_diff": diff, "diffusers": diffusers.__version__}


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_speed_args(p, ["DiT-S/2", "DiT-B/2"], warmup=2, iters=9)
    p.add_argument("--compile", action="store_true", help="torch.compile the blocks of both (warm-up compiles)")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else OUT
    tables = benchmark_module("vs_diffusers", "tables")
    if args.report:
        existing_log(out)
        print(tables.tables(out)["cpu"])
        return
    device, where = speed_device(args)
    if args.iters < 2:
        raise UserError("--iters must be at least 2 (the ratio's interval resamples the calls)")
    log = ResultsLog(out / "results.jsonl", quiet_keys=("ours_seconds", "diffusers_seconds"))
    rows = [log.add(**r) for name in args.models for r in compare(name, args, device)]
    print(f"# {where}; torch {torch.__version__}; batch {args.batch}, fp32" + (", blocks compiled" if args.compile else ", eager"))
    print(tables.markdown(rows))


if __name__ == "__main__":
    sys.exit(run_cli(main))
