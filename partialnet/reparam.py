"""``reparameterize``: the eager PartialNet -> its inference form for one input size.

One function per block kind turns a training-form block into inference modules; every fold
is exact algebra on the running statistics (see ``partialnet.fold``). The eager model is
never modified: every tensor is cloned into new modules. Every tensor created here takes the
device and dtype of the weights it is derived from, so a float64, CUDA, MPS or meta model
folds in place without a round trip through the CPU.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from partialnet.config import MIN_INPUT_SIDE, TOTAL_STRIDE
from partialnet.dpconv import DPConv
from partialnet.errors import ConfigError, InputShapeError
from partialnet.fold import add_identity, as_conv1x1, bn_scale_shift, conv_then_bn, matrix, new_conv
from partialnet.inference import (
    ChannelAttnMixer,
    ChannelGate,
    ClassifierHead,
    FeatureNorms,
    InferenceBlock,
    InferencePartialNet,
    PartialConvMixer,
    SelfAttnMixer,
    SpatialGateOut,
)
from partialnet.layers import (
    ConvBN,
    PartialBlock,
    PartialConv,
    PATChannel,
    PatchMerging,
    PATSelf,
    PATSpatial,
)
from partialnet.model import PartialNet
from partialnet.rpe import bucket_ids


def _conv_bn(module: ConvBN | PatchMerging) -> nn.Conv2d:
    conv = module.proj if isinstance(module, ConvBN) else module.reduction
    weight, bias = conv_then_bn(conv.weight.detach(), module.norm)
    return new_conv(weight, bias, stride=conv.stride[0])


def _partial_conv_mixer(mixer: DPConv | PartialConv, fold_residual: bool) -> PartialConvMixer:
    if isinstance(mixer, DPConv):
        if mixer.one_channel.is_meta:  # the learned split is a value, and meta has none
            raise ConfigError(
                "a DPConv model on the meta device cannot be reparameterized: its learned "
                "channel split is stored as data; load the weights onto a real device first"
            )
        n = mixer.active_channels()
        weight, channels = mixer.conv.weight.detach()[:n, :n], mixer.channels
    else:
        weight = mixer.partial_conv3.weight.detach()
        channels = mixer.dim_conv + mixer.dim_untouched
    if fold_residual:
        weight = add_identity(weight)
    return PartialConvMixer(
        new_conv(weight, None, padding=1), channels, 2.0 if fold_residual else 1.0
    )


def _channel_attn_mixer(
    mixer: PATChannel, num_pixels: int
) -> tuple[ChannelAttnMixer, Tensor, Tensor]:
    """The mixer, plus the post-gate BN (scale, shift) that the next conv must absorb."""
    attn = mixer.attn
    cfc = attn.cfc1.weight.detach()  # (C, C, 1, 2): columns for mean then std
    stats_weight = torch.cat([cfc[:, :, 0, 0], cfc[:, :, 0, 1]], dim=1)
    weight, bias = conv_then_bn(stats_weight, attn.bn)
    gate = ChannelGate(weight, bias, num_pixels)
    conv = new_conv(mixer.partial_conv3.weight.detach(), None, padding=1)
    scale, shift = bn_scale_shift(mixer.norm)
    return ChannelAttnMixer(conv, gate, mixer.dim_untouched), scale, shift


def _self_attn_mixer(mixer: PATSelf, hw: tuple[int, int]) -> SelfAttnMixer:
    attn, norm = mixer.attn, mixer.norm
    du = mixer.dim_untouched
    qkv_w = attn.qkv.weight.detach()
    # qkv(LN(x)) = W (n * gamma + beta) = (W diag(gamma)) n + W beta; q rows also take the scale.
    weight = qkv_w * norm.weight.detach()[None, :]
    bias = qkv_w @ norm.bias.detach()
    weight[:du] *= attn.scale
    bias[:du] *= attn.scale
    table = attn.rpe_k.lookup_table_bias.detach()
    return SelfAttnMixer(
        conv=new_conv(add_identity(mixer.partial_conv3.weight.detach()), None, padding=1),
        qkv=new_conv(as_conv1x1(weight), bias),
        proj=new_conv(as_conv1x1(attn.proj.weight.detach()), attn.proj.bias.detach()),
        bias=_bake_bias(table, hw),
        bias_table=table,
        num_heads=attn.num_heads,
        hw=hw,
        eps=norm.eps,
    )


def _bake_bias(table: Tensor, hw: tuple[int, int]) -> Tensor:
    ids = bucket_ids(*hw).to(table.device)
    length = hw[0] * hw[1]
    return table[:, ids.flatten()].view(1, table.shape[0], length, length)


def _mlp_out(mlp: nn.Sequential) -> nn.Module:
    w2 = matrix(mlp[3].weight.detach())
    if len(mlp) == 4:
        return new_conv(as_conv1x1(w2), None)
    sp: PATSpatial = mlp[4]
    da = sp.dim_untouched
    scale_a, shift_a = bn_scale_shift(sp.norm)
    scale_b, shift_b = bn_scale_shift(sp.norm2)
    wb = matrix(sp.conv.weight.detach())
    rows_a = scale_a[:, None] * w2[:da]
    rows_b = wb @ (scale_b[:, None] * w2[da:])
    row_logit = matrix(sp.conv_attn.weight.detach()) @ w2[:da]
    weight = torch.cat([rows_a, rows_b, row_logit], dim=0)
    bias = torch.cat([w2.new_zeros(da), wb @ shift_b, w2.new_zeros(1)])
    return SpatialGateOut(new_conv(as_conv1x1(weight), bias), da, shift_a)


def _block(block: PartialBlock, hw: tuple[int, int], act: str) -> InferenceBlock:
    mixer_src = block.spatial_mixing
    mlp = block.mlp
    w1 = matrix(mlp[0].weight.detach())
    in_bias = w1.new_zeros(w1.shape[0])
    if isinstance(mixer_src, PATChannel):
        mixer, scale, shift = _channel_attn_mixer(mixer_src, hw[0] * hw[1])
        dc = mixer_src.dim_conv
        # BN after the gate: W1[:, dc:] (x * s + t) = (W1[:, dc:] diag(s)) x + W1[:, dc:] t
        in_bias = w1[:, dc:] @ shift
        w1 = torch.cat([w1[:, :dc], w1[:, dc:] * scale[None, :]], dim=1)
    elif isinstance(mixer_src, PATSelf):
        mixer = _self_attn_mixer(mixer_src, hw)
    else:
        mixer = _partial_conv_mixer(mixer_src, fold_residual=block.split_shortcut)
    weight, bias = conv_then_bn(as_conv1x1(w1), mlp[1], in_bias)
    return InferenceBlock(
        mixer, new_conv(weight, bias), act, _mlp_out(mlp), mixer_has_residual=block.split_shortcut
    )


def _head(model: PartialNet) -> ClassifierHead:
    pre = model.avgpool_pre_head[1]
    w = pre.weight
    pre_head = nn.Linear(
        pre.in_channels, pre.out_channels, bias=False, device=w.device, dtype=w.dtype
    )
    pre_head.weight = nn.Parameter(matrix(pre.weight.detach()).clone(), requires_grad=False)
    head = copy.deepcopy(model.head).requires_grad_(False)
    return ClassifierHead(pre_head, model.cfg.act, head)


def validate_input_size(input_size: tuple[int, int] | int) -> tuple[int, int]:
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or any(int(s) != s or s < MIN_INPUT_SIDE or s % TOTAL_STRIDE for s in size):
        raise InputShapeError(
            f"input size {input_size} is not supported: height and width must be multiples "
            f"of {TOTAL_STRIDE} and at least {MIN_INPUT_SIDE} (e.g. 224 or (256, 320))"
        )
    return int(size[0]), int(size[1])


@torch.no_grad()
def _from_eager(model: PartialNet, size: tuple[int, int]) -> InferencePartialNet:
    cfg = model.cfg
    stages: list[nn.Module] = []
    for idx, stage in enumerate(model.stages):
        if isinstance(stage, PatchMerging):
            stages.append(_conv_bn(stage))
            continue
        stride = cfg.patch_stride * cfg.merge_stride ** (idx // 2)
        hw = (size[0] // stride, size[1] // stride)
        stages.append(nn.Sequential(*(_block(b, hw, cfg.act) for b in stage.blocks)))
    if model.features_only:
        # A norm replaced by nn.Identity (partialnet.backbone, from a classifier) stays one.
        norms_src = [getattr(model, f"norm{2 * i}") for i in range(4)]
        pairs = [bn_scale_shift(n) if isinstance(n, nn.BatchNorm2d) else None for n in norms_src]
        head, norms = (
            None,
            FeatureNorms(
                [p[0] if p else None for p in pairs], [p[1] if p else None for p in pairs]
            ),
        )
    else:
        head, norms = _head(model), None
    out = InferencePartialNet(
        cfg, size, _conv_bn(model.patch_embed), nn.Sequential(*stages), head, norms
    )
    checkpoint_info = getattr(model, "checkpoint_info", None)
    if checkpoint_info is not None:
        out.checkpoint_info = checkpoint_info
    return out.eval()


@torch.no_grad()
def _rebake(model: InferencePartialNet, size: tuple[int, int]) -> InferencePartialNet:
    out = copy.deepcopy(model)
    if size == out.input_size:
        return out
    cfg = out.cfg
    for idx, stage in enumerate(out.stages):
        stride = cfg.patch_stride * cfg.merge_stride ** (idx // 2)
        hw = (size[0] // stride, size[1] // stride)
        for mod in stage.modules():
            if isinstance(mod, SelfAttnMixer):
                mod.attn_bias = _bake_bias(mod.bias_table, hw).to(mod.attn_bias.dtype)
                mod.hw = hw
            elif isinstance(mod, ChannelGate):
                mod.resize(hw[0] * hw[1])
    out.input_size = size
    return out


def reparameterize(
    model: nn.Module, input_size: tuple[int, int] | int = (224, 224)
) -> InferencePartialNet:
    """The inference form of ``model`` for inputs of ``input_size`` (H, W).

    Returns a new eval-mode module and leaves ``model`` untouched. BatchNorms are folded,
    DPConv splits frozen to static channel counts, the relative-position bias baked for
    this size, the LayerNorm affine and query scale folded into qkv, and Dropout/DropPath
    gone. Applying it to an inference-form model returns an equal copy (re-baked when
    ``input_size`` differs).
    """
    size = validate_input_size(input_size)
    if isinstance(model, InferencePartialNet):
        return _rebake(model, size)
    if not isinstance(model, PartialNet):
        raise TypeError(f"reparameterize expects a PartialNet model, got {type(model).__name__}")
    return _from_eager(model, size)
