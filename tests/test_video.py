"""The video DiT and VDT's mask modelling: the network's invariants, the masked loss, samplers that
keep given positions exactly, and the real scripts end to end (exact resume, 2 processes, GIFs,
clip completion, bad input)."""


import numpy as np
import pytest
import torch
from conftest import randomize

from dit.data.video_masks import SPATIAL_SHARE, TEMPORAL_TASKS, draw_mask, frames_mask, parse_frames, temporal_mask
from dit.errors import UserError
from dit.layout import CLEAN, GIVEN, IMAGES, channel_dim, split_output
from dit.networks.dit import DiT
from dit.networks.video_config import FACTORIZATIONS, VideoConfig
from dit.networks.video_dit import VideoDiT
from dit.networks.video_given import GIVEN_CONDITIONINGS
from dit.processes.base import mean_over_generated
from dit.processes.flow import FlowMatching
from dit.processes.gaussian import GaussianDiffusion
from dit.sampling.generate import generate_images
from dit.autoencoders.vae import Autoencoder

SMALL = dict(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2, num_heads=2, num_classes=10)


def video(factorization="interleaved", temporal=True, frames=6, **kw):
    torch.manual_seed(0)
    return VideoDiT(VideoConfig(**{**SMALL, **kw}, frames=frames, factorization=factorization, temporal=temporal)).eval()


def image_twin(net: VideoDiT) -> DiT:
    """The image DiT of the same size holding the video network's spatial weights."""
    fields = {k: getattr(net.config, k) for k in SMALL} | {"learn_sigma": net.config.learn_sigma}
    dit = DiT(**fields).eval()
    dit.load_state_dict({k: v for k, v in net.state_dict().items() if k in dit.state_dict()})
    return dit


def inputs(B=2, F=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F, 3, 8, 8, generator=g)
    return x, torch.tensor([3.0, 700.0][:B]), {"y": torch.tensor([1, 7][:B])}


# --- the network ----------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 4])
def test_without_temporal_parts_it_is_the_image_dit_frame_by_frame(frames):
    net = randomize(video(temporal=False), seed=3)
    dit = image_twin(net)
    x, t, cond = inputs(F=frames)
    out = net(x, t, cond)
    for f in range(frames):
        torch.testing.assert_close(out[:, f], dit(x[:, f], t, cond), atol=1e-6, rtol=0)


@pytest.mark.parametrize("factorization", ["interleaved", "late-fusion", "factorized-attention"])
def test_closed_temporal_gates_leave_the_image_dit_exactly(factorization):
    # Latte's init: spatial weights from an image DiT, temporal parts at their zero-gate init. The
    # time table feeds the temporal attention only, so the network is the image DiT: bit for bit
    # against the same network without temporal parts (same batching), to rounding against DiT.
    net = video(factorization)
    spatial = randomize(video(temporal=False), seed=5)
    missing = net.load_state_dict(spatial.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("temporal_blocks.") for k in missing)
    x, t, cond = inputs()
    dit = image_twin(spatial)
    out = net(x, t, cond)
    assert torch.equal(out, spatial(x, t, cond))
    for f in range(x.shape[1]):
        torch.testing.assert_close(out[:, f], dit(x[:, f], t, cond), atol=1e-6, rtol=0)


@pytest.mark.parametrize("factorization", FACTORIZATIONS)
def test_temporal_parts_start_as_the_identity_and_then_mix_frames(factorization):
    net = video(factorization)
    x, t, cond = inputs()
    g = torch.Generator().manual_seed(2)
    h = torch.randn(12, 6, 32, generator=g)
    c = torch.randn(12, 32, generator=g)
    for block in net.temporal_blocks:
        assert torch.equal(block(h, c), h)  # zero gate: exactly the input
    randomize(net, seed=2, std=0.2)
    x2 = x.clone()
    x2[:, 0] += 1.0  # change frame 0 only
    changed = (net(x2, t, cond) - net(x, t, cond))[:, 1:].abs().amax()
    assert changed > 1e-3  # the other frames see it
    still = randomize(video(factorization, temporal=False), seed=2, std=0.2)
    assert torch.equal(still(x2, t, cond)[:, 1:], still(x, t, cond)[:, 1:])  # without time: nothing crosses frames


