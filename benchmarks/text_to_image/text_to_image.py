"""Compositional text-to-image benchmark (issue 35): which conditioning of the text DiT follows a prompt's shape,
colour and position, on combinations it saw and on combinations held out of training.

    python benchmarks/text_to_image/text_to_image.py --out benchmarks/text_to_image                  # all, ALONE
    python benchmarks/text_to_image/text_to_image.py --out benchmarks/text_to_image --timing-only    # step costs, alone
    python benchmarks/text_to_image/text_to_image.py --out benchmarks/text_to_image --quality-only --seeds 0  # beside --seeds 1
    python benchmarks/text_to_image/text_to_image.py --out benchmarks/text_to_image --report         # tables and figures

Models: `train.py --arch text-dit` on the captioned scenes (--data shapes-captions, 32 px in 4 x 4 patches, pixel
space), the CPU demo's optimisation (batch 16, AdamW 2e-3, cosine, EMA 0.999) with the flow-ln recipe (rectified
flow, logit-normal t) centred at --logit-mean -1.5 (SD3's shift towards noise: the layout of a scene is decided
at t < ~0.1, where only the words can place it; centred at 0, as first run, the networks learned colour but
ignored the position words: position_check.py), a 2-block text encoder over 16 word tokens, caption dropout
0.1, and one of
    adaln-zero        the pooled caption added to t (the baseline), depth 4
    cross-attention   PixArt-α: cross-attention to the caption, adaLN-single for t, depth 4
    joint             SD3's MMDiT: joint attention, per-stream weights, depth 3 (its blocks hold two streams)
all at width 128 with 2 heads; parameters and forward GFLOPs are reported beside each (the depths bring
them within ~25% and ~10%). Budget: each conditioning trains for --minutes (default 10) of its own measured step
time (timed alone first: rounds of 300-step train.py runs, the median logged rate after 100 steps). Runs are
named by conditioning, setting and seed (tables.run_name); rows record the setting.

Prompts (PROMPTS): canonical captions (shapes_captions.canonical_caption) of 48 single objects and 16 pairs
whose every pair of attributes was rendered in training ("seen"), and as many with one held-out pair each
("held-out": a colour-shape pair or a shape-cell pair never rendered; pairs hold a held-out colour-shape
object), --per-prompt samples each (seeds 0..), Euler-50 with null-text guidance --cfg. The judge
(dit/eval/scene_judge.py) checks shape, colour and position separately, then jointly; its ceiling is
measured on real renders of the same prompts (the "real" rows). Every finished unit is a line of
results.jsonl; an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, run_cli
from dit.data import shapes_captions as sc
from dit.errors import UserError
from dit.eval.records import ResultsLog
from dit.eval.tables import benchmark_module

CONDITIONINGS = {"adaln-zero": 4, "cross-attention": 4, "joint": 3}  # -> depth
TABLES = benchmark_module("text_to_image", "tables")  # the default setting (MINUTES, LOGIT_MEAN) and run names
TRAIN = ["--arch", "text-dit", "--recipe", "flow-ln", "--text-length", "16", "--keep-last", "1", "--log-every", "100",
         "--no-progress", "--ckpt-every", "1000"]
SETS = ("seen", "held-out")
MARKS = ("shape", "colour", "position", "joint", "count")  # the judge's verdicts per sample
SINGLE, PAIRS = 48, 16


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/text_to_image")
    p.add_argument("--conditionings", nargs="+", default=list(CONDITIONINGS), choices=list(CONDITIONINGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--minutes", type=float, default=TABLES.MINUTES, help="training wall-clock per model, from its timed step cost")
    p.add_argument("--logit-mean", type=float, default=TABLES.LOGIT_MEAN, help="train.py --logit-mean: the logit-normal t's "
                   "centre (< 0 draws more noisy times, where the layout is decided)")
    p.add_argument("--per-prompt", type=int, default=4, help="samples per prompt")
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=50, help="Euler steps")
    p.add_argument("--timing-steps", type=int, default=300)
    p.add_argument("--timing-warmup", type=int, default=100, help="steps before the logged rates count")
    p.add_argument("--timing-rounds", type=int, default=2)
    p.add_argument("--scenes", type=int, default=20_000, help="training scenes (train.py --shapes-images)")
    p.add_argument("--reader-steps", type=int, default=600, help="the judge's shape reader's training steps")
    p.add_argument("--quality-only", action="store_true", help="train and score (needs the timing rows); instances "
                   "over disjoint --seeds may run side by side")
    p.add_argument("--timing-only", action="store_true")
    p.add_argument("--report", action="store_true", help="only the tables and figures from results.jsonl")
    args = p.parse_args(argv)
    if args.per_prompt < 1 or args.minutes <= 0 or args.timing_steps < args.timing_warmup + 50 or args.steps < 1 \
            or args.scenes < 16 or args.reader_steps < 1:
        raise UserError("--per-prompt >= 1, --minutes > 0, --timing-steps >= --timing-warmup + 50, --steps >= 1, "
                        "--scenes >= 16 and --reader-steps >= 1, please")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out / "results.jsonl")
    if not args.report:
        write_prompts(out)
        reader = load_reader(out, args.reader_steps)
        score_real(log, reader, out, args)
        if not args.quality_only:
            time_steps(log, out, args)
        if args.timing_only:
            return
        for seed in args.seeds:  # seeds outermost: a partial benchmark already compares every conditioning
            for cond in args.conditionings:
                steps = budget_steps(log, cond, args.minutes)
                run = train(cond, seed, steps, out, args)
                score(log, reader, run, cond, seed, steps, args, out)
    TABLES.figures(out, (args.logit_mean, args.minutes))
    for key, table in TABLES.tables(out, (args.logit_mean, args.minutes)).items():
        print(f"{key}:\n{table}")


def setting(args) -> dict:
    """What a quality row was trained with besides its conditioning and seed (rows without: tables.FIRST_SETTING)."""
    return {"logit_mean": args.logit_mean, "minutes": args.minutes}


def prompt_sets(seed: int = 0) -> dict[str, list[str]]:
    """The benchmark's prompts, fixed by `seed`: SINGLE single objects, then PAIRS pairs, per set (docstring)."""
    rng = np.random.default_rng([seed, 35])

    def obj(kind: str) -> sc.Thing:
        """An object whose pairs are all seen, or that holds exactly one held-out colour or cell pair."""
        while True:
            shape, colour, cell, size = (int(rng.integers(n)) for n in (4, 6, 9, 2))
            held = ((shape, colour) in sc.HELD_OUT_COLOURS, (shape, cell) in sc.HELD_OUT_CELLS)
            if held == {"seen": (False, False), "colour": (True, False), "cell": (False, True)}[kind]:
                return sc.Thing(shape, colour, cell, size, 0, 0, 0, 0)

    def pair(kind: str) -> str:
        while True:
            relation, a, b = int(rng.integers(4)), obj(kind), obj("seen")
            if sc.relation_holds(a, b, relation):
                return sc.canonical_caption([a, b], relation)

    singles = {"seen": [obj("seen") for _ in range(SINGLE)],
               "held-out": [obj("colour" if i % 2 == 0 else "cell") for i in range(SINGLE)]}
    return {s: [sc.canonical_caption([t], None) for t in singles[s]] +
            [pair("seen" if s == "seen" else "colour") for _ in range(PAIRS)] for s in SETS}


