"""LightningDiT's block options on DiT (mlp, norm, pos, qk_norm): off by default, bit for bit the
public network; on, each does what it says, trains, counts, and survives a checkpoint."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from conftest import ROOT, TINY, randomize
from safetensors.torch import load_file

import sample
import train
from dit.analysis.flops import count_forward_macs, count_params
from dit.cli import run_cli
from dit.errors import UserError
from dit.io.checkpoint import load_model, save_export
from dit.networks.dit import DiT
from dit.networks.dit_config import BLOCK_DEFAULTS, ModelConfig, describe, infer_config, preset_config
from dit.networks.layers import get_2d_sincos_pos_embed, swiglu_hidden
from dit.networks.rope import apply_rope, rope_2d

ALL = dict(mlp="swiglu", norm="rmsnorm", pos="rope2d", qk_norm=True)
CONDITIONINGS = ("adaln-zero", "adaln", "in-context", "cross-attention")
LEGACY_EXPORT = ROOT / "tests" / "fixtures" / "legacy" / "export.safetensors"  # written by the code before options


def inputs(cfg: ModelConfig, n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    return x, torch.tensor([1, 400, 999][:n]), torch.arange(n) % cfg.num_classes


def seeded(seed: int = 0, **kw) -> DiT:
    torch.manual_seed(seed)
    return DiT(**{**TINY, **kw})


def public_keys(depth: int) -> set[str]:
    """The public DiT-*/p adaLN-Zero state-dict layout (facebookresearch/DiT models.py)."""
    top = ["pos_embed", "x_embedder.proj.weight", "x_embedder.proj.bias", "t_embedder.mlp.0.weight",
           "t_embedder.mlp.0.bias", "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias",
           "y_embedder.embedding_table.weight", "final_layer.linear.weight", "final_layer.linear.bias",
           "final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias"]
    per_block = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"]
    return set(top) | {f"blocks.{i}.{m}.{w}" for i in range(depth) for m in per_block for w in ("weight", "bias")}


# --- defaults: the public network, unchanged ------------------------------------------------------


def test_defaults_keep_the_public_layout_and_numbers():
    model = seeded()
    assert set(model.state_dict()) == public_keys(TINY["depth"])
    explicit = seeded(**BLOCK_DEFAULTS)
    assert list(explicit.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, explicit.state_dict()[k]), k
    randomize(model), randomize(explicit)
    model.eval(), explicit.eval()
    with torch.no_grad():
        assert torch.equal(model(*inputs(model.config)), explicit(*inputs(model.config)))


def test_a_file_written_before_the_options_loads_strictly_and_computes_the_same():
    """The legacy export (made by the code before these options) builds a default-option network;
    its bit-identical sampling is tests/test_legacy_fixture.py's job."""
    sd = load_file(str(LEGACY_EXPORT))
    old, ckpt = load_model(str(LEGACY_EXPORT))
    assert {k: old.config.to_dict()[k] for k in BLOCK_DEFAULTS} == BLOCK_DEFAULTS
    fresh = DiT.from_config(ModelConfig.from_dict(ckpt.config.to_dict()))
    assert set(fresh.state_dict()) == set(sd) == public_keys(old.config.depth)
    fresh.load_state_dict(sd, strict=True)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(*inputs(old.config)), old(*inputs(old.config)))


# --- each option -------------------------------------------------------------------------------


def test_swiglu_keys_widths_and_parameter_match():
    model = seeded(mlp="swiglu")
    h = swiglu_hidden(TINY["hidden_size"], 4.0)
    assert h == 2 * 4 * TINY["hidden_size"] // 3
    mlp = {k: v.shape for k, v in model.blocks[0].mlp.state_dict().items()}
    D = TINY["hidden_size"]
    assert mlp == {"fc1_g.weight": (h, D), "fc1_g.bias": (h,), "fc1_x.weight": (h, D), "fc1_x.bias": (h,),
                   "fc2.weight": (D, h), "fc2.bias": (D,)}
    x = torch.randn(2, 5, D)
    m = model.blocks[0].mlp
    torch.testing.assert_close(m(x), m.fc2(nn.functional.silu(m.fc1_g(x)) * m.fc1_x(x)))


