"""diffusers, both directions (issue #14): an exported DiTPipeline samples like our samplers under
stock diffusers, reads back as the same model, process and VAE, and what cannot export is refused."""

import math

import numpy as np
import pytest
import torch
from conftest import TINY, randomize
from helpers_compare import capture_floats, same_across_batches

import export_diffusers
import sample
from dit.autoencoders.pixels import to_uint8
from dit.autoencoders.vae import Autoencoder
from dit.cli import run_cli
from dit.io.checkpoint import load_model, save_export
from dit.io.diffusers_transformer import EXPORTS
from dit.networks.dit import DiT
from dit.networks.dit_config import ModelConfig, infer_config
from dit.networks.layers import timestep_embedding
from dit.processes import GaussianDiffusion
from dit.sampling.generate import generate_images

SEEDS, LABELS = [3, 4, 5], [0, 3, 9]


def export(tmp_path, tiny_vae_dir, name="pipe", schedule="linear", std=0.05, **overrides):
    """A trained-looking tiny DiT saved as our export, then exported by export_diffusers.py."""
    model = randomize(DiT.from_config(ModelConfig(**{**TINY, **overrides})), std=std).eval()
    process = GaussianDiffusion.from_schedule(schedule)
    ckpt = tmp_path / f"{name}.safetensors"
    save_export(ckpt, model, process_config=process.to_meta(), image_size=16, vae=str(tiny_vae_dir),
                class_names=[f"class {i}" for i in range(model.num_classes)])
    out = tmp_path / name
    assert run_cli(export_diffusers.main, ["--ckpt", str(ckpt), "--out", str(out)]) == 0
    return model, process, ckpt, out


def pipeline(out, dit_frequencies=False):
    from diffusers import DiTPipeline

    pipe = DiTPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    if dit_frequencies:  # take out the one difference an export carries (diffusers' frequency shift)
        for block in pipe.transformer.transformer_blocks:
            block.norm1.emb.time_proj.downscale_freq_shift = 0
    return pipe


def run_pipeline(pipe, steps, **kwargs) -> np.ndarray:
    """Stock DiTPipeline call, sample i from seed SEEDS[i], as uint8 with our rounding."""
    generators = [torch.Generator().manual_seed(s) for s in SEEDS]
    images = pipe(LABELS, generator=generators, num_inference_steps=steps, output_type="np", **kwargs).images
    return to_uint8(torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1)


def ours(model, process, tiny_vae_dir, steps, cfg_scale) -> np.ndarray:
    return generate_images(model, Autoencoder.load(str(tiny_vae_dir)), process, SEEDS, LABELS, "diffusers-ddim",
                           steps, cfg_scale)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


# --- 1. the exported scheduler steps as ours ---------------------------------------------------


def test_exported_scheduler_starts_at_pure_noise_like_our_samplers(tmp_path, tiny_vae_dir):
    model, process, _, out = export(tmp_path, tiny_vae_dir)
    pipe = pipeline(out, dit_frequencies=True)
    pipe.scheduler.set_timesteps(25)
    assert pipe.scheduler.timesteps[0] == 999 and pipe.scheduler.config.timestep_spacing == "trailing"
    theirs = run_pipeline(pipe, 5, guidance_scale=1.0)
    assert np.abs(theirs.astype(int) - ours(model, process, tiny_vae_dir, 5, 1.0)).max() <= 1  # float rounding


# --- 2. stock guidance on any class count, and the way back --------------------------------------


def test_stock_pipeline_default_call_guides_a_ten_class_model(tmp_path, tiny_vae_dir):
    model, process, _, out = export(tmp_path, tiny_vae_dir)
    theirs = run_pipeline(pipeline(out, dit_frequencies=True), 4)  # guidance_scale: the default 4.0
    assert np.abs(theirs.astype(int) - ours(model, process, tiny_vae_dir, 4, 4.0)).max() <= 1
    assert run_pipeline(pipeline(out), 4).shape == (3, 16, 16, 3)  # and stock, frequencies as diffusers has them


def test_exported_pipeline_reads_back_as_the_original_model(tmp_path, tiny_vae_dir):
    model, process, _, out = export(tmp_path, tiny_vae_dir)
    table = pipeline(out).transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight
    own = model.y_embedder.embedding_table.weight
    assert table.shape[0] == 1001 and torch.equal(table[:10], own[:10]) and torch.equal(table[1000], own[10])
    assert torch.equal(table[10:1000], own[10].expand(990, -1))  # unused labels act as the null class
    back, ckpt = load_model(str(out))
    assert back.config == model.config and back.num_classes == 10
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    assert ckpt.meta["class_names"][9] == "class 9"


# --- 3. the timestep-frequency convention --------------------------------------------------------


def test_timestep_embedding_conventions():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1.0, 17.0, 500.0, 999.0])
    theirs = get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=1)
    assert torch.equal(timestep_embedding(t, 256, freq_shift=1), theirs)
    half = 128  # shift 0 is the formula of the public DiT, unchanged
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None] * freqs[None]
    assert torch.equal(timestep_embedding(t), torch.cat([torch.cos(args), torch.sin(args)], -1))
    assert ModelConfig().timestep_freq_shift == 0
    assert infer_config(DiT(**TINY).state_dict()).timestep_freq_shift == 0  # the public .pt files


