"""The eager family: registry, parameter counts, MACs, inputs it refuses, backbone mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import partialnet
from partialnet.errors import ConfigError, InputShapeError, UnknownVariantError

# The authors' state-dict parameter counts (upstream-partialnet.md).
AUTHORS_PARAMS = {
    "t0": 3486160,
    "t1": 6144552,
    "t2": 12269816,
    "s": 28013304,
    "m": 59179000,
    "l": 100641336,
}
# GMACs at 224 from the authors' table (fvcore: conv, linear, attention matmuls).
AUTHORS_GMACS = {"t0": 0.235, "t1": 0.546, "t2": 1.039, "s": 2.716, "m": 6.693, "l": 11.909}


def test_list_variants() -> None:
    assert partialnet.list_variants() == ["t0", "t1", "t2", "s", "m", "l"]


@pytest.mark.parametrize("name", list(AUTHORS_PARAMS))
def test_params_and_macs_match_authors(name: str) -> None:
    model = partialnet.create_model(name)
    stats = partialnet.complexity(model)
    assert stats.params == AUTHORS_PARAMS[name]
    # 2%: fvcore and torch's counter differ in what they count (measured 0.6-1.04% on t0-t2).
    assert stats.gmacs == pytest.approx(AUTHORS_GMACS[name], rel=0.02)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        # t0, t1, t2 are equally close to "t3"; difflib breaks the tie by the larger string.
        ("t3", " (did you mean 't2'?)"),
        ("mm", " (did you mean 'm'?)"),
        ("zzzzzz", ""),  # nothing close: no guess
    ],
)
def test_unknown_variant_lists_valid_and_nearest(name: str, hint: str) -> None:
    with pytest.raises(UnknownVariantError) as err:
        partialnet.create_model(name)
    assert str(err.value) == (
        f"unknown PartialNet variant '{name}'{hint}; valid variants: t0, t1, t2, s, m, l"
    )


def test_unknown_override_refused() -> None:
    with pytest.raises(ConfigError, match="unknown model option"):
        partialnet.create_model("t0", layer_scale=1e-6)


def test_overrides_change_architecture() -> None:
    model = partialnet.create_model("t0", num_classes=10, in_chans=1, act="relu", n_div=2)
    assert model.head.out_features == 10
    assert model.patch_embed.proj.in_channels == 1
    assert model.stages[0].blocks[0].spatial_mixing.dim_conv == 16
    assert isinstance(model.avgpool_pre_head[2], torch.nn.ReLU)
    out = model.eval()(torch.randn(1, 1, 64, 64))
    assert out.shape == (1, 10)


def test_dpconv_needs_power_of_two() -> None:
    with pytest.raises(ConfigError, match="power-of-two"):
        partialnet.create_model("t1", auto_div=True)  # 48 channels


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ((1, 1, 224, 224), "(N, 3, H, W)"),
        ((1, 3, 16, 16), "multiples of 32"),
        ((1, 3, 224, 200), "multiples of 32"),
        ((3, 224, 224), "(N, 3, H, W)"),
    ],
)
def test_bad_inputs_are_refused(t0_random, shape, fragment) -> None:
    with pytest.raises(InputShapeError) as err:
        t0_random(torch.randn(*shape))
    assert fragment in str(err.value)


def test_smallest_input_is_finite(t0_random) -> None:
    # 32 px: the channel attention's last map is 2x2, its unbiased std still defined.
    out = t0_random(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(out).all()


def test_backbone_returns_four_stage_maps() -> None:
    model = partialnet.create_model("t0", features_only=True).eval()
    feats = model(torch.randn(1, 3, 224, 256))
    assert [tuple(f.shape) for f in feats] == [
        (1, 32, 56, 64),
        (1, 64, 28, 32),
        (1, 128, 14, 16),
        (1, 256, 7, 8),
    ]


def test_dpconv_training_learns_split_and_eval_uses_it() -> None:
    torch.manual_seed(0)
    model = partialnet.create_model("t0", auto_div=True)
    dp = model.stages[0].blocks[0].spatial_mixing
    with torch.no_grad():
        dp.gate.copy_(torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0]))  # two closed gates
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert dp.gate.grad is not None
    assert int(dp.c_div) == 4 and int(dp.one_channel) == 8
    model.eval()
    x = torch.randn(1, 32, 8, 8)
    y = dp(x)
    # Eval: first 8 channels convolved with the top-left 8x8 block, the rest passed through.
    expected_head = torch.nn.functional.conv2d(x[:, :8], dp.conv.weight[:8, :8], padding=1)
    assert torch.equal(y[:, 8:], x[:, 8:])
    np.testing.assert_allclose(y[:, :8].detach(), expected_head.detach(), rtol=0, atol=1e-6)


def test_a_forward_in_inference_mode_leaves_training_possible():
    # The relative-position buckets are cached per map size; one cached inside
    # inference_mode must still index the bias table in a later autograd forward.
    from partialnet.rpe import bucket_ids

    bucket_ids.cache_clear()
    torch.manual_seed(0)
    model = partialnet.create_model("t0", num_classes=10)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).sum().backward()
    assert model.stages[6].blocks[0].spatial_mixing.attn.rpe_k.lookup_table_bias.grad is not None
