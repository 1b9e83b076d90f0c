"""Training-form building blocks, parameter-for-parameter compatible with the authors' code.

Attribute names are the state-dict keys of the authors' checkpoints; do not rename them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partialnet.rpe import RelativePositionBias


def make_act(name: str) -> nn.Module:
    return nn.GELU() if name == "gelu" else nn.ReLU()


class DropPath(nn.Module):
    """Stochastic depth on the residual branch; identity in eval."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class ConvBN(nn.Module):
    """Conv without bias then BatchNorm: the authors' PatchEmbed (`proj`, `norm`)."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, out_chans, kernel, stride, bias=False)
        self.norm = nn.BatchNorm2d(out_chans)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class PatchMerging(nn.Module):
    """Downsampling conv-BN between stages (`reduction`, `norm`)."""

    def __init__(self, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel, stride, bias=False)
        self.norm = nn.BatchNorm2d(2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.reduction(x))


def mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and unbiased std over H*W, each (B, C)."""
    flat = x.flatten(2)
    return flat.mean(-1), flat.std(-1)


class ChannelAttention(nn.Module):
    """Style-pooling channel attention (the authors' SRM): gate from (mean, std)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.cfc1 = nn.Conv2d(channels, channels, kernel_size=(1, 2), bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        mean, std = mean_std(x)
        stats = torch.stack([mean, std], dim=-1).unsqueeze(2)  # (B, C, 1, 2)
        return x * self.gate(self.bn(self.cfc1(stats)))


class PATChannel(nn.Module):
    """PAT_ch: 3x3 conv on the first dim/n_div channels, channel attention + BN on the rest."""

    def __init__(self, dim: int, n_div: int) -> None:
        super().__init__()
        self.dim_conv = dim // n_div
        self.dim_untouched = dim - self.dim_conv
        self.partial_conv3 = nn.Conv2d(self.dim_conv, self.dim_conv, 3, 1, 1, bias=False)
        self.attn = ChannelAttention(self.dim_untouched)
        self.norm = nn.BatchNorm2d(self.dim_untouched)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = torch.split(x, [self.dim_conv, self.dim_untouched], dim=1)
        return torch.cat([self.partial_conv3(x1), self.norm(self.attn(x2))], dim=1)


class PartialConv(nn.Module):
    """Plain partial 3x3 conv (FasterNet's PConv), used when channel attention is off."""

    def __init__(self, dim: int, n_div: int) -> None:
        super().__init__()
        self.dim_conv = dim // n_div
        self.dim_untouched = dim - self.dim_conv
        self.partial_conv3 = nn.Conv2d(self.dim_conv, self.dim_conv, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = torch.split(x, [self.dim_conv, self.dim_untouched], dim=1)
        return torch.cat([self.partial_conv3(x1), x2], dim=1)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (timm's LayerNorm2d, eps 1e-6)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class RPEAttention(nn.Module):
    """Multi-head self-attention over H*W tokens with the iRPE key bias."""

    def __init__(self, dim: int, num_heads: int, drop: float = 0.1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(drop)
        self.proj_drop = nn.Dropout(drop)
        self.rpe_k = RelativePositionBias(num_heads)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(tokens).reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.rpe_k(h, w)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, h * w, c)
        out = self.proj_drop(self.proj(out))
        return out.transpose(1, 2).reshape(b, c, h, w)


class PATSelf(nn.Module):
    """PAT_sf: 3x3 conv on the first dim/n_div channels, LayerNorm + self-attention on the rest."""

    def __init__(self, dim: int, n_div: int, num_heads: int) -> None:
        super().__init__()
        self.dim_conv = dim // n_div
        self.dim_untouched = dim - self.dim_conv
        self.partial_conv3 = nn.Conv2d(self.dim_conv, self.dim_conv, 3, 1, 1, bias=False)
        self.attn = RPEAttention(self.dim_untouched, num_heads)
        self.norm = LayerNorm2d(self.dim_untouched)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = torch.split(x, [self.dim_conv, self.dim_untouched], dim=1)
        return torch.cat([self.partial_conv3(x1), self.attn(self.norm(x2))], dim=1)


class PATSpatial(nn.Module):
    """PAT_sp (the authors' partial_spatial_attn_layer_reverse), the MLP's last layer in t1.

    First ``dim - dim//2`` channels: gated by a 1-channel spatial map, then BN. The rest: BN
    then a 1x1 conv.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim_conv = dim // 2
        self.dim_untouched = dim - self.dim_conv
        self.conv = nn.Conv2d(self.dim_conv, self.dim_conv, 1, bias=False)
        self.conv_attn = nn.Conv2d(self.dim_untouched, 1, 1, bias=False)
        self.norm = nn.BatchNorm2d(self.dim_untouched)
        self.norm2 = nn.BatchNorm2d(self.dim_conv)
        self.act = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = torch.split(x, [self.dim_untouched, self.dim_conv], dim=1)
        x1 = self.norm(x1 * self.act(self.conv_attn(x1)))
        return torch.cat([x1, self.conv(self.norm2(x2))], dim=1)


def make_mlp(dim: int, mlp_ratio: float, act: str, spatial_attn: bool) -> nn.Sequential:
    hidden = int(dim * mlp_ratio)
    layers: list[nn.Module] = [
        nn.Conv2d(dim, hidden, 1, bias=False),
        nn.BatchNorm2d(hidden),
        make_act(act),
        nn.Conv2d(hidden, dim, 1, bias=False),
    ]
    if spatial_attn:
        layers.append(PATSpatial(dim))
    return nn.Sequential(*layers)


class PartialBlock(nn.Module):
    """One PartialNet block.

    Stages 0-2: ``x + mlp(mixing(x))`` (shortcut taken before the mixing). Stage 3 (self
    attention): ``x = x + mixing(x)`` then ``x = x + mlp(x)``.
    """

    def __init__(
        self, spatial_mixing: nn.Module, mlp: nn.Sequential, split_shortcut: bool, drop_path: float
    ) -> None:
        super().__init__()
        self.spatial_mixing = spatial_mixing
        self.mlp = mlp
        self.split_shortcut = split_shortcut
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.split_shortcut:
            x = x + self.spatial_mixing(x)
            return x + self.drop_path(self.mlp(x))
        return x + self.drop_path(self.mlp(self.spatial_mixing(x)))


class Stage(nn.Module):
    def __init__(self, blocks: list[PartialBlock]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
