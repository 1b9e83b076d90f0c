"""Inference-form modules: what `reparameterize` produces and every exporter consumes.

Rules that keep these modules exportable to every target (through the ONNX exporter or
torch.export): every size is a Python int fixed at build time (the batch is reshaped as -1),
no in-place writes, no data-dependent control flow, no tensors used as sizes, no prints.

Numerically sensitive parts (channel-attention statistics, LayerNorm, softmax) run in
float32 even in a float16 model: the modules listed in ``FP32_ISLANDS`` keep float32
parameters and cast at their edges, so the casts in an fp16 ONNX are placed deliberately.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import Tensor, nn

from partialnet.config import PartialNetConfig
from partialnet.model import check_input

Precision = Literal["fp32", "fp16"]


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    """float32 for float16/bfloat16, else ``dtype`` itself (a float64 model stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def _act(name: str) -> nn.Module:
    return nn.GELU() if name == "gelu" else nn.ReLU()


class PartialConvMixer(nn.Module):
    """``cat(conv3x3(x[:, :n]), scale * x[:, n:])``: a frozen DPConv or plain PConv.

    ``passthrough_scale`` is 2 when the block's residual was folded in (x + mixer(x)).
    """

    def __init__(self, conv: nn.Conv2d, channels: int, passthrough_scale: float = 1.0) -> None:
        super().__init__()
        self.conv = conv
        self.active = conv.in_channels
        self.rest = channels - self.active
        self.passthrough_scale = passthrough_scale

    def forward(self, x: Tensor) -> Tensor:
        if self.rest == 0:
            return self.conv(x)
        x1, x2 = torch.split(x, [self.active, self.rest], dim=1)
        if self.passthrough_scale != 1.0:
            x2 = x2 * self.passthrough_scale
        return torch.cat([self.conv(x1), x2], dim=1)


def _fold_hardsigmoid(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of a conv whose output feeds hardsigmoid(z) = clamp(z / 6 + 1/2, 0, 1), with the
    1/6 and 1/2 moved into them, so only ``clamp(conv, 0, 1)`` (ONNX Clip) remains.

    Why not HardSigmoid itself: OpenCV's DNN module (5.0) takes Conv -> HardSigmoid
    (alpha 1/6, beta 1/2) -> Mul for a HardSwish of the conv output without checking what
    the Mul's other operand is, so a gate times a feature map comes out with the gate's
    shape. The clamp costs what hardsigmoid cost (one op, fused into the conv by ONNX
    Runtime like any Clip activation).
    """
    return weight / 6.0, bias / 6.0 + 0.5


class ChannelGate(nn.Module):
    """hardsigmoid(W @ [mean; std] + b) per channel: the channel attention with its BN folded.

    Kept 4-D throughout (a 1x1 conv on the stacked (B, 2C, 1, 1) statistics), so the graph
    has no flatten/squeeze/unsqueeze around it. The unbiased std's Bessel factor
    sqrt(N / (N - 1)) is a constant for the fixed map size and lives in the std columns;
    hardsigmoid's scale and offset live in the conv too (``_fold_hardsigmoid``).

    An fp32 island: statistics over H*W in float16 lose too much.
    """

    def __init__(self, weight: Tensor, bias: Tensor, num_pixels: int) -> None:
        super().__init__()
        channels = weight.shape[0]
        folded = weight.detach().clone()
        folded[:, channels:] *= math.sqrt(num_pixels / (num_pixels - 1))
        folded, bias = _fold_hardsigmoid(folded, bias.detach())
        self.fc = nn.Conv2d(2 * channels, channels, 1, device=weight.device, dtype=weight.dtype)
        self.fc.weight = nn.Parameter(
            folded.reshape(channels, 2 * channels, 1, 1), requires_grad=False
        )
        self.fc.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.num_pixels = num_pixels

    @torch.no_grad()
    def resize(self, num_pixels: int) -> None:
        """Re-bake the Bessel factor for another map size."""
        channels = self.fc.out_channels
        old, new = self.num_pixels, num_pixels
        ratio = math.sqrt((new / (new - 1)) / (old / (old - 1)))
        self.fc.weight[:, channels:] *= ratio
        self.num_pixels = num_pixels

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(self.fc.weight.dtype)  # float32 in an fp16 model, float64 in a float64 one
        mean = xf.mean(dim=(2, 3), keepdim=True)
        centered = xf - mean
        std = torch.sqrt((centered * centered).mean(dim=(2, 3), keepdim=True))
        gate = torch.clamp(self.fc(torch.cat([mean, std], dim=1)), 0.0, 1.0)
        return gate.to(x.dtype)


class ChannelAttnMixer(nn.Module):
    """PAT_ch: ``cat(conv3x3(x1), x2 * gate(x2))``; the post-gate BN lives in the next conv."""

    def __init__(self, conv: nn.Conv2d, gate: ChannelGate, untouched: int) -> None:
        super().__init__()
        self.partial_conv3 = conv
        self.gate = gate
        self.split = [conv.in_channels, untouched]

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = torch.split(x, self.split, dim=1)
        return torch.cat([self.partial_conv3(x1), x2 * self.gate(x2)], dim=1)


class SelfAttnMixer(nn.Module):
    """``x + PAT_sf(x)`` with the residual, LayerNorm affine and query scale folded.

    Attention runs in NCHW-friendly layout: qkv and proj are 1x1 convs, so the only layout
    change is the (B, heads, head_dim, L) view; the relative-position bias is a constant.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        qkv: nn.Conv2d,
        proj: nn.Conv2d,
        bias: Tensor,
        bias_table: Tensor,
        num_heads: int,
        hw: tuple[int, int],
        eps: float,
    ) -> None:
        super().__init__()
        self.partial_conv3 = conv
        self.qkv = qkv
        self.proj = proj
        self.register_buffer("attn_bias", bias.detach().clone().contiguous())
        # Kept so the model can be re-baked for another size without the eager model.
        self.register_buffer("bias_table", bias_table.detach().clone())
        self.num_heads = num_heads
        self.hw = hw
        self.eps = eps
        self.untouched = proj.out_channels
        self.split = [conv.in_channels, self.untouched]

    def _layer_norm(self, x: Tensor) -> Tensor:
        xf = x.to(_at_least_fp32(x.dtype))
        mean = xf.mean(dim=1, keepdim=True)
        centered = xf - mean
        var = (centered * centered).mean(dim=1, keepdim=True)
        return (centered * torch.rsqrt(var + self.eps)).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = torch.split(x, self.split, dim=1)
        h, w = self.hw
        head_dim = self.untouched // self.num_heads
        qkv = self.qkv(self._layer_norm(x2)).reshape(-1, 3, self.num_heads, head_dim, h * w)
        q, k, v = qkv.unbind(1)
        logits = torch.matmul(q.transpose(-2, -1), k).to(_at_least_fp32(x.dtype)) + self.attn_bias
        attn = torch.softmax(logits, dim=-1).to(x.dtype)
        out = torch.matmul(v, attn.transpose(-2, -1)).reshape(-1, self.untouched, h, w)
        return torch.cat([self.partial_conv3(x1), x2 + self.proj(out)], dim=1)


class SpatialGateOut(nn.Module):
    """The MLP's last 1x1 conv merged with PAT_sp: ``cat(a * hardsigmoid(logit) + shift, b)``.

    Built from one merged conv yielding [a (scaled by the gate BN), b (BN-1x1 path done), gate
    logit], and kept as two convs: [a, b] and the one-channel logit. The [a, b] conv's
    channel count (48, 96, 192, 384 in t1) is then a multiple of the CPU runtimes' channel
    blocks (8/16), where dim + 1 was not: 11-24% off one CPU runtime's latency, none off the
    other's (each runner's module notes its own figure). The logit conv takes hardsigmoid's
    scale and offset (``_fold_hardsigmoid``), so the gate is a clamp (OpenCV fuses Conv ->
    HardSigmoid -> Mul into a wrong HardSwish).
    """

    def __init__(self, conv: nn.Conv2d, gated: int, shift: Tensor) -> None:
        super().__init__()
        weight, bias = conv.weight.detach(), conv.bias
        self.conv = _conv1x1(weight[:-1], None if bias is None else bias.detach()[:-1])
        logit_bias = bias.detach()[-1:] if bias is not None else weight.new_zeros(1)
        logit_w, logit_b = _fold_hardsigmoid(weight[-1:], logit_bias)
        self.logit = _conv1x1(logit_w, logit_b)
        self.split = [gated, conv.out_channels - gated - 1]
        self.register_buffer("shift", shift.detach().clone().view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.split(self.conv(x), self.split, dim=1)
        return torch.cat([a * torch.clamp(self.logit(x), 0.0, 1.0) + self.shift, b], dim=1)


def _conv1x1(weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    conv = nn.Conv2d(
        weight.shape[1], weight.shape[0], 1, bias=bias is not None, device=weight.device
    )
    conv.weight = nn.Parameter(weight.clone().contiguous(), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.clone().contiguous(), requires_grad=False)
    return conv


class InferenceBlock(nn.Module):
    """``x + mlp(mixer(x))``, or with ``mixer_has_residual`` ``y = mixer(x); y + mlp(y)``."""

    def __init__(
        self,
        mixer: nn.Module,
        mlp_in: nn.Conv2d,
        act: str,
        mlp_out: nn.Module,
        mixer_has_residual: bool,
    ) -> None:
        super().__init__()
        self.mixer = mixer
        self.mlp_in = mlp_in
        self.act = _act(act)
        self.mlp_out = mlp_out
        self.mixer_has_residual = mixer_has_residual

    def forward(self, x: Tensor) -> Tensor:
        mixed = self.mixer(x)
        base = mixed if self.mixer_has_residual else x
        return base + self.mlp_out(self.act(self.mlp_in(mixed)))


class ClassifierHead(nn.Module):
    """Global average pool, 1x1 conv as a matrix product, activation, classifier."""

    def __init__(self, pre_head: nn.Linear, act: str, head: nn.Linear) -> None:
        super().__init__()
        self.pre_head = pre_head
        self.act = _act(act)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(2, 3))
        return self.head(self.act(self.pre_head(pooled)))


class FeatureNorms(nn.Module):
    """The backbone's per-stage output BatchNorms as per-channel affines (nothing to fold into).

    A ``None`` scale/shift pair is an identity (a backbone made from a classifier has no
    trained norms): that output gets no operation at all.
    """

    def __init__(self, scales: list[Tensor | None], shifts: list[Tensor | None]) -> None:
        super().__init__()
        self.identity = [s is None for s in scales]
        for i, (s, t) in enumerate(zip(scales, shifts, strict=True)):
            if s is not None and t is not None:
                self.register_buffer(f"scale{i}", s.detach().clone().view(1, -1, 1, 1))
                self.register_buffer(f"shift{i}", t.detach().clone().view(1, -1, 1, 1))

    def forward(self, i: int, x: Tensor) -> Tensor:
        if self.identity[i]:
            return x
        return x * getattr(self, f"scale{i}") + getattr(self, f"shift{i}")


FP32_ISLANDS: tuple[type[nn.Module], ...] = (ChannelGate,)


class InferencePartialNet(nn.Module):
    """PartialNet in inference form for one input size (see ``partialnet.reparameterize``)."""

    def __init__(
        self,
        cfg: PartialNetConfig,
        input_size: tuple[int, int],
        stem: nn.Conv2d,
        stages: nn.Sequential,
        head: nn.Module | None,
        feature_norms: FeatureNorms | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_size = tuple(input_size)
        self.precision: Precision = "fp32"
        self.stem = stem
        self.stages = stages
        self.head = head
        self.feature_norms = feature_norms

    @property
    def split_indices(self) -> dict[str, list[int]]:
        """Per block, the channel split [convolved, untouched] it was frozen with."""
        out: dict[str, list[int]] = {}
        for name, mod in self.named_modules():
            if isinstance(mod, PartialConvMixer):
                out[name] = [mod.active, mod.rest]
            elif isinstance(mod, (ChannelAttnMixer, SelfAttnMixer)):
                out[name] = list(mod.split)
        return out

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        check_input(x, self.cfg.in_chans, self.input_size)
        out_dtype = x.dtype
        x = self.stem(x.to(self.stem.weight.dtype))
        if self.feature_norms is None:
            x = self.stages(x)
            return self.head(x).to(out_dtype)
        feats = []
        for idx, stage in enumerate(self.stages):
            x = stage(x)
            if idx % 2 == 0:
                feats.append(self.feature_norms(idx // 2, x).to(out_dtype))
        return tuple(feats)


def to_fp16(model: InferencePartialNet) -> InferencePartialNet:
    """A float16 copy; fp32 islands keep float32 weights. Input and output stay float32."""
    half = copy.deepcopy(model).half()
    for mod in half.modules():
        if isinstance(mod, FP32_ISLANDS):
            mod.float()
        if isinstance(mod, SelfAttnMixer):
            mod.attn_bias = mod.attn_bias.float()
            mod.bias_table = mod.bias_table.float()
    half.precision = "fp16"
    return half
