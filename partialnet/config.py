"""Variant registry: frozen configs and per-variant deployment metadata."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from partialnet.errors import ConfigError, UnknownVariantError

Activation = Literal["gelu", "relu"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The network downsamples by 4 (patch embed) then 2 three times: sizes are multiples of 32.
TOTAL_STRIDE = 32
# The channel attention (stages 0-2, stride 16) takes an unbiased std over H*W, which is NaN
# on a 1x1 map: below 32 px the third stage's map is 1x1.
MIN_INPUT_SIDE = 32


@dataclass(frozen=True)
class ModelMeta:
    """What a deployment needs to know besides the weights."""

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.9
    num_classes: int = 1000


@dataclass(frozen=True)
class PartialNetConfig:
    """Everything that decides the architecture (and so the state-dict layout)."""

    embed_dim: int
    depths: tuple[int, int, int, int]
    act: Activation
    use_spatial_attn: bool
    num_classes: int = 1000
    in_chans: int = 3
    n_div: int = 4
    mlp_ratio: float = 2.0
    feature_dim: int = 1280
    patch_size: int = 4
    patch_stride: int = 4
    merge_size: int = 2
    merge_stride: int = 2
    use_channel_attn: bool = True
    auto_div: bool = False
    # The authors' `patnet_t0`: 4 heads in the last stage instead of 6.
    patnet_t0: bool = True
    drop_path_rate: float = 0.0
    name: str = "custom"
    meta: ModelMeta = field(default_factory=ModelMeta)

    def __post_init__(self) -> None:
        if len(self.depths) != 4 or any(d < 1 for d in self.depths):
            raise ConfigError(f"depths must be four positive integers, got {self.depths}")
        if self.act not in ("gelu", "relu"):
            raise ConfigError(f"act must be 'gelu' or 'relu', got {self.act!r}")
        if self.embed_dim < 1 or self.n_div < 2:
            raise ConfigError(
                f"embed_dim must be >= 1 and n_div >= 2, got {self.embed_dim}, {self.n_div}"
            )
        if self.num_classes < 1 or self.in_chans < 1:
            raise ConfigError("num_classes and in_chans must be positive")
        if self.auto_div:
            for dim in self.stage_dims:
                if dim & (dim - 1):
                    raise ConfigError(
                        f"DPConv (auto_div) needs power-of-two channel counts; stage width {dim} "
                        "is not one: choose an embed_dim that is a power of two"
                    )
        last = self.stage_dims[-1]
        if not self.auto_div and (last - last // self.n_div) % self.num_heads:
            raise ConfigError(
                f"the last stage's attention width {last - last // self.n_div} does not divide "
                f"into {self.num_heads} heads: change embed_dim or n_div"
            )

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2**i for i in range(4))

    @property
    def num_heads(self) -> int:
        return 4 if self.patnet_t0 else 6

    def with_overrides(self, **overrides: Any) -> PartialNetConfig:
        """A copy with some fields changed; unknown names are refused, not ignored."""
        known = set(self.__dataclass_fields__)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown model option(s) {unknown}; valid ones: {sorted(known - {'meta'})}"
            )
        if "depths" in overrides:
            overrides["depths"] = tuple(overrides["depths"])
        if "act" in overrides:
            overrides["act"] = str(overrides["act"]).lower()
        new = replace(self, **overrides)
        if new.num_classes != new.meta.num_classes:
            new = replace(new, meta=replace(new.meta, num_classes=new.num_classes))
        return new


def _variant(
    name: str, embed_dim: int, depths: tuple[int, int, int, int], act: Activation, spatial: bool
) -> PartialNetConfig:
    return PartialNetConfig(
        embed_dim=embed_dim, depths=depths, act=act, use_spatial_attn=spatial, name=name
    )


# From the authors' cfg/PartialNet_*.yaml (see shared/spec/upstream-partialnet.md).
VARIANTS: dict[str, PartialNetConfig] = {
    "t0": _variant("t0", 32, (1, 2, 8, 2), "gelu", False),
    "t1": _variant("t1", 48, (1, 2, 8, 2), "gelu", True),
    "t2": _variant("t2", 64, (2, 2, 6, 4), "relu", False),
    "s": _variant("s", 96, (2, 2, 9, 4), "relu", False),
    "m": _variant("m", 128, (2, 3, 16, 4), "relu", False),
    "l": _variant("l", 160, (2, 3, 20, 4), "relu", False),
}


def list_variants() -> list[str]:
    """The registered variant names, smallest first."""
    return list(VARIANTS)


def get_config(name: str) -> PartialNetConfig:
    """The config of a registered variant; an unknown name lists the valid ones."""
    key = name.strip().lower().removeprefix("partialnet_").removeprefix("partialnet-")
    if key in VARIANTS:
        return VARIANTS[key]
    near = difflib.get_close_matches(key, list(VARIANTS), n=1, cutoff=0.3)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    raise UnknownVariantError(
        f"unknown PartialNet variant '{name}'{hint}; valid variants: {', '.join(VARIANTS)}"
    )
