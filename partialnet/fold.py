"""Exact algebra for folding BatchNorms and affines into neighbouring convolutions."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(s, t) with bn(x) == x * s + t per channel, using the running statistics."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    return scale, shift


def conv_then_bn(
    weight: Tensor, bn: nn.BatchNorm2d, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``bn(conv(x, weight, bias))`` as one conv."""
    scale, shift = bn_scale_shift(bn)
    base = bias if bias is not None else torch.zeros_like(scale)
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), base * scale + shift


def matrix(conv_weight: Tensor) -> Tensor:
    """A 1x1 conv's (out, in, 1, 1) weight as an (out, in) matrix."""
    return conv_weight.reshape(conv_weight.shape[0], conv_weight.shape[1])


def as_conv1x1(mat: Tensor) -> Tensor:
    return mat.reshape(mat.shape[0], mat.shape[1], 1, 1)


def add_identity(conv3_weight: Tensor) -> Tensor:
    """``conv(x, W) + x`` as ``conv(x, W')`` for a same-padded odd square kernel."""
    folded = conv3_weight.clone()
    k = conv3_weight.shape[-1] // 2
    idx = torch.arange(conv3_weight.shape[0], device=conv3_weight.device)
    folded[idx, idx, k, k] += 1.0
    return folded


def new_conv(weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """An nn.Conv2d holding the given (detached, contiguous) tensors, on their device/dtype."""
    out_c, in_c, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_c,
        out_c,
        (kh, kw),
        stride,
        padding,
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    conv.weight = nn.Parameter(weight.detach().clone().contiguous(), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.detach().clone().contiguous(), requires_grad=False)
    return conv