@pytest.mark.parametrize("factorization", FACTORIZATIONS)
def test_frame_permutation_permutes_the_output_when_the_time_table_is_zero(factorization):
    net = randomize(video(factorization), seed=4)
    net.temporal_embed.zero_()
    x, t, cond = inputs()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(net(x[:, perm], t, cond), net(x, t, cond)[:, perm], atol=1e-5, rtol=0)
    net = randomize(video(factorization), seed=4)  # with the table, order matters
    assert (net(x[:, perm], t, cond) - net(x, t, cond)[:, perm]).abs().amax() > 1e-4


def test_shorter_clips_work_and_longer_ones_are_refused():
    net = randomize(video(frames=6), seed=1)
    x, t, cond = inputs(F=3)
    assert net(x, t, cond).shape == (2, 3, 6, 8, 8)  # learn_sigma: 2 x 3 channels
    with pytest.raises(ValueError, match="F <= 6"):
        net(inputs(F=7)[0], t, cond)


def test_given_positions_are_read_from_clean_and_flagged():
    net = randomize(video(), seed=6)
    torch.nn.init.normal_(net.given_embed, std=1.0)
    x, t, cond = inputs()
    g = torch.Generator().manual_seed(3)
    clean = torch.randn(x.shape, generator=g)
    given = torch.zeros(2, 6, 1, 8, 8)
    given[:, :3] = 1
    masked = {**cond, GIVEN: given, CLEAN: clean}
    noisy = x.clone()
    noisy[:, :3] = torch.randn(x[:, :3].shape, generator=g) * 10  # whatever the sampler holds at given positions ...
    assert torch.equal(net(noisy, t, masked), net(x, t, masked))  # ... is never read
    # The same input values, once given and once not: the flag changes the output (VDT's blind spot).
    pasted = torch.where(given > 0, clean, x)
    assert (net(pasted, t, masked) - net(pasted, t, cond)).abs().amax() > 1e-3


@pytest.mark.parametrize("mode", GIVEN_CONDITIONINGS)
@pytest.mark.parametrize("factorization", ["interleaved", "split-heads"])
def test_every_conditioning_reads_the_given_values_and_nothing_else(mode, factorization):
    net = video(factorization, given_conditioning=mode)
    x, t, cond = inputs()
    g = torch.Generator().manual_seed(4)
    clean = torch.randn(x.shape, generator=g)
    given = torch.zeros(2, 6, 1, 8, 8)
    given[:, :2] = 1
    given[:, 3, :, :4] = 1  # half a frame (whole patches)
    masked = {**cond, GIVEN: given, CLEAN: clean}
    if mode != "replace":  # the added parts start silent: the same network as without them, given positions at 0
        blanked = x * (1 - given)
        assert torch.equal(net(x, t, masked), net(blanked, t, {**cond, GIVEN: torch.zeros_like(given), CLEAN: clean}))
    randomize(net, seed=9, std=0.2)
    out = net(x, t, masked)
    # the sampler's state at given positions is never read (it is untrained there), in any mode
    assert torch.equal(net(x + given * torch.randn(x.shape, generator=g), t, masked), out)
    elsewhere = clean.clone()
    elsewhere[:, 2:] += torch.where(given[:, 2:] > 0, 0.0, 1.0)  # change clean only where nothing is given
    assert torch.equal(net(x, t, {**masked, CLEAN: elsewhere}), out)
    there = clean.clone()
    there[:, 0] += 1.0  # change a given frame
    assert (net(x, t, {**masked, CLEAN: there}) - out)[:, 4:].abs().amax() > 1e-4  # later frames see it
    assert torch.equal(net(x, t, cond), net(x, t, {**cond, GIVEN: torch.zeros_like(given), CLEAN: clean * 0}))


