"""The text-conditioned DiT's checks (issue 35, part 5) and its data: the empty caption is the unconditional
model exactly, padding changes nothing, joint attention without text is image-only attention, cross-attention
to one token is a bias; the tokenizers; the captioned scenes keep their held-out pairs out and their captions
true to the ground truth."""

import numpy as np
import pytest
import torch
from einops import rearrange

from dit.data import shapes_captions as sc
from dit.networks.conditioning import TEXT, TEXT_IDS, TEXT_MASK, unconditional
from dit.networks.layers import modulate
from dit.networks.layers import CrossAttention, masked_attention
from dit.networks.text_blocks import JointDiTBlock
from dit.networks.text_config import TEXT_CONDITIONINGS, TextConfig
from dit.networks.text_dit import TextDiT
from dit.networks.text_tokenizer import PAD, UNK, TextTokenizer, split_words
from dit.errors import UserError

CAPTIONS = ["a red square at the top left", "there is a big blue circle left of a green plus", ""]


def tiny(conditioning: str, seed: int = 0) -> TextDiT:
    """A small text DiT with every weight moved off its (often zero) init, so no check passes by zeros."""
    torch.manual_seed(seed)
    net = TextDiT(TextConfig(input_size=16, patch_size=4, in_channels=3, hidden_size=64, depth=3, num_heads=2,
                             learn_sigma=False, conditioning=conditioning, vocabulary=" ".join(sc.vocabulary()),
                             text_length=24)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def inputs(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.rand(n, generator=g) * 999


@pytest.mark.parametrize("conditioning", TEXT_CONDITIONINGS)
def test_the_empty_caption_is_the_unconditional_model_exactly(conditioning):
    net, (x, t) = tiny(conditioning), inputs()
    with torch.no_grad():
        out = net(x, t, net.encode_text(CAPTIONS))
        none = net(x, t, {})  # no text at all: a sequence of length 0
        dropped = net(x, t, {**net.encode_text(CAPTIONS), "drop": torch.tensor([1, 0, 1])})
        uncond = net(x, t, unconditional({"y": torch.zeros(3, dtype=torch.long), **net.encode_text(CAPTIONS)}, 0))
    assert torch.equal(out[2], none[2])  # "" has no real token
    assert torch.equal(dropped[0], none[0]) and torch.equal(dropped[1], out[1])  # caption dropout: the empty caption
    assert torch.equal(uncond, none)  # guidance's unconditional branch
    assert (out[0] - none[0]).abs().max() > 1e-2 and (out[0] - out[1]).abs().max() > 1e-2  # the text matters


@pytest.mark.parametrize("conditioning", TEXT_CONDITIONINGS)
def test_captions_encoded_once_give_the_same_outputs(conditioning):
    """Sampling encodes each prompt once (encode_text(features=True)): the network's outputs, conditional and
    unconditional (the null text zeroes only the mask), are those of encoding the caption at every call."""
    net, (x, t) = tiny(conditioning), inputs()
    with torch.no_grad():
        every, once = net.encode_text(CAPTIONS), net.encode_text(CAPTIONS, features=True)
        assert set(once) == {TEXT_IDS, TEXT_MASK, TEXT} and once[TEXT].shape == (3, 24, net.config.encoder_width)
        torch.testing.assert_close(net(x, t, once), net(x, t, every), atol=1e-6, rtol=0)
        moved = net(x, t, {**once, TEXT: once[TEXT] + 0.5})  # the given features are what the network reads
        assert (moved[:2] - net(x, t, once)[:2]).abs().max() > 1e-3
        y = {"y": torch.zeros(3, dtype=torch.long)}
        assert torch.equal(net(x, t, unconditional({**y, **once}, 0)), net(x, t, unconditional({**y, **every}, 0)))


@pytest.mark.parametrize("conditioning", TEXT_CONDITIONINGS)
def test_padding_changes_nothing(conditioning):
    net, (x, t) = tiny(conditioning), inputs()
    tok = net.config.tokenizer
    with torch.no_grad():
        short = net(x, t, {TEXT_IDS: tok.encode(CAPTIONS, 12)})
        long = net(x, t, {TEXT_IDS: tok.encode(CAPTIONS, 24)})
    torch.testing.assert_close(long, short, atol=2e-6, rtol=0)  # measured ~4e-7: float sums in another order


def test_joint_attention_without_text_is_image_only_attention():
    torch.manual_seed(0)
    block = JointDiTBlock(32, 2, mlp_ratio=2.0, qk_norm=True).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, ctx, c = torch.randn(2, 6, 32), torch.randn(2, 5, 32), torch.randn(2, 32)
    with torch.no_grad():
        empty, _ = block(x, ctx, torch.zeros(2, 5, dtype=torch.bool), c)
        gone, _ = block(x, ctx[:, :0], torch.zeros(2, 0, dtype=torch.bool), c)
        with_text, _ = block(x, ctx, torch.ones(2, 5, dtype=torch.bool), c)
        # The image stream alone, written out here: self-attention over the 6 image tokens with the block's weights.
        shift, scale, gate, shift2, scale2, gate2 = block.adaLN_modulation(c).chunk(6, dim=1)
        q, k, v = rearrange(block.qkv(modulate(block.norm1(x), shift, scale)), "b t (n h d) -> n b h t d", n=3, h=2)
        q, k = block.q_norm(q), block.k_norm(k)
        att = torch.softmax(q @ k.transpose(-1, -2) / 16**0.5, dim=-1) @ v
        ref = x + gate[:, None] * block.proj(rearrange(att, "b h t d -> b t (h d)"))
        ref = ref + gate2[:, None] * block.mlp(modulate(block.norm2(ref), shift2, scale2))
    torch.testing.assert_close(empty, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(empty, gone, atol=1e-6, rtol=0)  # another SDPA length: float rounding
    assert (with_text - ref).abs().max() > 1e-2


def test_cross_attention_to_one_token_is_a_bias():
    torch.manual_seed(0)
    attn = CrossAttention(32, 4)
    x, ctx = torch.randn(2, 7, 32), torch.randn(2, 3, 32)
    mask = torch.tensor([[False, True, False], [True, False, False]])  # one real token each, elsewhere padding
    with torch.no_grad():
        out = attn(x, ctx, mask)
        token = ctx[mask]  # (2, 32): the one real token of each sample
        value = token @ attn.kv.weight[32:].T + attn.kv.bias[32:]  # W_v e + b_v: softmax over one key is 1
        bias = value @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(out, bias[:, None].expand_as(out), atol=1e-5, rtol=0)  # the same for every query


def test_masked_attention_ignores_padding_and_gives_zero_without_keys():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 4, 8, generator=g) for _ in range(3))
    k[:, :, 2:] = 1e4  # padding that would dominate any softmax it took part in
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    out = masked_attention(q, k, v, mask)
    ref = torch.softmax(q[0] @ k[0, :, :2].transpose(-1, -2) / 8**0.5, -1) @ v[0, :, :2]
    torch.testing.assert_close(out[0], ref, atol=1e-5, rtol=0)
    assert torch.equal(out[1], torch.zeros_like(out[1]))  # no NaN from a softmax over nothing


def test_tokenizers():
    words = TextTokenizer("words", ["a", "red", "square"])
    ids = words.encode(["A red, RED square!", "a blue square", ""], 4)
    assert ids.tolist() == [[2, 3, 3, 4], [2, UNK, 4, PAD], [PAD] * 4]
    assert words.unknown("a blue square") == ["blue"] and words.vocab_size == 5
    assert words.encode(["a red square a red"], 3).tolist() == [[2, 3, 4]]  # cut at the length
    by = TextTokenizer("bytes")
    assert by.encode(["ab"], 3).tolist() == [[98, 99, PAD]] and by.vocab_size == 257
    assert split_words("top-left corner, 2 discs") == ["top", "left", "corner", "2", "discs"]
    for bad in (lambda: TextTokenizer("chars"), lambda: TextTokenizer("words", []),
                lambda: TextTokenizer("words", ["a", "a"])):
        with pytest.raises(UserError):
            bad()


def test_scenes_keep_held_out_pairs_out_and_relations_true():
    images, scenes, relations = sc.render_dataset(400, 32, seed=3)
    ds = sc.ShapesCaptions(images, scenes, relations)
    pairs = 0
    for i in range(len(ds)):
        things, rel = ds.things(i), ds.relation(i)
        assert not any(sc.held_out(t.shape, t.colour, t.cell) for t in things)
        if rel is not None:
            pairs += 1
            assert len(things) == 2 and sc.relation_holds(*things, rel)
    assert 0.2 < pairs / len(ds) < 0.4  # PAIR_SHARE 0.3
    seen = {(t.shape, t.colour) for i in range(len(ds)) for t in ds.things(i)}
    assert len(seen) == 24 - len(sc.HELD_OUT_COLOURS)  # every other colour-shape pair is rendered
    again, _, _ = sc.render_dataset(5, 32, seed=3)
    assert torch.equal(again, images[:5])  # scene i from rng [seed, i]


def test_ground_truth_masks_sit_in_their_cells_with_their_colours():
    rng = np.random.default_rng(0)
    for _ in range(50):
        things, _ = sc.draw_scene(rng)
        image, masks = sc.render_scene(things, rng, 32)
        for thing, mask in zip(things, masks):
            ys, xs = np.nonzero(mask > 0.5)
            cx, cy = xs.mean() / 32 + 0.5 / 32, ys.mean() / 32 + 0.5 / 32
            assert int(cy * 3) * 3 + int(cx * 3) == thing.cell  # the centroid's cell is the stated one
            mean = image[mask > 0.9].mean(0)
            assert np.argmin(np.abs(sc.COLORS[:6] - mean).sum(1)) == thing.colour


def test_captions_say_what_the_scene_holds():
    rng = np.random.default_rng(1)
    for _ in range(200):
        things, rel = sc.draw_scene(rng)
        words = split_words(sc.caption(things, rel, rng))
        text = " ".join(words)
        for thing in things:
            assert sc.COLOUR_NAMES[thing.colour] in words
            assert any(" ".join(split_words(s)) in text for s in sc.SHAPE_WORDS[thing.shape])
        if rel is None:
            assert any(" ".join(split_words(p)) in text for p in sc.CELL_WORDS[things[0].cell])
        assert set(words) <= set(sc.vocabulary())
    assert sc.canonical_caption([sc.Thing(0, 1, 4, 1, 0, 0, 0, 0)], None) == "a large green circle in the center"


def test_config_refusals():
    with pytest.raises(UserError, match="choose one of adaln-zero, cross-attention, joint"):
        TextConfig(conditioning="in-context", vocabulary="a")
    with pytest.raises(UserError, match="captions, not classes"):
        TextConfig(num_classes=10, vocabulary="a")
    with pytest.raises(UserError, match="needs a vocabulary"):
        TextConfig(vocabulary="")
