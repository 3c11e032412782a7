"""The DiT network against the paper and the public release: sizes, init, conventions, key layout.

Reference computations here are written independently of dit/ (loops, plain torch ops) so that a
convention flipped in both places cannot pass unnoticed.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from dit.networks.dit_config import CONDITIONINGS, MODEL_NAMES, ModelConfig, null_class, preset_config
from dit.errors import UserError
from dit.analysis.flops import PAPER, count_params
from dit.networks.layers import LabelEmbedder, get_2d_sincos_pos_embed, timestep_embedding
from dit.networks.dit import DiT, DiT_models

SMALL = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)


def perturbed(model, seed=0, std=0.05):
    """Random values for every trainable parameter, so that the zero-init network computes something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def inputs(n=3, cfg=ModelConfig(**SMALL), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    return x, torch.tensor([0, 499, 999][:n]), torch.tensor([3, 0, cfg.num_classes - 1][:n])


# --- sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [r.label for r in PAPER.values() if r.params_exact])
def test_parameter_counts_match_public_models(label):
    row = PAPER[label]
    with torch.device("meta"):
        model = DiT.from_config(row.config())
    assert count_params(model) == row.params


def test_registry_has_all_twelve_and_accepts_overrides():
    from dit import DiT as DiT2, DiT_models as models2  # the public import path

    assert DiT2 is DiT and models2 is DiT_models
    assert list(DiT_models) == MODEL_NAMES and len(MODEL_NAMES) == 12
    m = DiT_models["DiT-B/4"](input_size=8, num_classes=10, depth=1)
    assert (m.config.hidden_size, m.patch_size, m.num_classes, len(m.blocks)) == (768, 4, 10, 1)


# --- initialisation -----------------------------------------------------------------------------


def test_adaln_zero_outputs_exactly_zero_at_init_and_blocks_are_identity():
    model = DiT(**SMALL).eval()
    x, t, y = inputs()
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda mod, args, out: seen.append(torch.equal(args[0], out)))
    out = model(x, t, y)
    assert out.shape == (3, 8, 8, 8)
    assert torch.count_nonzero(out) == 0
    assert seen == [True, True]  # gates 0: each block is the identity (DiT §3.2)
    assert not model.pos_embed.requires_grad


def test_output_nonzero_and_depends_on_t_and_y_after_training_like_perturbation():
    for cond in CONDITIONINGS:
        model = perturbed(DiT(**SMALL, conditioning=cond))
        x, t, y = inputs()
        out = model(x, t, y)
        assert out.abs().min() > 0, cond
        assert not torch.allclose(out, model(x, t.flip(0), y)), cond
        assert not torch.allclose(out, model(x, t, y.flip(0))), cond


def test_init_statistics():
    model = DiT(**{**SMALL, "hidden_size": 64, "num_heads": 4})
    assert abs(model.y_embedder.embedding_table.weight.std().item() - 0.02) < 0.003
    assert abs(model.t_embedder.mlp[0].weight.std().item() - 0.02) < 0.002
    qkv = model.blocks[0].attn.qkv.weight
    bound = math.sqrt(6 / (qkv.shape[0] + qkv.shape[1]))  # xavier-uniform
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.9 * bound
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0
    conv = model.x_embedder.proj.weight  # xavier on the (out, in*p*p) view
    assert conv.abs().max() <= math.sqrt(6 / (conv.shape[0] + conv[0].numel()))


# --- conventions (independent computations) -----------------------------------------------------


def test_timestep_embedding_cos_then_sin():
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    got = timestep_embedding(t, dim=8)
    for n, tv in enumerate(t.tolist()):
        for k in range(4):
            freq = 10000 ** (-k / 4)
            assert got[n, k].item() == pytest.approx(math.cos(tv * freq), abs=1e-5)
            assert got[n, 4 + k].item() == pytest.approx(math.sin(tv * freq), abs=1e-5)
    assert timestep_embedding(t, dim=7)[:, -1].abs().sum() == 0  # odd dims: zero padding column