@pytest.mark.parametrize("factorization", ["interleaved", "late-fusion", "factorized-attention"])
def test_joint_training_images_pass_the_spatial_blocks_only(factorization):
    net = randomize(video(factorization), seed=10, std=0.2)
    alone = video(factorization, temporal=False)
    alone.load_state_dict(net.state_dict(), strict=False)
    x, t, cond = inputs(F=6)
    images = torch.randn(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    out = net(torch.cat([x, images], 1), t, {**cond, IMAGES: torch.tensor([3, 3])})
    torch.testing.assert_close(out[:, :6], net(x, t, cond), atol=1e-5, rtol=0)  # the clip never sees them
    torch.testing.assert_close(out[:, 6:], alone(images, t, cond), atol=1e-5, rtol=0)  # they never see the clip


def test_joint_images_are_frames_of_same_class_clips():
    from dit.data.joint import JointImages
    from dit.data.shapes_video import InMemoryClips

    clips = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1, 1).expand(20, 4, 3, 2, 2).contiguous()
    labels = torch.arange(20) % 4
    base = JointImages(InMemoryClips(clips, labels, False, 4), 5)
    for i in range(20):
        a, y, _ = base.get(i, np.random.default_rng([0, i]))
        b, _, _ = base.get(i, np.random.default_rng([0, i]))
        assert torch.equal(a, b) and a.shape == (9, 3, 2, 2) and y == i % 4
        sources = ((a[4:, 0, 0, 0] + 1) * 127.5).round().long()  # which clip each image came from
        assert (sources % 4 == y).all()


def test_split_heads_needs_two_heads_and_configs_are_checked():
    with pytest.raises(UserError, match="at least 2 heads"):
        VideoConfig(**{**SMALL, "num_heads": 1}, factorization="split-heads")
    with pytest.raises(UserError, match="unknown factorization"):
        VideoConfig(**SMALL, factorization="diagonal")
    with pytest.raises(UserError, match="sin-cos"):
        VideoConfig(**SMALL, pos="rope2d")


# --- layout, masked loss, samplers --------------------------------------------------------------


def test_layout_finds_the_channels_of_images_and_clips():
    assert channel_dim(torch.zeros(2, 3, 4, 4)) == 1 and channel_dim(torch.zeros(2, 5, 3, 4, 4)) == 2
    x = torch.zeros(2, 5, 3, 4, 4)
    first, rest = split_output(torch.arange(2 * 5 * 6 * 16.0).view(2, 5, 6, 4, 4), x)
    assert first.shape == x.shape and torch.equal(rest, torch.arange(2 * 5 * 6 * 16.0).view(2, 5, 6, 4, 4)[:, :, 3:])
    with pytest.raises(ValueError, match="does not fit"):
        split_output(torch.zeros(2, 10, 3, 4, 4), x)


def test_the_loss_averages_over_generated_positions_only():
    values = torch.arange(2 * 4 * 1 * 2 * 2, dtype=torch.float32).view(2, 4, 1, 2, 2)
    given = torch.zeros(2, 4, 1, 2, 2)
    given[0, :2] = 1
    given[1] = 1  # everything given: 0, not 0/0
    out = mean_over_generated(values, {GIVEN: given})
    assert out[0] == values[0, 2:].mean() and out[1] == 0 and torch.isfinite(out).all()
    assert torch.equal(mean_over_generated(values, {"y": None}), values.mean((1, 2, 3, 4)))