@pytest.mark.parametrize("hidden, heads", [(128, 2), (1152, 16)])
def test_swiglu_parameters_within_one_percent_of_gelu(hidden, heads):
    with torch.device("meta"):
        gelu = DiT(**{**TINY, "hidden_size": hidden, "num_heads": heads})
        swiglu = DiT(**{**TINY, "hidden_size": hidden, "num_heads": heads, "mlp": "swiglu"})
    per_mlp = [count_params(m.blocks[0].mlp) for m in (gelu, swiglu)]
    assert abs(per_mlp[1] / per_mlp[0] - 1) < 0.01, per_mlp
    assert abs(count_params(swiglu) / count_params(gelu) - 1) < 0.01


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_rmsnorm_replaces_every_norm_with_the_same_affinity(conditioning):
    ln, rms = seeded(conditioning=conditioning), seeded(conditioning=conditioning, norm="rmsnorm")
    ln_norms = {n: m for n, m in ln.named_modules() if isinstance(m, nn.LayerNorm)}
    rms_norms = {n: m for n, m in rms.named_modules() if isinstance(m, (nn.LayerNorm, nn.RMSNorm))}
    assert ln_norms.keys() == rms_norms.keys() and "final_layer.norm_final" in rms_norms
    for name, m in rms_norms.items():
        assert type(m) is nn.RMSNorm and m.eps == 1e-6, name
        assert m.elementwise_affine == ln_norms[name].elementwise_affine, name
    # An affine RMSNorm has a weight and no bias: the adaLN variants (no affine norms) keep every key.
    affine_biases = {f"{n}.bias" for n, m in ln_norms.items() if m.elementwise_affine}
    assert set(rms.state_dict()) == set(ln.state_dict()) - affine_biases
    assert bool(affine_biases) != conditioning.startswith("adaln")


def test_rmsnorm_changes_the_output_of_the_same_weights():
    ln, rms = randomize(seeded()).eval(), seeded(norm="rmsnorm").eval()
    rms.load_state_dict(ln.state_dict(), strict=True)
    with torch.no_grad():
        assert not torch.allclose(ln(*inputs(ln.config)), rms(*inputs(ln.config)))


