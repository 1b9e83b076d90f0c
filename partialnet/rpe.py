"""iRPE relative-position bias (euclidean method, bias mode, on keys) as the authors use it.

The bias added to the attention logits is ``table[:, bucket(i, j)]`` where the bucket depends
only on the feature-map size, so at a fixed resolution it is a constant. Buckets are computed
with plain integer/float arithmetic here (no boolean-mask indexing), so nothing exports as
NonZero, and the result is cached per size without touching module state during tracing.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor, nn

# get_rpe_config(ratio=20, method="euc", mode="bias") in the authors' code.
ALPHA = 20.0
BETA = 40.0
GAMMA = 160.0
NUM_BUCKETS = 2 * int(BETA) + 1


def _piecewise_index(distance: Tensor) -> Tensor:
    """Eq. 18 of the iRPE paper for non-negative distances, in float32 like the reference."""
    beyond = distance > ALPHA
    safe = torch.where(beyond, distance, torch.full_like(distance, ALPHA))
    log_part = ALPHA + torch.log(safe / ALPHA) / math.log(GAMMA / ALPHA) * (BETA - ALPHA)
    log_part = log_part.round().clip(max=BETA)
    return torch.where(beyond, log_part, distance.round()).long()


@lru_cache(maxsize=16)
def bucket_ids(height: int, width: int) -> Tensor:
    """(L, L) int64 bucket index for an ``height x width`` map, L = height * width.

    Built outside inference mode even when first asked for inside it: the cached tensor is
    reused later, and an inference tensor cannot index a parameter under autograd.
    """
    with torch.inference_mode(False):
        rows = torch.arange(height).view(height, 1).expand(height, width)
        cols = torch.arange(width).view(1, width).expand(height, width)
        pos = torch.stack([rows, cols], dim=-1).reshape(-1, 2)
        diff = pos[:, None, :] - pos[None, :, :]
        distance = diff.square().sum(-1).float().sqrt().round()
        return _piecewise_index(distance) + int(BETA)


class RelativePositionBias(nn.Module):
    """Holds ``lookup_table_bias`` (heads, 81) and expands it for a feature-map size."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.lookup_table_bias = nn.Parameter(torch.zeros(num_heads, NUM_BUCKETS))

    def forward(self, height: int, width: int) -> Tensor:
        """The (1, heads, L, L) bias for this map size."""
        ids = bucket_ids(height, width).to(self.lookup_table_bias.device)
        length = height * width
        return self.lookup_table_bias[:, ids.flatten()].view(1, self.num_heads, length, length)