def test_pos_embed_width_first_and_sin_before_cos():
    D, grid = 16, 3
    table = get_2d_sincos_pos_embed(D, grid)
    assert table.shape == (9, 16) and table.dtype == torch.float32
    for token in range(grid * grid):
        row, col = divmod(token, grid)  # tokens are row-major; the width coordinate is the column
        for k in range(D // 4):
            omega = 1 / 10000 ** (k / (D / 4))
            expect = [math.sin(col * omega), math.cos(col * omega), math.sin(row * omega), math.cos(row * omega)]
            for quarter, value in enumerate(expect):
                assert table[token, quarter * D // 4 + k].item() == pytest.approx(value, abs=1e-6)
    assert torch.equal(DiT(**SMALL).pos_embed[0], get_2d_sincos_pos_embed(32, 4))


def test_unpatchify_feature_order_is_p1_p2_c():
    model = DiT(**SMALL)  # 8x8 latent, p=2: 4x4 tokens of 2*2*8 features
    p, side, C = 2, 4, 8
    tokens = torch.zeros(1, side * side, p * p * C)
    for h in range(side):
        for w in range(side):
            for p1 in range(p):
                for p2 in range(p):
                    for c in range(C):
                        tokens[0, h * side + w, (p1 * p + p2) * C + c] = 1000 * c + 100 * h + 10 * w + 2 * p1 + p2
    img = model.unpatchify(tokens)
    assert img.shape == (1, C, 8, 8)
    for c, i, j in [(0, 0, 0), (5, 3, 6), (7, 7, 7), (2, 1, 4)]:
        h, p1, w, p2 = i // p, i % p, j // p, j % p
        assert img[0, c, i, j].item() == 1000 * c + 100 * h + 10 * w + 2 * p1 + p2


def test_label_dropout_uses_the_null_class():
    assert null_class(10) == 10 and DiT(**SMALL).null_class == 10 and ModelConfig().null_class == 1000
    emb = LabelEmbedder(num_classes=10, hidden_size=4, dropout_prob=0.0)
    assert emb.embedding_table.weight.shape == (11, 4)  # the null row exists even without dropout
    labels = torch.tensor([1, 2, 3])
    forced = emb(labels, train=False, force_drop_ids=torch.tensor([1, 0, 1]))
    table = emb.embedding_table.weight
    assert torch.equal(forced, torch.stack([table[10], table[2], table[10]]))
    assert torch.equal(emb(labels, train=True), table[labels])  # dropout 0: nothing dropped
    always = LabelEmbedder(10, 4, dropout_prob=1.0)
    assert torch.equal(always.token_drop(labels), torch.full((3,), 10))
    for train in (True, False):  # dropout 1: an unconditional model, the null label in sampling too
        assert torch.equal(always(labels, train=train), always.embedding_table.weight[[10, 10, 10]])
    torch.manual_seed(0)
    half = LabelEmbedder(10, 4, dropout_prob=0.5).token_drop(torch.zeros(4000, dtype=torch.long))
    assert set(half.unique().tolist()) == {0, 10} and 0.45 < (half == 10).float().mean() < 0.55


def test_timestep_dtype_does_not_matter():
    model = perturbed(DiT(**SMALL))
    x, t, y = inputs()
    assert torch.equal(model(x, t, y), model(x, t.float(), y))
    assert torch.equal(model(x, torch.tensor(7), y), model(x, torch.full((3,), 7), y))


# --- public key layout and forward --------------------------------------------------------------


def public_keys(depth):
    """The public DiT state-dict keys, from REFERENCE.md's description."""
    keys = ["pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias"]
    keys += [f"t_embedder.mlp.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")]
    keys += ["y_embedder.embedding_table.weight"]
    for i in range(depth):
        for mod in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"):
            keys += [f"blocks.{i}.{mod}.weight", f"blocks.{i}.{mod}.bias"]
    keys += [f"final_layer.{m}.{w}" for m in ("linear", "adaLN_modulation.1") for w in ("weight", "bias")]
    return keys


def test_xl2_state_dict_has_exactly_the_public_keys():
    with torch.device("meta"):
        model = DiT_models["DiT-XL/2"]()
    sd = model.state_dict()
    assert len(sd) == 292 and sorted(sd) == sorted(public_keys(28))
    assert sd["y_embedder.embedding_table.weight"].shape == (1001, 1152)
    assert sd["pos_embed"].shape == (1, 256, 1152)
    assert sd["x_embedder.proj.weight"].shape == (1152, 4, 2, 2)
    assert sd["final_layer.linear.weight"].shape == (2 * 2 * 8, 1152)
    with torch.device("meta"):
        fake = {k: torch.empty(v.shape) for k, v in sd.items()}
    assert not model.load_state_dict(fake, strict=True, assign=True).missing_keys


def reference_forward(sd, x, t, y, p, heads):
    """The public DiT forward, re-implemented with plain tensor ops from a state dict."""

    def linear(name, v):
        return v @ sd[name + ".weight"].T + sd[name + ".bias"]

    def norm(v):  # LayerNorm without affine, eps 1e-6
        return (v - v.mean(-1, keepdim=True)) / torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + 1e-6)

    def gelu_tanh(v):
        return 0.5 * v * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    N, C, H, W = x.shape
    D = sd["pos_embed"].shape[-1]
    patches = x.reshape(N, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(N, -1, C * p * p)
    h = patches @ sd["x_embedder.proj.weight"].reshape(D, -1).T + sd["x_embedder.proj.bias"] + sd["pos_embed"]
    k = torch.arange(128, dtype=torch.float32)  # float32 like the public code: t=999 is phase-sensitive
    angles = t.float()[:, None] * torch.exp(-math.log(10000) * k / 128)[None]
    temb = torch.cat([angles.cos(), angles.sin()], 1)
    temb = linear("t_embedder.mlp.2", F.silu(linear("t_embedder.mlp.0", temb)))
    c = F.silu(temb + sd["y_embedder.embedding_table.weight"][y])
    n_blocks = len({key.split(".")[1] for key in sd if key.startswith("blocks.")})
    for i in range(n_blocks):
        b = f"blocks.{i}."
        s1, sc1, g1, s2, sc2, g2 = linear(b + "adaLN_modulation.1", c)[:, None].split(D, dim=-1)
        a = norm(h) * (1 + sc1) + s1
        q, kk, v = linear(b + "attn.qkv", a).reshape(N, -1, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(D // heads), dim=-1) @ v
        h = h + g1 * linear(b + "attn.proj", att.transpose(1, 2).reshape(N, -1, D))
        m = norm(h) * (1 + sc2) + s2
        h = h + g2 * linear(b + "mlp.fc2", gelu_tanh(linear(b + "mlp.fc1", m)))
    shift, scale = linear("final_layer.adaLN_modulation.1", c)[:, None].split(D, dim=-1)
    out = linear("final_layer.linear", norm(h) * (1 + scale) + shift)  # (N, T, p*p*C_out)
    out = out.reshape(N, H // p, W // p, p, p, -1)
    return torch.einsum("nhwpqc->nchpwq", out).reshape(N, -1, H, W)


def test_forward_matches_independent_reimplementation_of_public_forward():
    model = perturbed(DiT(**SMALL))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert sorted(sd) == sorted(public_keys(2))
    fresh = DiT(**SMALL)
    fresh.load_state_dict(sd, strict=True)  # a public-layout state dict loads strictly
    x, t, y = inputs()
    with torch.no_grad():
        ours, ref = fresh.eval()(x, t, y), reference_forward(sd, x, t, y, p=2, heads=2)
    assert ours.shape == ref.shape == (3, 8, 8, 8)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cond", CONDITIONINGS)
def test_every_variant_runs_forward_and_backward(cond):
    model = DiT(**SMALL, conditioning=cond, learn_sigma=False).train()
    x, t, y = inputs()
    out = model(x, t, y)
    assert out.shape == x.shape
    (out - x).square().mean().backward()  # the output is 0 at init, yet gradients reach the zero head
    assert model.final_layer.linear.weight.grad.abs().sum() > 0


# --- configuration ------------------------------------------------------------------------------


def test_config_roundtrip_presets_and_overrides():
    cfg = preset_config("DiT-XL/2", input_size=64)
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size, cfg.input_size) == (28, 1152, 16, 2, 64)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert preset_config("DiT-S/8", in_channels=3).out_channels == 6  # pixel space
    assert ModelConfig(learn_sigma=False).out_channels == 4
    assert ModelConfig(mlp_ratio=4).mlp_ratio == 4.0 and isinstance(ModelConfig(mlp_ratio=4).mlp_ratio, float)
    model = DiT.from_config(ModelConfig(**SMALL))
    assert isinstance(model, DiT) and model.config == ModelConfig(**SMALL)
    assert DiT.from_config(model.config).config == model.config


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(input_size=31), "not divisible by patch size 2"),
        (dict(hidden_size=100, num_heads=16), "not divisible by num_heads"),
        (dict(depth=0), "depth must be a positive integer"),
        (dict(conditioning="film"), "unknown conditioning 'film'; choose one of adaln-zero"),
        (dict(num_classes=-1), "num_classes must be >= 0"),
        (dict(class_dropout_prob=1.5), "class_dropout_prob must be in [0, 1]"),
        (dict(depth="28"), "depth must be of type int"),
        (dict(learn_sigma=1), "learn_sigma must be of type bool"),
    ],
)
def test_bad_configs_raise_user_error(bad, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**bad)
    with pytest.raises(UserError):
        DiT(**bad)


def test_unknown_names_and_keys_are_listed():
    with pytest.raises(UserError, match="unknown model 'DiT-XXL/2'; choose one of DiT-S/2, DiT-S/4"):
        preset_config("DiT-XXL/2")
    with pytest.raises(UserError, match=r"unknown model config keys \['depht'\]"):
        ModelConfig.from_dict({"depht": 3})
    with pytest.raises(UserError, match="depht"):
        preset_config("DiT-S/2", depht=3)
