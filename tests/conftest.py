"""Shared tiny artifacts: a random AutoencoderKL saved with save_pretrained, tiny DiT exports.

The exactness policy (tests/README.md): a comparison across runs is bit-exact where the code promises
it (same machine, same batch size and process count, a resume), and the test's name ends
`_bit_exact`; otherwise (across batch sizes, process counts, files or CPUs) it holds to a measured
tolerance, written by the assertion with where it was measured, and the name ends
`_within_measured_tol`. Samples are compared as floats before quantisation, or as uint8 against a
reference that is under 90% saturated (tests/helpers_compare.py). Every random input is seeded.
A test over 60 s on one core carries @pytest.mark.slow("why").
"""

import itertools
import os
import sys
from pathlib import Path

import pytest
import torch
from dit.networks.dit import DiT

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the scripts (sample.py, train.py) are imported by the tests

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core (pytest -n 2):
    # one thread each, and the same for the scripts they start, or two workers' OpenMP pools
    # oversubscribe the cores and slow each other several-fold.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


# The longest files (each at least a minute in one worker), started first: with `make test`'s two
# workers taking whole files in order, the short ones then fill in and both finish together.
LONG_FIRST = ("test_sweep.py", "test_time_to_quality.py", "test_video_benchmark.py", "test_ssm_benchmark.py",
              "test_video_scripts.py", "test_video.py", "test_metrics.py", "test_train.py", "test_reliability.py")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow(reason): takes over 60 s on one core; the reason says what it runs "
                                       "(deselect with -m 'not slow')")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # stable: a file keeps its own order


_PORTS = itertools.count()


def free_port() -> int:
    """A port for one distributed rendezvous: each worker counts up through its own block above 29700
    (below the OS's ephemeral range, where gloo's own connections land), so tests running side by
    side never share one (fixed ports did), and nothing is bound and released first (no race)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    return 29700 + 100 * worker + next(_PORTS)


TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)


def randomize(model, seed=0, std=0.05):
    """Give every parameter (adaLN-Zero starts at exactly 0 output) a random value, pos_embed excepted."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    """A 2x-downsampling AutoencoderKL with 4 latent channels: 16px images <-> 8x8x4 latents."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=16,
    )
    path = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_vae_dir):
    """A tiny trained-looking DiT exported as safetensors with its config, for 16px images."""
    from dit.io.checkpoint import save_export
    from dit.networks.dit_config import ModelConfig

    model = randomize(DiT.from_config(ModelConfig(**TINY)))
    path = tmp_path_factory.mktemp("export") / "tiny.safetensors"
    save_export(path, model, image_size=16, vae=str(tiny_vae_dir))
    return path


SLOW_SECONDS = 60
_UNMARKED_SLOW = []


def pytest_runtest_logreport(report):
    """Note a test that ran over SLOW_SECONDS without @pytest.mark.slow (a timing depends on the machine
    and its load, so this is a line in the summary, not a failure)."""
    if report.when == "call" and report.duration > SLOW_SECONDS and "slow" not in report.keywords:
        _UNMARKED_SLOW.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter):
    for nodeid, seconds in _UNMARKED_SLOW:
        terminalreporter.write_line(f"slow without @pytest.mark.slow(why): {nodeid} took {seconds:.0f} s")