def write_prompts(out: Path) -> None:
    """prompts-seen.txt and prompts-held-out.txt: the prompt files sample.py --prompts and evaluate.py read."""
    for name, prompts in prompt_sets().items():
        path = out / f"prompts-{name}.txt"
        text = "\n".join(prompts) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def load_reader(out: Path, steps: int):
    from dit.eval.scene_judge import load_reader as load

    return load(out / "cache", sc.IMAGE_SIZE, steps=steps)


def score_real(log: ResultsLog, reader, out: Path, args) -> None:
    """The judge's ceiling: real renders of each prompt's scene (a pair's cells drawn until its relation holds)."""
    from dit.eval.scene_judge import judge, read_images

    for name, prompts in prompt_sets().items():
        if log.find(kind="real", set=name, per_prompt=args.per_prompt):
            continue
        rng, images, expected = np.random.default_rng([7, SETS.index(name)]), [], []
        for p in prompts:
            things, relation = sc.parse_canonical(p)
            for _ in range(args.per_prompt):
                cells = [t.cell for t in things] if relation is None else _pair_cells(rng, relation)
                placed = [sc.place(rng, t.shape, t.colour, c, t.size) for t, c in zip(things, cells)]
                image, _ = sc.render_scene(placed, rng, sc.IMAGE_SIZE)
                images.append(np.round(image * 255).astype(np.uint8))
                expected.append((things, relation))
        marks = [judge(e, f) for e, f in zip(expected, read_images(np.stack(images), reader))]
        log.add(kind="real", set=name, per_prompt=args.per_prompt, reader_accuracy=reader.heldout_accuracy,
                **{k: [int(m[k]) for m in marks] for k in MARKS})


def _pair_cells(rng: np.random.Generator, relation: int) -> tuple[int, int]:
    while True:
        a, b = int(rng.integers(9)), int(rng.integers(9))
        if sc.relation_holds(sc.Thing(0, 0, a, 0, 0, 0, 0, 0), sc.Thing(0, 0, b, 0, 0, 0, 0, 0), relation):
            return a, b


