"""The eager PartialNet family (training form, the authors' state-dict layout)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from partialnet.checkpoint_io import load_weights_into
from partialnet.config import MIN_INPUT_SIDE, TOTAL_STRIDE, PartialNetConfig, get_config
from partialnet.dpconv import DPConv
from partialnet.errors import InputShapeError
from partialnet.layers import (
    ConvBN,
    PartialBlock,
    PartialConv,
    PATChannel,
    PatchMerging,
    PATSelf,
    Stage,
    make_act,
    make_mlp,
)


def check_input(x: Tensor, in_chans: int, expected_hw: tuple[int, int] | None = None) -> None:
    """Refuse an input the network cannot take, with a message that says what it takes.

    Only Python-level shape checks, so tracing and torch.export see no data-dependent code;
    under torch.fx symbolic tracing shapes are proxies and the check is skipped.
    """
    if isinstance(x, torch.fx.Proxy):
        return
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise InputShapeError(
            f"expected a batch of shape (N, {in_chans}, H, W), got {tuple(x.shape)}"
        )
    h, w = int(x.shape[2]), int(x.shape[3])
    if h < MIN_INPUT_SIDE or w < MIN_INPUT_SIDE or h % TOTAL_STRIDE or w % TOTAL_STRIDE:
        raise InputShapeError(
            f"input size {h}x{w} is not supported: height and width must be multiples of "
            f"{TOTAL_STRIDE} and at least {MIN_INPUT_SIDE} (e.g. 224x224)"
        )
    if expected_hw is not None and (h, w) != tuple(expected_hw):
        raise InputShapeError(
            f"this inference-form model was built for {expected_hw[0]}x{expected_hw[1]} inputs "
            f"(its attention bias is baked for that size), got {h}x{w}: call "
            f"reparameterize(model, input_size=({h}, {w})) or resize the input"
        )


def _mixer(cfg: PartialNetConfig, dim: int, stage: int) -> nn.Module:
    if cfg.auto_div:
        return DPConv(dim, cfg.n_div)
    if not cfg.use_channel_attn:
        return PartialConv(dim, cfg.n_div)
    if stage == 3:
        return PATSelf(dim, cfg.n_div, cfg.num_heads)
    return PATChannel(dim, cfg.n_div)


class PartialNet(nn.Module):
    """PartialNet classifier, or a backbone returning the four stage maps.

    ``features_only=True`` adds `norm0/2/4/6` BatchNorms on the stage outputs (the authors'
    detection backbone) and drops the head.
    """

    def __init__(self, cfg: PartialNetConfig, features_only: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.features_only = features_only
        dims = cfg.stage_dims
        self.patch_embed = ConvBN(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_stride)
        drop_rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        stages: list[nn.Module] = []
        for i, (dim, depth) in enumerate(zip(dims, cfg.depths, strict=True)):
            first = sum(cfg.depths[:i])
            blocks = [
                PartialBlock(
                    _mixer(cfg, dim, i),
                    make_mlp(dim, cfg.mlp_ratio, cfg.act, cfg.use_spatial_attn),
                    split_shortcut=(i == 3),
                    drop_path=drop_rates[first + j],
                )
                for j in range(depth)
            ]
            stages.append(Stage(blocks))
            if i < 3:
                stages.append(PatchMerging(dim, cfg.merge_size, cfg.merge_stride))
        self.stages = nn.Sequential(*stages)
        if features_only:
            for i, dim in enumerate(dims):
                self.add_module(f"norm{2 * i}", nn.BatchNorm2d(dim))
        else:
            self.avgpool_pre_head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(dims[-1], cfg.feature_dim, 1, bias=False),
                make_act(cfg.act),
            )
            self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The four stage outputs (strides 4, 8, 16, 32), normalized as the authors' backbone."""
        check_input(x, self.cfg.in_chans)
        x = self.patch_embed(x)
        outs = []
        for idx, stage in enumerate(self.stages):
            x = stage(x)
            if idx % 2 == 0:
                norm = getattr(self, f"norm{idx}", None)
                outs.append(norm(x) if norm is not None else x)
        return outs

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.features_only:
            return self.forward_features(x)
        check_input(x, self.cfg.in_chans)
        x = self.stages(self.patch_embed(x))
        return self.head(torch.flatten(self.avgpool_pre_head(x), 1))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_model(cfg: PartialNetConfig, features_only: bool = False) -> PartialNet:
    return PartialNet(cfg, features_only=features_only)


def create_model(
    name: str, *, checkpoint: str | None = None, features_only: bool = False, **overrides: Any
) -> nn.Module:
    """A PartialNet variant by name, with optional config overrides and weights.

    Overrides: num_classes, in_chans, n_div, use_spatial_attn, auto_div, drop_path_rate, act,
    and any other field of ``PartialNetConfig``. With ``checkpoint`` the weights are loaded
    strictly and the model is returned in eval mode; without, weights are random (training
    mode, as a fresh nn.Module).
    """
    cfg = get_config(name).with_overrides(**overrides)
    model = build_model(cfg, features_only=features_only)
    if checkpoint is not None:
        load_weights_into(model, checkpoint)
        model.eval()
    return model
