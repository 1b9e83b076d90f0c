"""The LiteRT form of the inference model: the gates' ``clamp(z, 0, 1)`` as ``relu6``.

``clamp(z, 0, 1)`` lowers to TFLite's ``RELU_0_TO_1``, which XNNPACK does not take: every
gate then splits the delegated graph (t1 at 224 px: 25 partitions, each hop a copy through
the default CPU kernels). ``clamp(z, 0, 1) = relu6(6 z) / 6``, and both factors are free:
the 6 goes into the logit conv's weights (the converter fuses ``relu6`` into that conv as
its activation) and the 1/6 is one multiply of the small gate tensor ((B, C, 1, 1) or
(B, 1, H, W)). Measured in
``partialnet.bench.goals.litert``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partialnet.inference import ChannelGate, InferencePartialNet, SpatialGateOut


class _Relu6ChannelGate(nn.Module):
    """``ChannelGate`` with its clamp as ``relu6(6 z) / 6`` (the 6 inside ``fc``)."""

    def __init__(self, gate: ChannelGate) -> None:
        super().__init__()
        self.fc = copy.deepcopy(gate.fc)
        with torch.no_grad():
            self.fc.weight.mul_(6.0)
            self.fc.bias.mul_(6.0)

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(self.fc.weight.dtype)
        mean = xf.mean(dim=(2, 3), keepdim=True)
        centered = xf - mean
        std = torch.sqrt((centered * centered).mean(dim=(2, 3), keepdim=True))
        gate = F.relu6(self.fc(torch.cat([mean, std], dim=1))) * (1.0 / 6.0)
        return gate.to(x.dtype)


class _Relu6SpatialGateOut(nn.Module):
    """``SpatialGateOut`` with ``clamp(z, 0, 1)`` as ``relu6(6 z) / 6`` on its one-channel
    logit map (the 6 inside the logit conv).

    The 1/6 is not folded into the gated rows of the [a, b] conv: their int8 output shares
    one scale with ``b``, and rows six times smaller lose 2.6 bits of it (trained digits,
    int8: worst per-image cosine 0.971 folded, see ``int8``); a multiply of one channel costs
    nothing measurable.
    """

    def __init__(self, gate: SpatialGateOut) -> None:
        super().__init__()
        self.conv = copy.deepcopy(gate.conv)
        self.logit = copy.deepcopy(gate.logit)
        self.split = list(gate.split)
        self.register_buffer("shift", gate.shift.detach().clone())
        with torch.no_grad():
            self.logit.weight.mul_(6.0)
            self.logit.bias.mul_(6.0)

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.split(self.conv(x), self.split, dim=1)
        gate = F.relu6(self.logit(x)) * (1.0 / 6.0)
        return torch.cat([a * gate + self.shift, b], dim=1)


def litert_form(model: InferencePartialNet) -> InferencePartialNet:
    """A copy of ``model`` whose gates lower to ops XNNPACK takes; same function."""
    form = copy.deepcopy(model)
    swaps = {ChannelGate: _Relu6ChannelGate, SpatialGateOut: _Relu6SpatialGateOut}
    for parent in list(form.modules()):
        for name, child in list(parent.named_children()):
            swap = swaps.get(type(child))
            if swap is not None:
                setattr(parent, name, swap(child))
    return form.eval()
