"""The video benchmark on the `video-cpu` model: generation, prediction, and the factorisation and
conditioning studies, all measured with the offline moving-shapes metrics. Run it ALONE.

    python benchmarks/video_cpu/video_cpu.py --out benchmarks/video_cpu             # everything (hours on 2 cores)
    python benchmarks/video_cpu/video_cpu.py --out benchmarks/video_cpu --report    # the tables again

Every model is trained by the real train.py (`video-cpu`, the same --max-steps for all) and sampled
alike (--sampler, default the process's Euler, --steps, cfg --cfg). Models (MODELS):
    main            interleaved, in-place given frames, issue 15's preset (STUDY: every model's base)
    no-temporal     the same without temporal parts: what time mixing buys
    <factorisation> late-fusion, factorized-attention, split-heads, at the depth whose parameter
                    count is the nearest to main's (the table shows both)
    <conditioning>  replace, concat, adaln, cross-attention on VDT's mask mix (--video-masks vdt, where
                    prediction is learned), at the width (a multiple of 4) nearest main's parameter
                    count; no-temporal-vdt: the same mix without temporal parts
Measured (dit/eval/video_metrics.py; 95% bootstrap intervals over clips, bias-shifted) on --clips (400)
for main's generation and prediction, --study-clips (200) for the rest; each study model runs the
tasks its comparison needs:
    generation   class-conditional clips (balanced labels, seeds 0..N-1): per-frame class
                 accuracy, coherent motion, clip Fréchet distance
    prediction   held-out real clips (dataset seed 1; training uses seed 0), frames 0-3 given:
                 direction agreement of frames 4-7 with the given frames, mean centroid error (px)
                 against the true continuation; "unconditional" draws the same clips with nothing
                 given; backward prediction (4-7 given) and interpolation (0, 4, 7) for main, each
                 beside the trivial completion (repeat-given: the nearest given frame copied)
Every finished unit is a line of results.jsonl, so an interrupted run continues where it stopped; its
per-clip scores go to scores/<model>-<task>-<clips>[-speedK].npz (committed with the rows).

    python benchmarks/video_cpu/video_cpu.py --experiment RUN_DIR --clips 200 --tasks generation prediction

scores a video run trained elsewhere (train.py video-cpu with other flags) by the same protocol, on
clips at the run's --shapes-speed (the judges and held-out clips move as its data does), into
experiments.jsonl, beside rows without a network on the same clips: the held-out clips' own
generation metrics (REAL: the ceiling) and both completions of dit/eval/baselines.py (copy the
nearest given frame, and the constant-velocity tracker).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

from dit.cli import ArgumentParser, run_cli  # noqa: E402
from dit.errors import UserError  # noqa: E402
from dit.eval.records import ResultsLog, read_rows  # noqa: E402
from dit.eval.tables import benchmark_module  # noqa: E402

# The studies' setting, fixed whatever the preset becomes: issue 15's preset (speed 1, three clips in four
# with nothing given, from scratch), so that results.jsonl stays reproducible; MODELS' flags come after.
STUDY = ["--shapes-speed", "1", "--video-masks", "vdt-uncond:0.75", "--init-from", "none"]
VDT_MIX = ["--video-masks", "vdt"]
MODELS = {
    "main": [],
    "no-temporal": ["--temporal", "false"],
    "late-fusion": ["--factorization", "late-fusion"],
    "factorized-attention": ["--factorization", "factorized-attention"],
    "split-heads": ["--factorization", "split-heads"],
    # The conditioning study asks VDT's question in VDT's setting, its own mask mix: with the preset's
    # (three clips in four with nothing given) prediction stays at chance on this budget, so the
    # methods could not differ (RESULTS.md, "Video"). `replace` is their in-place baseline.
    "replace": VDT_MIX,
    "concat": ["--given-conditioning", "concat", *VDT_MIX],
    "adaln": ["--given-conditioning", "adaln", *VDT_MIX],
    "cross-attention": ["--given-conditioning", "cross-attention", *VDT_MIX],
    "no-temporal-vdt": ["--temporal", "false", *VDT_MIX],  # what time mixing buys prediction
}
CONDITIONING = ("replace", "concat", "adaln", "cross-attention")
BASELINE = "repeat-given"  # no network: every other frame is a copy of the nearest given one (main's tasks' floor)
TRACKER = "constant-velocity"  # no network: the given frames' track extrapolated (dit/eval/baselines.py)
REAL = "real-clips"  # the held-out clips themselves, generation's metrics: the ceiling at a run's speed
TASKS = {"prediction": [0, 1, 2, 3], "backward": [4, 5, 6, 7], "interpolation": [0, 4, 7], "unconditional": []}
TASK_NAMES = ("generation", *TASKS)
LEVEL = 0.95
SHARES = {"class_acc", "all_frames_correct", "frames_agree", "motion_confidence", "motion_confident", "coherent_motion",
          "direction_agree_given", "direction_agree_true"}  # their intervals are clipped to [0, 1]


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/video_cpu")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--max-steps", type=int, default=None, help="training steps of every model (default: video-cpu's)")
    p.add_argument("--clips", type=int, default=400, help="clips of main's generation and prediction")
    p.add_argument("--study-clips", type=int, default=200, help="clips of main's other tasks and of the other models")
    p.add_argument("--sampler", default=None, help="default: the video-cpu process's (flow: euler)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--judge-steps", type=int, default=None, help="training steps of both judges (default: theirs)")
    p.add_argument("--judge-clips", type=int, default=None, help="clips the judges train on and the reference holds "
                                                                  "(default: the metric's; smoke tests use fewer)")
    p.add_argument("--experiment", metavar="RUN", help="score this trained video run instead of training the models; "
                                                        "rows go to experiments.jsonl")
    p.add_argument("--tasks", nargs="+", choices=list(TASK_NAMES), default=["generation", "prediction"],
                   help="the tasks --experiment scores (on --clips clips)")
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    if min(args.clips, args.study_clips) < 10 or args.steps < 1 or (args.max_steps is not None and args.max_steps < 1):
        raise UserError("--clips and --study-clips >= 10, --steps >= 1 and --max-steps >= 1, please")
    from dit.sampling import check_sampler, default_sampler
    from dit.training.config import from_preset

    preset = from_preset("video-cpu")
    args.sampler = args.sampler or default_sampler(preset.process)
    check_sampler(preset.make_process(), args.sampler, args.steps)  # before hours of training
    out = Path(args.out)
    if args.experiment:
        return experiment(Path(args.experiment), out, args)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    if not args.report:
        metric, real = make_metric(out, max(args.clips, args.study_clips), args.judge_steps, args.judge_clips)
        for name in args.models:
            run = train(name, out, args)
            for task in tasks_of(name):
                # Read again before each unit: streams on other --models append to the same log meanwhile.
                if any(r["model"] == name and r["task"] == task for r in read_rows(log)):
                    continue
                _append(log, evaluate(name, run, task, metric, real, clips_of(name, task, args), args))
        if "main" in args.models:
            for name in (BASELINE, TRACKER):
                for task in ("prediction", "backward", "interpolation"):
                    if not any(r["model"] == name and r["task"] == task for r in read_rows(log)):
                        _append(log, baseline(name, task, metric, real, clips_of("main", task, args), args))
    rows = read_rows(log)
    for r in rows:  # rows from before the cost was recorded: counted from their runs for the table
        if "gmacs" not in r and (out / "runs" / r["model"] / "config.json").is_file():
            r["gmacs"] = clip_gmacs(out / "runs" / r["model"])
    tables = benchmark_module("video_cpu", "tables")
    print(tables.markdown(rows, [*MODELS, BASELINE, TRACKER], list(TASK_NAMES)))
    print(tables.experiments_markdown(read_rows(out / "experiments.jsonl")))


def _append(log: Path, row: dict) -> None:
    """One finished unit: a line of the log (what a rerun skips) with its commit, machine and command."""
    ResultsLog(log).add(**row)


def experiment(run: Path, out: Path, args) -> None:
    """Score one finished video run on args.tasks (args.clips clips each) into experiments.jsonl."""
    config = run / "config.json"
    if not config.is_file() or json.loads(config.read_text()).get("arch") != "video-dit":
        raise UserError(f"--experiment {run}: not a video run directory (no config.json of --arch video-dit)")
    if not (run / "export.safetensors").is_file():
        raise UserError(f"--experiment {run}: the run has not finished (no export.safetensors); resume its training")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "experiments.jsonl"
    speed = json.loads(config.read_text()).get("shapes_speed", 1.0)
    metric, real = make_metric(out, args.clips, args.judge_steps, args.judge_clips, speed)
    key = lambda r: (r["model"], r["task"], r["clips"], r.get("shapes_speed", 1.0))  # noqa: E731
    units = ([(run.name, t) for t in args.tasks] + [(REAL, "generation")] * ("generation" in args.tasks)
             + [(b, t) for b in (BASELINE, TRACKER) for t in args.tasks if t in TASKS and t != "unconditional"])
    for name, task in units:
        if any(key(r) == (name, task, args.clips, speed) for r in read_rows(log)):
            print(f"{name} {task} on {args.clips} clips at speed {speed:g}: already in {log}")
            continue
        row = (evaluate(run.name, run, task, metric, real, args.clips, args) if name == run.name
               else baseline(name, task, metric, real, args.clips, args))
        _append(log, {**row, "shapes_speed": speed})


def clips_of(name: str, task: str, args) -> int:
    """--clips for the acceptance rows (main's generation and prediction), --study-clips for the rest."""
    return args.clips if name == "main" and task in ("generation", "prediction") else args.study_clips


def tasks_of(name: str) -> list[str]:
    if name == "main":
        return ["generation", "prediction", "unconditional", "backward", "interpolation"]
    if name in (*CONDITIONING, "no-temporal-vdt"):
        return ["prediction"]
    return ["generation", "prediction"]


def train(name: str, out: Path, args) -> Path:
    """Train (or resume, or find finished) one model through the real train.py."""
    extra = MODELS[name] + (["--max-steps", str(args.max_steps)] if args.max_steps else [])
    if name in ("late-fusion", "factorized-attention", "split-heads"):
        extra += ["--depth", str(matched_depth(name))]
    width = matched_width(name) if name in CONDITIONING else preset_width()
    if width != preset_width():
        extra += ["--hidden-size", str(width)]
    cmd = [sys.executable, str(ROOT / "train.py"), "video-cpu", "--results-dir", str(out / "runs"), "--run-name", name,
           "--keep-last", "1", "--no-progress", "--sample-sampler", args.sampler, "--sample-steps", str(args.steps),
           "--sample-cfg", str(args.cfg), *STUDY, *extra]
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise UserError(f"training {name} failed (output above); rerun the benchmark to resume it")
    return out / "runs" / name


@functools.lru_cache(maxsize=None)  # each count builds a network; the matched searches ask again
def parameters(factorization: str = "interleaved", depth: int | None = None, conditioning: str = "replace",
               width: int | None = None) -> int:
    from dit.networks.video_config import VideoConfig
    from dit.networks.video_dit import VideoDiT
    from dit.training.config import PRESETS

    p = PRESETS["video-cpu"]
    cfg = VideoConfig(input_size=p["image_size"], patch_size=2, in_channels=3, hidden_size=width or p["hidden_size"],
                      depth=depth or p["depth"], num_heads=p["num_heads"], num_classes=10, frames=p["frames"],
                      factorization=factorization, given_conditioning=conditioning)
    return sum(t.numel() for t in VideoDiT(cfg).parameters())


def preset_width() -> int:
    from dit.training.config import PRESETS

    return PRESETS["video-cpu"]["hidden_size"]


def matched_depth(factorization: str) -> int:
    """The depth whose parameter count is nearest the main (interleaved) model's."""
    target = parameters()
    return min(range(1, 17), key=lambda d: abs(parameters(factorization, d) - target))


def matched_width(conditioning: str) -> int:
    """The width (a multiple of 4 for the 2-D sin-cos table, of the heads for attention) whose parameter
    count is nearest the main (in-place) model's: cross-attention's extra layers cost about 4 D^2 a block."""
    from dit.training.config import PRESETS

    heads, target = PRESETS["video-cpu"]["num_heads"], parameters()
    widths = [w for w in range(preset_width() // 2, 2 * preset_width() + 1, 4) if w % heads == 0]
    return min(widths, key=lambda w: (abs(parameters(conditioning=conditioning, width=w) - target),
                                      w != preset_width()))


def make_metric(out: Path, n: int, judge_steps: int | None = None, judge_clips: int | None = None,
                speed: float = 1.0):
    """The moving-shapes metric and `n` held-out real clips (dataset seed 1; training renders seed 0), both
    at `speed` (train.py --shapes-speed)."""
    from dit.data.shapes_video import cached_uint8_clips
    from dit.eval.video_metrics import VideoShapesMetric
    from dit.training.config import PRESETS

    size, frames = PRESETS["video-cpu"]["image_size"], PRESETS["video-cpu"]["frames"]
    clips, labels, _ = cached_uint8_clips(n, size, frames, 1, out / "cache", speed)  # n: the most any model uses
    real = (clips.permute(0, 1, 3, 4, 2).numpy(), labels.numpy())  # (N, F, H, W, 3)
    sizes = {} if judge_clips is None else {"judge_clips": judge_clips, "reference_clips": judge_clips}
    return VideoShapesMetric(size, frames, out / "cache", frame_judge_steps=judge_steps, motion_steps=judge_steps,
                             speed=speed, **sizes), real


def generate(run: Path, labels, given: list[int] | None, real, args) -> np.ndarray:
    import torch

    from dit.autoencoders.pixels import from_uint8
    from dit.autoencoders import load_autoencoder
    from dit.data.video_masks import frames_mask
    from dit.io.checkpoint import load_model
    from dit.processes import process_from_meta
    from dit.sampling.generate import generate_images

    model, ckpt = load_model(str(run))
    model.eval()
    process, vae = process_from_meta(ckpt.meta), load_autoencoder("none")
    F_, _, side, _ = model.input_shape
    out = []
    for a in range(0, len(labels), 100):
        b = min(a + 100, len(labels))
        cond = None
        if given is not None:
            mask = torch.from_numpy(frames_mask(given, F_, side)).expand(b - a, F_, 1, side, side)
            cond = (mask, from_uint8(torch.from_numpy(real[a:b]).permute(0, 1, 4, 2, 3)))
        with torch.no_grad():
            out.append(generate_images(model, vae, process, range(a, b), labels[a:b], args.sampler, args.steps,
                                       args.cfg, given=cond))
    return np.concatenate(out)


def evaluate(name: str, run: Path, task: str, metric, real, n: int, args) -> dict:
    """One (model, task) row on n clips: the point estimates and their bootstrap intervals."""
    clips, labels = real
    config = json.loads((run / "config.json").read_text())
    row = {"model": name, "task": task, "params": parameters_of(run), "gmacs": clip_gmacs(run),
           "steps_trained": config["max_steps"],
           "process": config["process"], "global_batch_size": config["global_batch_size"],
           "video_masks": config.get("video_masks", "vdt"), "init_from": config.get("init_from", ""),
           "factorization": config.get("factorization"), "given_loss_weight": config.get("given_loss_weight", 1.0),
           "sampler": args.sampler, "sampler_steps": args.steps, "cfg": args.cfg, "clips": n}
    if task == "generation":
        gen_labels = np.arange(n) % 10
        data = metric.per_sample(generate(run, gen_labels, None, None, args), gen_labels)
        return {**row, **with_intervals(metric.statistics, data, args.bootstrap),
                "scores": keep_scores(args, name, task, n, metric.speed, data)}
    given = TASKS["prediction"] if task == "unconditional" else TASKS[task]
    gen = generate(run, labels[:n], None if task == "unconditional" else given, clips[:n], args)
    return {**row, **score_completion(name, task, gen, clips[:n], metric, args)}


def score_completion(name: str, task: str, gen: np.ndarray, real: np.ndarray, metric, args) -> dict:
    """A completion task's metrics on generated clips `gen` against the real `real` (N, F, H, W, 3), and
    where its per-clip scores are kept."""
    given = TASKS["prediction"] if task == "unconditional" else TASKS[task]
    if task in ("prediction", "unconditional"):
        data = metric.prediction_per_sample(gen, real, len(given))
    elif task == "backward":  # time-reversed, it is a prediction from the first frames
        data = metric.prediction_per_sample(gen[:, ::-1].copy(), real[:, ::-1].copy(), len(given))
    else:
        data = interpolation_errors(gen, real, given)
    stats = metric.prediction_statistics if task != "interpolation" else _mean_error
    return {**with_intervals(stats, data, args.bootstrap), "scores": keep_scores(args, name, task, len(gen),
                                                                               metric.speed, data)}


def keep_scores(args, name: str, task: str, n: int, speed: float, data: dict) -> str:
    """The per-clip scores behind a row's intervals, written to <out>/scores/ (committed beside the rows):
    floats as float32, booleans as uint8. Returns the path in <out>."""
    from dit.data.shapes_video import speed_tag

    rel = Path("scores") / f"{name}-{task}-{n}{speed_tag(speed)}.npz"
    arrays = {k: np.asarray(v) for k, v in data.items()}
    arrays = {k: v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.uint8) if v.dtype == bool else v
              for k, v in arrays.items()}
    (Path(args.out) / rel).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(Path(args.out) / rel, **arrays)
    return str(rel)


def baseline(name: str, task: str, metric, real, n: int, args) -> dict:
    """A network-free row on the first n held-out clips (those the models get): for a completion task,
    BASELINE (copy the nearest given frame) or TRACKER (constant velocity); REAL: the clips' own
    generation metrics (with their labels), what a perfect generator would score."""
    from dit.eval.baselines import constant_velocity, copy_nearest

    clips = real[0][:n]
    row = {"model": name, "task": task, "params": 0, "gmacs": 0.0, "steps_trained": 0, "process": "-",
           "video_masks": "-", "clips": n}
    if name == REAL:
        data = metric.per_sample(clips, real[1][:n])
        return {**row, **with_intervals(metric.statistics, data, args.bootstrap),
                "scores": keep_scores(args, name, task, n, metric.speed, data)}
    complete = {BASELINE: copy_nearest, TRACKER: constant_velocity}[name]
    return {**row, **score_completion(name, task, complete(clips, TASKS[task]), clips, metric, args)}


def interpolation_errors(gen, real, given) -> dict:
    from dit.eval.centroids import track_centroids

    rest = [f for f in range(real.shape[1]) if f not in given]
    err = np.linalg.norm(track_centroids(gen)[:, rest] - track_centroids(real)[:, rest], axis=-1)  # (N, len(rest))
    return {"centroid_error": np.nanmean(err, axis=1)}


def _mean_error(data, idx=None):
    e = data["centroid_error"] if idx is None else data["centroid_error"][idx]
    return {"centroid_error": float(np.nanmean(e)), "num_clips": int(len(e))}


def with_intervals(statistics, data: dict, resamples: int) -> dict:
    """Point estimates with 95% bootstrap intervals over clips (bias-shifted)."""
    point = statistics(data)
    n = len(next(iter(data.values())))
    rng = np.random.default_rng(0)
    draws = [statistics(data, rng.integers(0, n, n)) for _ in range(resamples)]
    out = dict(point)
    for k, v in point.items():
        if isinstance(v, float) and np.isfinite(v):
            d = np.array([r[k] for r in draws])
            lo, hi = np.nanquantile(d, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) - (np.nanmean(d) - v)
            if k in SHARES:
                lo, hi = max(lo, 0.0), min(hi, 1.0)
            elif k in ("fd_video", "centroid_error"):
                lo = max(lo, 0.0)
            out[f"{k}_ci"] = [float(lo), float(hi)]
    return out


def clip_gmacs(run: Path) -> float:
    """Forward multiply-accumulates (dit/analysis/flops.py's "GFLOPs") of the run's network on one clip
    with frames 0-3 given: the cost that parameter matching leaves out (concat doubles the tokens)."""
    import torch

    from dit.analysis.flops import count_forward_macs
    from dit.data.video_masks import frames_mask
    from dit.io.checkpoint import load_model
    from dit.layout import CLEAN, GIVEN

    model, _ = load_model(str(run))
    F_, _, side, _ = model.input_shape
    given = torch.from_numpy(frames_mask(TASKS["prediction"], F_, side))[None]
    return count_forward_macs(model, cond={GIVEN: given, CLEAN: torch.zeros(1, *model.input_shape)}) / 1e9


def parameters_of(run: Path) -> int:
    from dit.io.checkpoint import load_weights

    return int(sum(t.numel() for t in load_weights(str(run)).state_dict.values()))


if __name__ == "__main__":
    sys.exit(run_cli(main))