@pytest.mark.parametrize("process,sampler", [
    (GaussianDiffusion.from_schedule(), "ddpm"), (GaussianDiffusion.from_schedule(), "ddim"),
    (GaussianDiffusion.from_schedule(), "dpm++"), (GaussianDiffusion.from_schedule(), "unipc"),
    (GaussianDiffusion.from_schedule(), "diffusers-ddim"), (GaussianDiffusion.from_schedule(), "euler-a"),
    (GaussianDiffusion.from_schedule(), "euler"), (GaussianDiffusion.from_schedule(), "heun"),
    (FlowMatching(), "euler"), (FlowMatching(), "heun"), (FlowMatching(), "sde"), (FlowMatching(), "diffusers-euler"),
    (FlowMatching(), "dopri5"),
])
def test_every_sampler_keeps_the_given_positions_exactly(process, sampler):
    net = randomize(video(learn_sigma=isinstance(process, GaussianDiffusion)), seed=8)
    seen = []  # what the patch embedding reads: (B * F, C, H, W) per network call
    net.x_embedder.register_forward_pre_hook(lambda module, args: seen.append(args[0].view(-1, 6, 3, 8, 8)))
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 6, 3, 8, 8, generator=g) * 2 - 1
    mask = torch.from_numpy(frames_mask([0, 1, 2], 6, 8)).expand(3, 6, 1, 8, 8)
    out = generate_images(net, Autoencoder.load("none"), process, [0, 1, 2], [1, 2, 3], sampler, 4, 2.0,
                          given=(mask, clean))
    assert out.shape == (3, 6, 8, 8, 3)
    assert np.array_equal(out[:, :3], ((clean[:, :3] * 127.5 + 128).clamp(0, 255).to(torch.uint8)).permute(0, 1, 3, 4, 2).numpy())
    assert seen  # every network call, cond and uncond rows alike, read the exact given values
    for x in seen:
        rows = x.shape[0] // 3
        assert torch.equal(x[:, :3], clean.repeat(rows, 1, 1, 1, 1)[:, :3])
        assert not torch.equal(x[:, 3:], clean.repeat(rows, 1, 1, 1, 1)[:, 3:])


# --- VDT's masks --------------------------------------------------------------------------------


VDT_SPATIAL_SHARE, VDT_FRAME_MASK_P = 0.2, 0.8  # REFERENCE_FAMILY.md: VDT's released mask mix


def test_the_mask_mix_follows_vdt():
    spatial = 0
    for i in range(3000):
        m = draw_mask(np.random.default_rng([0, i]), 8, 16, 2)
        assert m.shape == (8, 1, 16, 16) and set(np.unique(m)) <= {0.0, 1.0}
        tokens = m[:, 0].reshape(8, 8, 2, 8, 2)
        assert (tokens.min((2, 4)) == tokens.max((2, 4))).all()  # patch-aligned: a token is given or not
        per_frame = m.reshape(8, -1)
        if not ((per_frame == per_frame[:, :1]).all()):
            spatial += 1
            assert (m == m[0]).all()  # the same block generated in every frame
    # VDT's released mix (REFERENCE_FAMILY.md, "VDT mask modelling"): 20% spatial block masks, the rest
    # one of six temporal tasks. The constant comes from that specification, not from the module.
    assert abs(spatial / 3000 - VDT_SPATIAL_SHARE) < 0.03 and SPATIAL_SHARE == VDT_SPATIAL_SHARE  # binomial sd 0.007
    assert temporal_mask("prediction", 8).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert temporal_mask("backward", 8).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert temporal_mask("interpolation", 8).tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    assert temporal_mask("animation", 8, np.random.default_rng(0)).sum() == 1
    assert TEMPORAL_TASKS == ("prediction", "backward", "interpolation", "unconditional", "animation", "random-frames")
    per_frame_given = np.mean([temporal_mask("random-frames", 8, np.random.default_rng([2, i])).mean() for i in range(2000)])
    assert abs(per_frame_given - (1 - VDT_FRAME_MASK_P)) < 0.01  # VDT masks each frame with p = 0.8; sd 0.0032


