"""Sampling's default step count: the checkpoint's own (train.py --sampling-steps), else its process's
(flow: Euler-50, what its benchmarks measured; gaussian: DiT's 250); --steps wins over both."""

import torch
from test_train import train_run

from dit.pipelines import load
from dit.pipelines.spec import SamplingSpec, Source


def steps_of(run, **spec) -> int:
    return load(Source(ckpt=str(run)), SamplingSpec(**spec), torch.device("cpu"))[1].steps


def test_the_checkpoint_then_the_process_decides_the_default_steps(tmp_path):
    flow = train_run(tmp_path, "--process", "flow", "--max-steps", 1, name="flow")
    recorded = train_run(tmp_path, "--process", "flow", "--max-steps", 1, "--sampling-steps", 7, name="seven")
    gaussian = train_run(tmp_path, "--max-steps", 1, name="gaussian")
    assert (steps_of(flow), steps_of(recorded), steps_of(gaussian)) == (50, 7, 250)
    assert steps_of(recorded, steps=3) == 3 and steps_of(flow, steps=250) == 250