def test_stock_diffusers_transformer_computes_what_diffusers_computes(tmp_path):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    stock = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
                                  num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10).eval()
    with torch.no_grad():  # stock init has zero adaLN outputs; every block copy of the embedder must agree
        shared = {}
        for name, p in stock.named_parameters():
            key = name.split("norm1.emb.", 1)[-1] if "norm1.emb." in name else name
            shared.setdefault(key, torch.randn(p.shape) * 0.05)
            p.copy_(shared[key])
    stock.save_pretrained(tmp_path / "stock")
    ours_, _ = load_model(str(tmp_path / "stock"))
    assert ours_.config.timestep_freq_shift == 1 and ours_.num_classes == 10
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([0.0, 10.0, 500.0, 999.0]), torch.tensor([0, 5, 9, 10])
    with torch.no_grad():
        want = stock(x, timestep=t, class_labels=y).sample
        got = ours_(x, t, y)
    # stock norm_eps is 1e-5 before each MLP where DiT has 1e-6 everywhere: the one remaining difference
    assert ((got - want).norm() / want.norm()).item() < 2e-6  # measured 3e-7; DiT's frequencies: 9e-3


def test_an_export_carries_only_the_frequency_difference(tmp_path, tiny_vae_dir):
    """Stock diffusers computes shift-1 frequencies for our shift-0 export; nothing else differs.
    Weights of std 0.2 make this random network depend on t enough for the difference to show."""
    model, process, _, out = export(tmp_path, tiny_vae_dir, std=0.2)
    mine = ours(model, process, tiny_vae_dir, 25, 4.0)
    stock = run_pipeline(pipeline(out), 25, guidance_scale=4.0)
    exact = run_pipeline(pipeline(out, dit_frequencies=True), 25, guidance_scale=4.0)
    assert psnr(exact, mine) > 50 and psnr(stock, mine) < 40, (psnr(exact, mine), psnr(stock, mine))


# --- 4. sample.py on a pipeline directory --------------------------------------------------------


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_py_reads_a_pipeline_as_the_run_it_came_from_within_measured_tol(tmp_path, tiny_vae_dir, monkeypatch,
                                                                                sampler):
    _, process, ckpt, out = export(tmp_path, tiny_vae_dir, schedule="cosine")
    _, meta = load_model(str(out))
    assert meta.meta["vae"] == str((out / "vae").resolve()) and meta.meta["image_size"] == 16
    assert torch.equal(torch.tensor(meta.meta["process_config"]["betas"], dtype=torch.float64), process.betas)
    images, floats = [], []
    for name, source in (("export", ckpt), ("pipeline", out)):
        npz = tmp_path / f"{name}.npz"
        argv = ["--ckpt", str(source), "--num-samples", "3", "--npz", str(npz), "--batch-size", "2", "--seed", "7",
                "--no-progress", "--device", "cpu", "--sampler", sampler, "--steps", "5"]
        with capture_floats(monkeypatch) as got:
            assert run_cli(sample.main, argv) == 0
        images.append(np.load(npz)["arr_0"])
        floats.append(got.cat())
    assert images[0].shape == (3, 16, 16, 3)
    # Measured tolerance (another file holding the same weights in diffusers' layout, its VAE a copy): the
    # same floats here (x86 CPU), mid-range samples (0.4% saturated). Reading the pipeline with diffusers'
    # timestep frequencies instead of the recorded ones moves them by 6.1e-3 (under one uint8 level).
    torch.testing.assert_close(floats[1], floats[0], rtol=0, atol=1e-5)
    same_across_batches(images[1], images[0])


# --- 5. what exports, and what is refused before anything is written -------------------------------


def test_adaln_exports_exactly(tmp_path, tiny_vae_dir):
    model, _, _, out = export(tmp_path, tiny_vae_dir, conditioning="adaln")
    pipe = pipeline(out, dit_frequencies=True)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    t, y = torch.tensor([3.0, 400.0, 999.0]), torch.tensor([1, 7, 10])
    with torch.no_grad():
        want = model(x, t, y)
        got = pipe.transformer(x, timestep=t, class_labels=torch.where(y == 10, 1000, y)).sample
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    back, _ = load_model(str(out))
    assert back.config == model.config
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("case, why", [
    ({"conditioning": "in-context"}, "has in-context conditioning"),
    ({"conditioning": "cross-attention"}, "has cross-attention conditioning"),
    ({"mlp_ratio": 2.0}, "has mlp_ratio 2.0"),
    ({"num_classes": 1001}, "has 1001 classes"),
    ({"in_channels": 3, "vae": "none"}, "a pixel-space model (--vae none) has no VAE"),
])
def test_export_refuses_in_one_line_before_writing(tmp_path, tiny_vae_dir, capsys, case, why):
    case = dict(case)
    vae = case.pop("vae", str(tiny_vae_dir))
    model = DiT.from_config(ModelConfig(**{**TINY, **case}))
    ckpt = tmp_path / "model.safetensors"
    save_export(ckpt, model, image_size=16, vae=vae)
    out = tmp_path / "sub" / "pipe"
    assert run_cli(export_diffusers.main, ["--ckpt", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and why in err and err.endswith(EXPORTS), err
    assert not (tmp_path / "sub").exists()