def test_the_vdt_uncond_mix_adds_unconditional_clips_and_leaves_vdt_draws_alone():
    """vdt-uncond:S: a share S of the clips nothing given (0.5 without ":S"), the rest VDT's mix (about
    1 in 6.4 of those also unconditional: the unconditional task, and random frames that gave none)."""
    n = 4000
    mixes = ("vdt", "vdt-uncond", "vdt-uncond:0.75")
    empty = {mix: sum(not draw_mask(np.random.default_rng([1, i]), 8, 16, 2, mix=mix).any() for i in range(n)) / n
             for mix in mixes}
    # P(nothing given) under VDT's mix, from the specification: not spatial, then the unconditional task
    # or random frames with none of the 8 given
    vdt = (1 - VDT_SPATIAL_SHARE) * (1 + VDT_FRAME_MASK_P ** 8) / 6
    assert abs(empty["vdt"] - vdt) < 0.02  # binomial sd 0.006
    assert abs(empty["vdt-uncond"] - (0.5 + 0.5 * vdt)) < 0.025
    assert abs(empty["vdt-uncond:0.75"] - (0.75 + 0.25 * vdt)) < 0.025
    for bad in ("vdt-uncond:1", "vdt-uncond:-0.1", "vdt-uncond:x", "vdt:0.5", "uncond"):
        with pytest.raises(UserError, match="--video-masks"):
            draw_mask(np.random.default_rng(0), 8, 16, 2, mix=bad)
    # prediction:S: S nothing given, every other clip exactly frames 0-3 given (the first half)
    half = np.zeros((8, 1, 16, 16), np.float32)
    half[:4] = 1
    drawn = [draw_mask(np.random.default_rng([3, i]), 8, 16, 2, mix="prediction:0.25") for i in range(n)]
    assert abs(sum(not m.any() for m in drawn) / n - 0.25) < 0.025
    assert all((m == half).all() for m in drawn if m.any())
    with pytest.raises(UserError, match="after 'prediction:'"):
        draw_mask(np.random.default_rng(0), 8, 16, 2, mix="prediction:1")
    # "vdt" (the default) makes no extra draw: its masks are VDT's mix itself, as before "vdt-uncond" existed
    from dit.data.video_masks import _draw_mask
    for i in range(50):
        a = draw_mask(np.random.default_rng([2, i]), 8, 16, 2)
        assert (a == _draw_mask(np.random.default_rng([2, i]), 8, 16, 2)).all()


def test_given_frames_are_parsed_or_refused():
    assert parse_frames("0-3", 8) == [0, 1, 2, 3] and parse_frames("0,2,5-6", 8) == [0, 2, 5, 6]
    for bad in ("3-1", "a", "0-8", ""):
        with pytest.raises(UserError, match="--given-frames"):
            parse_frames(bad, 8)
    from dit.data.video_masks import box_mask, parse_box
    assert parse_box("8,0,16,8", 32, 8) == (8, 0, 16, 8)
    for bad, match in (("4,4,8,8", "multiples of 8"), ("0,0,0,8", "non-empty"), ("-8,0,8,8", "inside"), ("a", "TOP")):
        with pytest.raises(UserError, match=match):
            parse_box(bad, 32, 8)
    m = box_mask((1, 2, 3, 4), 2, 8)
    assert m.shape == (2, 1, 8, 8) and m.sum() == 2 * (64 - 12) and not m[:, :, 1:4, 2:6].any()


# --- the scripts ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", GIVEN_CONDITIONINGS)
def test_bf16_autocast_gives_finite_losses_and_gradients(mode):
    # Latte's attention fast paths give NaN under mixed precision; ours runs SDPA under autocast.
    net = randomize(video("interleaved", given_conditioning=mode), seed=11, std=0.1).train()
    x, t, cond = inputs()
    given = torch.from_numpy(frames_mask([0, 1], 6, 8)).expand(2, 6, 1, 8, 8)
    process = FlowMatching()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    batch = {"x0": x, "t": torch.tensor([0.3, 0.9]), "noise": noise,
             "cond": {**cond, GIVEN: given, CLEAN: x, "drop": torch.tensor([0, 1])}}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = process.loss(net, batch)["loss"].mean()
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
