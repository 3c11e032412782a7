"""Do the text DiTs read the position words? The same seeds drawn with three prompts that differ only in the
position, on the seed-0 models of text_to_image.py (of a setting: its default, or --logit-mean 0 --minutes 20,
the first); prints each sample's cell (the judge's) and how many seeds land in the same cell under all three
prompts (16 of 16: the words are ignored).

    python benchmarks/text_to_image/position_check.py --out benchmarks/text_to_image
    python benchmarks/text_to_image/position_check.py --out benchmarks/text_to_image --logit-mean 0 --minutes 20
"""

from __future__ import annotations

import sys
from pathlib import Path

from dit.cli import ArgumentParser, run_cli
from dit.errors import UserError
from dit.eval.tables import benchmark_module

PLACES = ("at the top left", "at the bottom right", "in the center")


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/text_to_image")
    p.add_argument("--conditionings", nargs="+", default=["adaln-zero", "joint"])
    p.add_argument("--seeds", type=int, default=16)
    tables = benchmark_module("text_to_image", "tables")
    p.add_argument("--logit-mean", type=float, default=tables.LOGIT_MEAN, help="the setting's (text_to_image.py)")
    p.add_argument("--minutes", type=float, default=tables.MINUTES, help="the setting's (text_to_image.py)")
    args = p.parse_args(argv)
    import torch

    from dit.eval.scene_judge import find_objects
    from dit.pipelines.images import sample_prompts
    from dit.pipelines.pipeline import load
    from dit.pipelines.spec import SamplingSpec, Source

    for cond in args.conditionings:
        run = Path(args.out) / "runs" / tables.run_name(cond, 0, args.logit_mean, args.minutes) / "export.safetensors"
        if not run.is_file():
            raise UserError(f"no {run}: run text_to_image.py first")
        cells = {}
        for where in PLACES:
            spec = SamplingSpec(sampler="euler", steps=30, cfg_scale=3.0,
                                prompts=tuple([f"a large red circle {where}"] * args.seeds))
            pipe, spec = load(Source(str(run)), spec, torch.device("cpu"))
            images = sample_prompts(pipe, spec, args.seeds, "cpu", show=False)
            cells[where] = [f[0].cell if f else -1 for f in (find_objects(i)[0] for i in images)]
        same = sum(len({cells[w][i] for w in PLACES}) == 1 for i in range(args.seeds))
        print(f"{cond}: {cells}; the same cell under all three prompts for {same} of {args.seeds} seeds")


if __name__ == "__main__":
    sys.exit(run_cli(main))
