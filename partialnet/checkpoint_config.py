"""The architecture a checkpoint was trained with, from its hyper-parameters or its shapes.

No file access here: ``partialnet.checkpoint_io`` reads the file, this module reads the
configuration off what it returned.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from partialnet.config import VARIANTS, PartialNetConfig, get_config
from partialnet.errors import CheckpointMismatchError, ConfigError

_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")


def _act_for(embed_dim: int, depths: tuple[int, ...], spatial: bool) -> str:
    """The activation is invisible in the weights: only a registered layout tells it."""
    for v in VARIANTS.values():
        if (v.embed_dim, v.depths, v.use_spatial_attn) == (embed_dim, depths, spatial):
            return v.act
    raise ConfigError(
        f"cannot tell the activation of this checkpoint (embed_dim {embed_dim}, depths "
        f"{list(depths)}) from its weights and it has no hyper_parameters: pass "
        f"variant=... (--variant; one of {', '.join(VARIANTS)}) matching how it was trained"
    )


def _registered_name(cfg: PartialNetConfig) -> str:
    # A registered name only for an identical architecture (classes/channels aside), so a
    # t0-shaped net trained with, say, n_div 2 or DPConv is not reported as "t0".
    free = ("num_classes", "in_chans", "name", "meta", "drop_path_rate")
    for name, v in VARIANTS.items():
        if dataclasses.replace(cfg, **{f: getattr(v, f) for f in free}) == v:
            return name
    return "custom"


_HP_INT = ("n_div", "feature_dim", "patch_size", "patch_stride", "patch_size2", "patch_stride2")
_HP_BOOL = ("auto_div", "use_channel_attn", "patnet_t0")
_HP_RENAME = {"patch_size2": "merge_size", "patch_stride2": "merge_stride"}


def _from_hparams(hp: Mapping[str, Any], sd: Mapping[str, Tensor]) -> dict[str, Any]:
    """Config fields from the authors' training cfg (their argument names)."""
    try:
        if float(hp.get("layer_scale_init_value") or 0) > 0:
            raise ConfigError(
                f"layer_scale_init_value={hp['layer_scale_init_value']}: layer scale is not "
                "supported by this toolchain (the released configs use 0)"
            )
        if str(hp.get("norm_layer", "BN")).upper() != "BN":
            raise ConfigError(f"norm_layer {hp['norm_layer']!r} is not supported (only BN)")
        embed_dim, depths = int(hp["embed_dim"]), tuple(int(d) for d in hp["depths"])
        spatial = bool(hp.get("use_spatial_attn", any(".mlp.4." in k for k in sd)))
        act = hp.get("act_layer")
        act = str(act).lower() if act is not None else _act_for(embed_dim, depths, spatial)
        if act not in ("gelu", "relu"):
            raise ConfigError(f"act_layer {hp['act_layer']!r} is not supported (GELU or RELU)")
        fields = {"embed_dim": embed_dim, "depths": depths, "act": act, "use_spatial_attn": spatial}
        for key in (*_HP_INT, *_HP_BOOL, "mlp_ratio"):
            if hp.get(key) is not None:
                kind = int if key in _HP_INT else bool if key in _HP_BOOL else float
                fields[_HP_RENAME.get(key, key)] = kind(hp[key])
        return fields
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"unusable model hyper-parameters in the checkpoint: {exc}") from exc


def _from_shapes(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    """Config fields read off tensor shapes; the activation comes from a matching variant."""
    proj = sd["patch_embed.proj.weight"]
    last: dict[int, int] = {}
    for key in sd:
        if m := _BLOCK_KEY.match(key):
            last[int(m[1])] = max(last.get(int(m[1]), -1), int(m[2]))
    if sorted(last) != [0, 2, 4, 6]:
        raise CheckpointMismatchError(
            f"not a PartialNet checkpoint: blocks in stages {sorted(last)}, expected 0, 2, 4, 6"
        )
    embed_dim, depths = proj.shape[0], tuple(last[i] + 1 for i in (0, 2, 4, 6))
    f: dict[str, Any] = {"embed_dim": embed_dim, "depths": depths}
    f["use_spatial_attn"] = any(".mlp.4." in k for k in sd)
    f["act"] = _act_for(embed_dim, depths, f["use_spatial_attn"])
    f["auto_div"] = any(k.endswith("spatial_mixing.gate") for k in sd)
    # DPConv ignores use_channel_attn; keep the authors' default (True) then.
    f["use_channel_attn"] = f["auto_div"] or any(".spatial_mixing.attn." in k for k in sd)
    # Strides are not stored; the authors' patch embedding and merging never overlap.
    f["patch_size"] = f["patch_stride"] = proj.shape[2]
    if (w := sd.get("stages.1.reduction.weight")) is not None:
        f["merge_size"] = f["merge_stride"] = w.shape[2]
    if (w := sd.get("stages.0.blocks.0.spatial_mixing.partial_conv3.weight")) is not None:
        f["n_div"] = embed_dim // w.shape[0]
    if (w := sd.get("stages.0.blocks.0.mlp.0.weight")) is not None:
        f["mlp_ratio"] = w.shape[0] / embed_dim
    if (w := sd.get("avgpool_pre_head.1.weight")) is not None:
        f["feature_dim"] = w.shape[0]
    heads = {v.shape[0] for k, v in sd.items() if k.endswith("rpe_k.lookup_table_bias")}
    if heads and heads not in ({4}, {6}):
        raise ConfigError(f"last-stage attention with {sorted(heads)} heads is not supported")
    if heads:
        f["patnet_t0"] = heads == {4}
    return f


def config_from_checkpoint(
    state_dict: Mapping[str, Tensor], hparams: Mapping[str, Any] | None, variant: str | None = None
) -> PartialNetConfig:
    """The architecture a state dict was trained with: from variant, hparams, or its shapes."""
    proj = state_dict.get("patch_embed.proj.weight")
    if proj is None or proj.dim() != 4 or not any(_BLOCK_KEY.match(k) for k in state_dict):
        first = ", ".join(list(state_dict)[:3]) or "none"
        raise CheckpointMismatchError(
            "not a PartialNet checkpoint: it has no patch_embed.proj.weight or "
            f"stages.N.blocks.M.* keys (first keys: {first})"
        )
    hp = dict(hparams or {})
    if "embed_dim" not in hp:  # save_hyperparameters() of init args nests the training args
        hp.update(next((v for v in hp.values() if isinstance(v, Mapping) and "embed_dim" in v), {}))
    shapes: dict[str, Any] = {"in_chans": proj.shape[1]}
    if (head := state_dict.get("head.weight")) is not None:
        shapes["num_classes"] = head.shape[0]
    if variant is not None:
        cfg = get_config(variant).with_overrides(**shapes)
    else:
        use_hp = "embed_dim" in hp and "depths" in hp
        fields = _from_hparams(hp, state_dict) if use_hp else _from_shapes(state_dict)
        cfg = PartialNetConfig(**fields, **shapes)
        cfg = dataclasses.replace(cfg, name=_registered_name(cfg))
    meta: dict[str, Any] = {"num_classes": cfg.num_classes}
    if (size := hp.get("image_size")) is not None:
        try:
            h, w = (size, size) if isinstance(size, int) else size
            meta["input_size"] = (int(h), int(w))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"hyper-parameter image_size={size!r} is not [h, w] or int") from exc
    if isinstance(hp.get("test_crop_ratio"), (int, float)):  # the authors' eval crop
        meta["crop_pct"] = float(hp["test_crop_ratio"])
    return dataclasses.replace(cfg, meta=dataclasses.replace(cfg.meta, **meta))