def test_pos_options_keep_the_keys_and_say_what_is_added():
    sincos, rope, both = seeded(), seeded(pos="rope2d"), seeded(pos="sincos+rope2d")
    assert list(rope.state_dict()) == list(both.state_dict()) == list(sincos.state_dict())
    assert not rope.pos_embed.any() and not rope.pos_embed.requires_grad  # rope2d adds nothing
    table = get_2d_sincos_pos_embed(TINY["hidden_size"], TINY["input_size"] // TINY["patch_size"])
    assert torch.equal(both.pos_embed[0], table) and torch.equal(sincos.pos_embed[0], table)
    # The same weights with RoPE on compute another function.
    randomize(sincos).eval(), both.eval()
    both.load_state_dict(sincos.state_dict(), strict=True)
    with torch.no_grad():
        assert not torch.allclose(sincos(*inputs(sincos.config)), both(*inputs(sincos.config)))


def test_qk_norm_keys_shapes_and_scale_invariance():
    model = seeded(qk_norm=True)
    head_dim = TINY["hidden_size"] // TINY["num_heads"]
    extra = set(model.state_dict()) - set(seeded().state_dict())
    assert extra == {f"blocks.{i}.attn.{n}_norm.weight" for i in range(TINY["depth"]) for n in "qk"}
    assert all(model.state_dict()[k].shape == (head_dim,) and torch.all(model.state_dict()[k] == 1) for k in extra)
    attn = model.blocks[0].attn
    assert isinstance(attn.q_norm, nn.RMSNorm) and attn.q_norm.eps == 1e-6
    x = torch.randn(2, 16, TINY["hidden_size"])
    out = attn(x)
    assert out.shape == x.shape
    # q and k are normalised per head: scaling their projections leaves the attention unchanged.
    D = TINY["hidden_size"]
    with torch.no_grad():
        attn.qkv.weight[: 2 * D] *= 7.0
        attn.qkv.bias[: 2 * D] *= 7.0
    torch.testing.assert_close(attn(x), out, rtol=1e-4, atol=1e-5)


# --- RoPE -----------------------------------------------------------------------------------------


def rotated_everywhere(v: torch.Tensor, side: int) -> torch.Tensor:
    """One vector v (d,) placed at every token of a side x side grid and rotated there: (side*side, d)."""
    cos, sin = rope_2d(side, side, v.shape[-1])
    return apply_rope(v.expand(side * side, -1), cos, sin)


def test_rope_scores_depend_only_on_the_offset():
    side, d = 6, 16
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    scores = (rotated_everywhere(q.float(), side).double() @ rotated_everywhere(k.float(), side).double().T)
    s = scores.reshape(side, side, side, side)  # [q row, q col, k row, k col]
    for a in range(side):
        for b in range(side):  # move both tokens by (a, b)
            torch.testing.assert_close(s[a:, b:, a:, b:], s[: side - a, : side - b, : side - a, : side - b],
                                       rtol=0, atol=1e-5)
    # ... and do depend on it, differently along rows and columns.
    assert not torch.isclose(s[0, 0, 0, 1], s[0, 0, 1, 0]) and not torch.isclose(s[0, 0, 0, 0], s[0, 0, 0, 1])


def test_rope_layout_identity_at_the_origin_and_untouched_extra_tokens():
    side, d = 4, 16
    cos, sin = rope_2d(side, side, d)
    assert torch.equal(cos[0], torch.ones(d)) and torch.equal(sin[0], torch.zeros(d))
    x = torch.randn(2, 3, side * side + 2, d)
    out = apply_rope(x, cos, sin)
    assert torch.equal(out[..., 0, :], x[..., 0, :]) and torch.equal(out[..., -2:, :], x[..., -2:, :])
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # a rotation
    grid = cos.reshape(side, side, d)
    assert torch.equal(grid[:, :1, : d // 2].expand(-1, side, -1), grid[..., : d // 2])  # first half: the row only
    assert torch.equal(grid[:1, :, d // 2:].expand(side, -1, -1), grid[..., d // 2:])  # second half: the column only
    # Pair (2i, 2i+1) of a half turns by pos * 10000^(-2i / (d/2)); the pair shares its angle.
    pos = torch.arange(side, dtype=torch.float32)
    for i in range(d // 4):
        angle = pos * 10000.0 ** (-2 * i / (d // 2))
        torch.testing.assert_close(grid[:, 0, 2 * i], angle.cos())
        torch.testing.assert_close(grid[:, 0, 2 * i + 1], angle.cos())
        torch.testing.assert_close(grid[0, :, d // 2 + 2 * i], angle.cos())
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_2d(2, 2, 6)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # CPU: no fused bf16 kernel
def test_rope_keeps_the_dtype_under_autocast():
    model = randomize(seeded(pos="rope2d", qk_norm=True)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*inputs(model.config))
    assert torch.isfinite(out).all()


# --- everything on: trains, counts, round-trips ---------------------------------------------------


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_all_options_train(conditioning):
    model = seeded(conditioning=conditioning, **ALL)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)  # no decay: only gradients move weights
    x, t, y = inputs(model.config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):  # adaLN-Zero: the output layer moves first, then the gates, then the blocks
        opt.zero_grad()
        loss = (model(x, t, y) - 1).square().mean()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        opt.step()
    assert torch.isfinite(loss)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "blocks.0.mlp.fc1_g.weight" in moved and "blocks.0.attn.q_norm.weight" in moved


@pytest.mark.parametrize("preset, overrides", [
    ("DiT-XL/2", {}),  # 2/3 of 4 * 1152 is whole: exactly GELU's MACs
    ("DiT-S/2", dict(hidden_size=128, num_heads=2, depth=4, input_size=16)),  # the cpu-demo net: width rounded down
])
def test_flops_count_the_options(preset, overrides):
    """SwiGLU is parameter-matched, so its MACs nearly equal GELU's; norms and RoPE add no matmul."""
    with torch.device("meta"):
        gelu = DiT.from_config(preset_config(preset, **overrides))
        swiglu = DiT.from_config(preset_config(preset, mlp="swiglu", **overrides))
        others = DiT.from_config(preset_config(preset, norm="rmsnorm", pos="rope2d", qk_norm=True, **overrides))
    cfg = gelu.config
    D, h = cfg.hidden_size, swiglu_hidden(cfg.hidden_size, cfg.mlp_ratio)
    macs_gelu, macs_swiglu = count_forward_macs(gelu), count_forward_macs(swiglu)
    assert macs_gelu - macs_swiglu == cfg.depth * cfg.num_tokens * (2 * D * 4 * D - 3 * D * h)
    assert abs(macs_swiglu / macs_gelu - 1) < 0.001
    assert count_forward_macs(others) == macs_gelu


def test_config_round_trip_rebuilds_the_same_network(tmp_path):
    cfg = ModelConfig(**TINY, **ALL)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    model = randomize(DiT.from_config(cfg)).eval()
    save_export(tmp_path / "m.safetensors", model, image_size=16, vae="none")
    loaded, _ = load_model(str(tmp_path / "m.safetensors"))
    assert loaded.config == cfg
    with torch.no_grad():
        assert torch.equal(loaded(*inputs(cfg)), model(*inputs(cfg)))


def test_infer_config_and_describe_see_the_options():
    base = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=1, num_classes=10)
    for opts in ({}, dict(mlp="swiglu"), dict(qk_norm=True), dict(pos="rope2d"), dict(mlp="swiglu", mlp_ratio=3.0)):
        cfg = ModelConfig(**base, **opts)
        assert infer_config(DiT.from_config(cfg).state_dict()) == cfg, opts
    assert describe(ModelConfig(**TINY)).endswith("on a 8x8x4 input with 10 classes")
    assert "(mlp swiglu, norm rmsnorm, pos rope2d, qk-norm) on" in describe(ModelConfig(**TINY, **ALL))


@pytest.mark.parametrize("bad, message", [
    (dict(mlp="relu"), "unknown mlp 'relu'; choose one of gelu, swiglu"),
    (dict(norm="batchnorm"), "unknown norm 'batchnorm'; choose one of layernorm, rmsnorm"),
    (dict(pos="rope"), "unknown pos 'rope'; choose one of sincos, rope2d, sincos+rope2d"),
    (dict(qk_norm="yes"), "qk_norm must be of type bool"),
    (dict(pos="rope2d", hidden_size=40, num_heads=4), "divisible by 4"),
])
def test_bad_options_are_one_line_errors(bad, message):
    with pytest.raises(UserError) as e:
        ModelConfig(**{**TINY, **bad})
    assert message in str(e.value) and "\n" not in str(e.value)


# --- the scripts ------------------------------------------------------------------------------------


def test_train_flags(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert all(f in help_text for f in ("--mlp", "--norm", "--pos", "--qk-norm"))
    assert run_cli(train.main, ["--mlp", "relu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown mlp 'relu'; choose one of gelu, swiglu"]


def test_train_and_sample_with_every_option(tmp_path):
    argv = ["cpu-demo", "--mlp", "swiglu", "--norm", "rmsnorm", "--pos", "rope2d", "--qk-norm",
            "--model", "DiT-S/4", "--hidden-size", 32, "--depth", 2, "--num-heads", 2, "--image-size", 16,
            "--shapes-images", 64, "--global-batch-size", 8, "--max-steps", 2, "--ckpt-every", 2,
            "--sample-steps", 2, "--samples-per-class", 1, "--results-dir", tmp_path, "--run-name", "opts",
            "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, argv)], capture_output=True, text=True,
                         timeout=600, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "opts"
    state = json.loads((run / "checkpoints" / "step_000000002" / "train_state.json").read_text())
    assert {k: state["config"][k] for k in ALL} == ALL
    model, _ = load_model(str(run))
    assert {k: getattr(model.config, k) for k in ALL} == ALL
    out = tmp_path / "grid.png"
    assert run_cli(sample.main, [str(a) for a in ["--ckpt", run, "--classes", 0, 3, "--steps", 3, "--out", out,
                                                  "--no-progress"]]) == 0
    assert out.is_file() and out.stat().st_size > 0
