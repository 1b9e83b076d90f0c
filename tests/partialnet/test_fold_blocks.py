"""Each block kind against its inference module, with weights and statistics at trained scale.

``trunc_normal(std=0.02)`` weights make every activation tiny, so terms of a few percent
barely move the output: in the whole-model t0 test at 224 px, removing the channel gate's
Bessel factor moves the logits by 5e-7 x max|logit| (measured), inside its 1e-5 tolerance.
Here convolutions get N(0, 1/fan_in) weights, so activations keep unit scale through the
block, and every BatchNorm holds the statistics of the batches actually run through it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from partialnet.dpconv import DPConv
from partialnet.inference import ChannelGate
from partialnet.layers import (
    LayerNorm2d,
    PartialBlock,
    PartialConv,
    PATChannel,
    PATSelf,
    make_mlp,
)
from partialnet.reparam import _block
from partialnet.rpe import RelativePositionBias

DIM = 64
HW = (8, 8)  # 64 pixels: the Bessel factor sqrt(64/63) is 1.0079
# A folded block re-associates float32 sums of a few hundred terms: measured max|diff| from
# 2.5e-7 (PConv) to 1.1e-6 (PAT_sp) x max|eager| over 5 seeds. 1e-5 leaves ~9x margin;
# dropping the Bessel factor moves the PAT_ch block by 3e-3 to 9e-3 (asserted below).
REL_TOL = 1e-5


def _rel_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


def _batches(gen: torch.Generator, n: int = 4) -> list[Tensor]:
    """Inputs with per-channel offsets and scales, as a previous block's output has."""
    offset = torch.randn(1, DIM, 1, 1, generator=gen)
    scale = torch.rand(1, DIM, 1, 1, generator=gen) + 0.5
    return [torch.randn(8, DIM, *HW, generator=gen) * scale + offset for _ in range(n)]


@torch.no_grad()
def _trained_scale(block: nn.Module, gen: torch.Generator) -> nn.Module:
    """N(0, 1/fan_in) weights, random affines and bias tables, BN statistics from real batches."""
    for mod in block.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            fan_in = mod.weight[0].numel()
            mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) / math.sqrt(fan_in))
            if mod.bias is not None:
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
        elif isinstance(mod, (nn.BatchNorm2d, LayerNorm2d)):
            mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
            mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.2)
        elif isinstance(mod, RelativePositionBias):
            mod.lookup_table_bias.copy_(torch.randn(mod.lookup_table_bias.shape, generator=gen))
    block.eval()
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:  # only the BNs train: cumulative averages of the batches' statistics
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    for x in _batches(gen):
        block(x)
    for bn in norms:
        bn.momentum = 0.1
        bn.eval()
    return block


def _pat_ch() -> PartialBlock:
    return PartialBlock(PATChannel(DIM, 4), make_mlp(DIM, 2.0, "gelu", False), False, 0.0)


def _pat_sp() -> PartialBlock:
    return PartialBlock(PartialConv(DIM, 4), make_mlp(DIM, 2.0, "gelu", True), False, 0.0)


def _pat_sf() -> PartialBlock:
    return PartialBlock(PATSelf(DIM, 4, 4), make_mlp(DIM, 2.0, "gelu", False), True, 0.0)


def _dpconv() -> PartialBlock:
    mixer = DPConv(DIM, 4)
    mixer.c_div.fill_(8)  # a learned split: the first 8 of 64 channels are convolved
    mixer.one_channel.fill_(DIM // 8)
    return PartialBlock(mixer, make_mlp(DIM, 2.0, "relu", False), False, 0.0)


def _pconv() -> PartialBlock:
    return PartialBlock(PartialConv(DIM, 4), make_mlp(DIM, 2.0, "relu", False), False, 0.0)


BLOCKS: dict[str, tuple[Callable[[], PartialBlock], str]] = {
    "PAT_ch": (_pat_ch, "gelu"),
    "PAT_sp-mlp": (_pat_sp, "gelu"),
    "PAT_sf": (_pat_sf, "gelu"),
    "DPConv": (_dpconv, "relu"),
    "PConv": (_pconv, "relu"),
}


def _pair(kind: str, seed: int = 0) -> tuple[nn.Module, nn.Module, Tensor]:
    make, act = BLOCKS[kind]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    eager = _trained_scale(make(), gen)
    with torch.no_grad():
        folded = _block(eager, HW, act).eval()
    return eager, folded, _batches(gen, 1)[0]


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_block_folds_exactly_at_trained_scale(kind: str) -> None:
    eager, folded, x = _pair(kind)
    with torch.no_grad():
        ref, out = eager(x), folded(x)
    assert ref.abs().max() > 1.0  # unit-scale activations, not the 0.02-init regime
    assert _rel_diff(ref, out) <= REL_TOL


def test_dropping_the_bessel_factor_would_fail_the_tolerance() -> None:
    eager, folded, x = _pair("PAT_ch")
    biased = copy.deepcopy(folded)
    (gate,) = [m for m in biased.modules() if isinstance(m, ChannelGate)]
    n = gate.num_pixels
    with torch.no_grad():
        # Undo sqrt(N / (N - 1)) on the std columns: the gate then sees the biased std.
        gate.fc.weight[:, gate.fc.out_channels :] /= math.sqrt(n / (n - 1))
        ref, good, bad = eager(x), folded(x), biased(x)
    assert _rel_diff(ref, good) <= REL_TOL
    assert _rel_diff(ref, bad) > 10 * REL_TOL


def test_eager_running_stats_come_from_the_batches() -> None:
    eager, _, _ = _pair("PAT_ch")
    bn = eager.mlp[1]
    # Not the defaults (mean 0, var 1): a fold that ignored them would be visible.
    assert bn.running_mean.abs().max() > 0.05
    assert (bn.running_var - 1).abs().max() > 0.05
