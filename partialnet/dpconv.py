"""DPConv: dynamic partial convolution whose split ratio is learned by binary gates.

State-dict compatible with the authors' DGConv2d (`gate`, `I`, `one`, `c_div`, `one_channel`,
`conv.weight`). Training learns the split; eval convolves the first `one_channel` channels
with `conv.weight[:one_channel, :one_channel]` and passes the rest through, as the authors'
eval does. Unlike theirs, nothing prints, and eval never writes to the buffers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _SignSTE(torch.autograd.Function):
    """sign() forward, straight-through gradient clipped to |x| < 1."""

    @staticmethod
    def forward(ctx, gate: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(gate)
        return gate.sign()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (gate,) = ctx.saved_tensors
        return grad.masked_fill(gate.ge(1) | gate.le(-1), 0)


def gate_mask(gate: Tensor, eye: Tensor, ones: Tensor) -> Tensor:
    """The (C, C) mask: Kronecker product over gates of (g*ones + (1-g)*I), g in {0, 1}."""
    g = (_SignSTE.apply(gate) + 1) / 2
    mask = g[0] * ones + (1 - g[0]) * eye
    for k in range(1, gate.numel()):
        mask = torch.kron(mask, g[k] * ones + (1 - g[k]) * eye)
    return mask


class DPConv(nn.Module):
    def __init__(self, channels: int, n_div: int) -> None:
        super().__init__()
        if channels & (channels - 1):
            raise ValueError(f"DPConv needs a power-of-two channel count, got {channels}")
        self.channels = channels
        self.register_buffer("I", torch.eye(2))
        self.register_buffer("one", torch.ones(2, 2))
        self.register_buffer("c_div", torch.tensor(n_div, dtype=torch.int32))
        self.register_buffer("one_channel", torch.tensor(channels // n_div, dtype=torch.int32))
        num_gates = int(math.log2(channels))
        self.gate = nn.Parameter(torch.full((num_gates,), 1e-8))
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)

    def active_channels(self) -> int:
        """How many leading channels the eval form convolves (the learned split)."""
        return int(self.one_channel)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self._forward_train(x)
        n = self.active_channels()
        x1, x2 = torch.split(x, [n, self.channels - n], dim=1)
        return torch.cat([F.conv2d(x1, self.conv.weight[:n, :n], None, 1, 1), x2], dim=1)

    def _forward_train(self, x: Tensor) -> Tensor:
        mask = gate_mask(self.gate, self.I, self.one)
        with torch.no_grad():
            # Record the split the gates currently choose: 2^(number of closed gates).
            closed = int((self.gate.detach() < 0).sum())
            self.c_div.fill_(2**closed)
            self.one_channel.fill_(self.channels // 2**closed)
        weight = self.conv.weight * mask.view(self.channels, self.channels, 1, 1)
        return F.conv2d(x, weight, None, 1, 1)