def time_steps(log: ResultsLog, out: Path, args) -> None:
    """Seconds per training step of each conditioning, alone, in rounds (a disturbance hits all alike)."""
    ttq = benchmark_module("time_to_quality", "time_to_quality")
    todo = [c for c in args.conditionings if not log.find(kind="timing", conditioning=c)]
    rates = {c: [] for c in todo}
    for _ in range(args.timing_rounds if todo else 0):
        for cond in todo:
            run = out / "runs" / f"timing-{cond}"
            cmd = [sys.executable, str(ROOT / "train.py"), *flags(cond, args), "--max-steps", str(args.timing_steps),
                   "--ckpt-every", str(10 * args.timing_steps), "--log-every", str(ttq.TIMING_INTERVAL),
                   "--results-dir", str(out / "runs"), "--run-name", run.name]
            rates[cond] += ttq.logged_rates(cmd, run, args.timing_warmup)
    for cond in todo:
        log.add(kind="timing", conditioning=cond, step_s=1 / statistics.median(rates[cond]), intervals=len(rates[cond]),
                threads=_threads(), **cost(cond))


def flags(cond: str, args) -> list[str]:
    return [*TRAIN, "--conditioning", cond, "--depth", str(CONDITIONINGS[cond]), "--shapes-images", str(args.scenes)]


def cost(cond: str) -> dict:
    """Parameters and forward GFLOPs (2 x MACs, one image with a 16-token caption) of the conditioning's network."""
    import torch

    from dit.analysis.flops import count_forward_macs, count_params
    from dit.networks.text_config import TextConfig
    from dit.networks.text_dit import TextDiT

    net = TextDiT(TextConfig(input_size=32, patch_size=4, in_channels=3, hidden_size=128, depth=CONDITIONINGS[cond],
                             num_heads=2, learn_sigma=False, conditioning=cond, vocabulary=" ".join(sc.vocabulary()),
                             text_length=16))
    ids = net.encode_text(["x " * 16])["text_ids"].clamp(min=1)  # a full caption: every token real
    macs = count_forward_macs(net, cond={"text_ids": ids}, device="cpu")
    return dict(params=count_params(net), gflops=2 * macs / 1e9, text_tokens=int(torch.numel(ids)))


def budget_steps(log: ResultsLog, cond: str, minutes: float) -> int:
    found = log.find(kind="timing", conditioning=cond)
    if not found:
        raise UserError(f"no timing row for {cond} in {log.path}: run once without --quality-only, alone")
    return max(1, round(minutes * 60 / found[-1]["step_s"]))


def train(cond: str, seed: int, steps: int, out: Path, args) -> Path:
    """Train (or resume, or find finished) one run through the real train.py."""
    name = TABLES.run_name(cond, seed, args.logit_mean, args.minutes)
    cmd = [sys.executable, str(ROOT / "train.py"), *flags(cond, args), "--logit-mean", str(args.logit_mean),
           "--seed", str(seed), "--max-steps", str(steps),
           "--results-dir", str(out / "runs"), "--run-name", name]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out / "runs" / name


def score(log: ResultsLog, reader, run: Path, cond: str, seed: int, steps: int, args, out: Path) -> None:
    """Each prompt set on the run's EMA export, through sample.py's --prompts path: --per-prompt samples a
    prompt (seeds 0..), judged; the samples are kept in samples/ for the figure."""
    import torch

    from dit.eval.scene_judge import judge, read_images
    from dit.pipelines.images import sample_prompts
    from dit.pipelines.pipeline import load
    from dit.pipelines.spec import SamplingSpec, Source

    for name, prompts in prompt_sets().items():
        if any(TABLES.setting_of(r) == (args.logit_mean, args.minutes)
               for r in log.find(kind="quality", conditioning=cond, seed=seed, set=name)):
            continue
        asked = [p for p in prompts for _ in range(args.per_prompt)]
        spec = SamplingSpec(sampler="euler", steps=args.steps, cfg_scale=args.cfg, prompts=tuple(asked))
        pipe, spec = load(Source(str(run / "export.safetensors")), spec, torch.device("cpu"))
        t0 = time.perf_counter()
        images = sample_prompts(pipe, spec, 128, "cpu", show=False)
        seconds = time.perf_counter() - t0
        (out / "samples").mkdir(exist_ok=True)
        np.savez_compressed(out / "samples" / f"{run.name}-{name}.npz", images=images, prompts=np.array(asked))
        marks = [judge(sc.parse_canonical(p), f) for p, f in zip(asked, read_images(images, reader))]
        log.add(kind="quality", conditioning=cond, seed=seed, set=name, **setting(args), steps_trained=steps,
                per_prompt=args.per_prompt,
                sampler="euler", sampler_steps=args.steps, cfg=args.cfg, nfe=pipe.count_nfe(spec, "cpu"),
                sampling_s=seconds, **{k: [int(m[k]) for m in marks] for k in MARKS})


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    sys.exit(run_cli(main))
