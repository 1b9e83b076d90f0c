"""Parameter and multiply-accumulate counts (conv, linear and attention matmuls, as fvcore).

torch is imported inside the functions: ``partialnet`` imports this module eagerly (so that
``partialnet.complexity`` stays the function, not this submodule) and must import without
torch on a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int
    input_size: tuple[int, int]

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def mparams(self) -> float:
        return self.params / 1e6


def count_params(model: nn.Module) -> int:
    """State-dict parameter count (buffers excluded), as the authors report it."""
    return sum(p.numel() for p in model.parameters())


def complexity(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> Complexity:
    """Params and MACs of one image at ``input_size``.

    torch's FlopCounterMode counts 2 FLOPs per MAC for convolutions, linear layers and
    matmuls (elementwise ops, norms and pooling are not counted, as in fvcore's defaults
    for these layers).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    in_chans = _in_chans(model)
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_chans, *input_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    model.train(was_training)
    return Complexity(count_params(model), counter.get_total_flops() // 2, tuple(input_size))


def _in_chans(model: nn.Module) -> int:
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        return cfg.in_chans
    from torch import nn

    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return first_conv.in_channels
