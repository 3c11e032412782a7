"""Mask modelling's per-task loss weight (--given-loss-weight): a clip with frames given weighs w against
one with nothing given, in the micro-batch mean; 1 is the plain mean. Refused off the video DiT."""

import torch
from test_cli_errors import refused

import train
from dit.training.step import micro_batch_loss


class PerSample:
    """A process whose per-sample losses are fixed: 1, 2, 3, 4."""

    def loss(self, model, batch):
        return {"loss": torch.tensor([1.0, 2.0, 3.0, 4.0])}


def batch(given_in: list[int]) -> dict:
    given = torch.zeros(4, 2, 1, 4, 4)
    for i in given_in:
        given[i, 0] = 1  # frame 0 given
    return {"x": torch.zeros(4, 2, 3, 4, 4), "y": torch.zeros(4, dtype=torch.long), "drop": torch.zeros(4),
            "draws": {}, "given": given}


def test_the_weight_falls_on_clips_with_frames_given():
    cpu = torch.device("cpu")
    assert micro_batch_loss(PerSample(), None, batch([0, 1]), cpu) == 2.5  # the plain mean
    assert micro_batch_loss(PerSample(), None, batch([0, 1]), cpu, given_weight=3.0) == (3 + 6 + 3 + 4) / 4
    assert micro_batch_loss(PerSample(), None, batch([]), cpu, given_weight=3.0) == 2.5  # nothing given: 1 each
    assert micro_batch_loss(PerSample(), None, batch([3]), cpu, accum=2, given_weight=0.5) == (1 + 2 + 3 + 2) / 4 / 2


def test_bad_weights_are_refused(tmp_path, capsys):
    base = ["--results-dir", tmp_path, "--max-steps", 1, "--no-progress"]
    assert "--given-loss-weight must be positive" in refused(capsys, train.main, ["video-cpu", *base,
                                                                                  "--given-loss-weight", 0])
    assert "a setting of the video-dit architecture" in refused(capsys, train.main, [*base, "--given-loss-weight", 2])
    assert not list(tmp_path.iterdir()) or all(p.name == ".cache" for p in tmp_path.iterdir())
