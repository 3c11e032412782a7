"""dit/pipelines: one description of what decides sample i, and the records derived from it.

The shard record must stay what sample.py wrote before pipelines existed (its flag namespace minus a
hand-kept list of output flags), or evaluation batches half-written then would be redrawn; that old
rule is re-implemented here as the oracle. The evaluation record is derived from the same spec.
"""

import json

import pytest

from dit.pipelines import cli
from dit.pipelines.spec import SamplingSpec, Source, provenance, shard_settings

# sample.py's namespace entries that did not decide samples (b6ce869: `_NOT_CONTENT`), and the two it
# added after parsing; everything else in the namespace went into the record.
OLD_NOT_CONTENT = {"ckpt", "no_progress", "device", "out", "save_images", "nrow", "classes", "npz", "batch_size",
                   "compile", "compile_best_effort", "classifier", "classifier_net", "classifier_scale",
                   "classifier_form", "truncation", "frames", "tokenizer_file", "prompt"}


def old_record(args, ckpt_sha, classifier_sha=None, tokenizer_sha=None) -> dict:
    """b6ce869's shard_settings over a namespace as its build() left it."""
    content = {k: v for k, v in sorted(vars(args).items()) if k not in OLD_NOT_CONTENT}
    classifier = {"classifier_sha256": classifier_sha, "classifier_scale": args.classifier_scale,
                  "classifier_form": args.classifier_form} if args.classifier else {}
    truncation = {} if args.truncation is None else {"truncation": args.truncation}
    frames = {} if args.frames is None else {"frames": args.frames}
    tokenizer = {"tokenizer_sha256": tokenizer_sha} if tokenizer_sha else {}
    return json.loads(json.dumps({"ckpt_sha256": ckpt_sha, **classifier, **truncation, **frames, **tokenizer,
                                  **content}))


CASES = [
    [],
    ["--sampler", "ddim", "--steps", "7", "--eta", "0.3", "--cfg-scale", "1.5", "--cfg-channels", "3"],
    ["--sampler", "euler", "--shift", "2", "--guidance-interval", "0.1", "1", "--precision", "bf16", "--seed", "9"],
    ["--classifier", "cls", "--classifier-scale", "2", "--classifier-form", "eps", "--labels", "balanced"],
    ["--truncation", "0.9", "--frames", "3", "--vae", "none", "--arch", "dit", "--process", "flow",
     "--image-size", "16", "--num-classes", "5", "--model", "DiT-S/2"],
    ["--sampler", "sde", "--diffusion-form", "linear", "--diffusion-norm", "0.5", "--last-step", "0.1", "--atol", "1e-5",
     "--rtol", "1e-2", "--batch-size", "3", "--no-progress", "--device", "cpu", "--compile"],
]


@pytest.mark.parametrize("extra", CASES)
def test_shard_record_is_the_one_sample_py_wrote_before(extra):
    argv = ["--ckpt", "run", "--num-samples", "10", "--npz", "x.npz", *extra]
    args = cli.parse(argv)
    source, spec = cli.to_spec(args)
    # What load() resolves, applied to both: the process's defaults and the classifier form used.
    resolved = dict(sampler=spec.sampler or "ddpm", steps=spec.steps or 250,
                    classifier_form="eps" if spec.classifier else spec.classifier_form)
    spec = spec.replace(**resolved)
    for k, v in resolved.items():
        setattr(args, k, v)
    vars(args).pop("cfg_default")  # the parser's own bookkeeping, new with pipelines
    vars(args).pop("cfg_given")  # ... and with unconditional models: whether --cfg-scale was the user's
    vars(args).pop("prompts")  # --prompts FILE, read into --prompt (issue 35)
    args.image_size = source.image_size  # --image-size H [W] now parses to tokens; the record keeps the int H
    shas = dict(classifier_sha256="c" * 64 if spec.classifier else None, tokenizer_sha256=None)
    assert shard_settings(source, spec, "a" * 64, **shas) == old_record(args, "a" * 64, shas["classifier_sha256"])


def test_the_records_agree_because_they_come_from_one_spec():
    source = Source("run", vae="none")
    spec = SamplingSpec(sampler="heun", steps=12, options={"shift": 3.0}, cfg_scale=2.0, guidance_interval=(0.1, 1.0),
                        seed=4, num_samples=8, labels="balanced", classifier="cls", classifier_scale=1.5,
                        classifier_form="eps")
    shard = shard_settings(source, spec, "a" * 64, classifier_sha256="c" * 64)
    made = provenance(source, spec, 8, "a" * 64, classifier_sha256="c" * 64)
    for key in ("sampler", "steps", "cfg_scale", "cfg_channels", "guidance_interval", "classifier_scale",
                "classifier_form", "classifier_sha256"):
        assert made[key] == shard[key], key
    assert made["checkpoint_sha256"] == shard["ckpt_sha256"] and made["sampler_options"] == {"shift": 3.0}
    assert made["seeds"] == [4, 11] and shard["seed"] == 4 and shard["shift"] == 3.0
    # Output settings are not part of either: the same spec, another batch size, the same record.
    assert shard_settings(source, spec.replace(), "a" * 64, classifier_sha256="c" * 64) == shard


def test_a_new_drawing_setting_changes_the_record():
    """The record tells specs apart: each drawing setting, changed alone, changes it."""
    source, base = Source("run"), SamplingSpec(sampler="ddim", steps=5, num_samples=4)
    record = shard_settings(source, base, "a" * 64)
    for change in (dict(steps=6), dict(sampler="ddpm"), dict(cfg_scale=2.0), dict(seed=1), dict(labels="balanced"),
                   dict(options={"eta": 0.5}), dict(cfg_channels=3), dict(precision="bf16"), dict(frames=3),
                   dict(guidance_interval=(0.0, 500.0)), dict(options={"truncation": 0.5})):
        assert shard_settings(source, base.replace(**change), "a" * 64) != record, change
    assert shard_settings(Source("run", vae="mse"), base, "a" * 64) != record
    assert shard_settings(source, base, "b" * 64) != record
