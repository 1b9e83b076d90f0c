"""PartialNet as a detection backbone: the four stage maps, from either kind of checkpoint.

The authors' detection backbone puts a BatchNorm (``norm0/2/4/6``) on each stage output
(strides 4, 8, 16, 32) and has no classifier head. No detection checkpoints are published,
so the usual source is a classifier checkpoint; the two cases follow one stated rule each:

- **classifier checkpoint** (``head.weight`` present, no ``norm0/2/4/6``): the whole
  classifier is loaded strictly first (so a wrong variant still fails loudly), then the head
  is dropped and the maps are the raw stage outputs. The detection norms are *not* added:
  the classifier never trained them, and random or default-initialised BatchNorms would
  either change the maps or pretend to a calibration that does not exist. In the inference
  form they are identities, which emit no operation.
- **backbone state dict** (``norm0/2/4/6`` present, optionally under mmdetection's
  ``backbone.`` prefix, any other top-level prefix such as ``neck.`` ignored): loaded
  strictly into the backbone, norms kept; the inference form applies them as per-channel
  affines (nothing precedes them that they could be folded into without changing a map
  that another output also uses).

``backbone_from_checkpoint`` returns the rule that was applied as one sentence, for the
export manifest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from partialnet.checkpoint import config_from_checkpoint, load_state_dict, load_weights_into
from partialnet.errors import CheckpointMismatchError
from partialnet.files import sha256_path
from partialnet.model import PartialNet, build_model
from partialnet.outputs import LOGITS, feature_names, is_backbone

FEATURE_STRIDES = (4, 8, 16, 32)
"""Strides of ``feat0``..``feat3`` relative to the input (patch embedding 4, then 3 mergings)."""

NORM_KEYS = tuple(f"norm{2 * i}" for i in range(4))
MMDET_PREFIX = "backbone."

RULE_CLASSIFIER = (
    "classifier checkpoint: head (avgpool_pre_head, head) dropped; the maps are the raw "
    "stage outputs without the detection norms norm0/2/4/6, which the classifier never "
    "trained (identity, no op in the graph)"
)
RULE_BACKBONE = (
    "backbone state dict: loaded strictly with the detection norms norm0/2/4/6, kept as "
    "per-channel affines on the stage outputs"
)


def feature_shapes(
    channels: tuple[int, ...] | list[int], input_size: tuple[int, int], batch: int | None = None
) -> list[dict[str, Any]]:
    """Per output: name, stride and NCHW shape for an input of ``input_size`` (H, W).

    ``batch`` None writes -1 for a dynamic batch dimension. Meant for the export manifest.
    """
    h, w = input_size
    n = -1 if batch is None else batch
    return [
        {"name": name, "stride": s, "shape": [n, c, h // s, w // s]}
        for name, c, s in zip(feature_names(), channels, FEATURE_STRIDES, strict=True)
    ]


def describe_outputs(model: nn.Module, batch: int | None) -> list[dict[str, Any]]:
    """What a PartialNet (eager or inference form) returns, for the manifest: per output its
    name, NCHW (or N, classes) shape and stride (None for logits). ``batch`` None: -1.

    The inference form's ``input_size`` is used; an eager model's default input size
    otherwise.
    """
    cfg = model.cfg
    size = getattr(model, "input_size", None) or cfg.meta.input_size
    if is_backbone(model):
        return feature_shapes(cfg.stage_dims, tuple(size), batch)
    n = -1 if batch is None else batch
    return [{"name": LOGITS, "stride": None, "shape": [n, cfg.num_classes]}]


def _strip_backbone_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """mmdetection keys its detector's parts ``backbone.*``, ``neck.*``, ``bbox_head.*``:
    keep the backbone's and drop its prefix; other state dicts are returned as they are."""
    if any(k.startswith(MMDET_PREFIX) for k in state):
        n = len(MMDET_PREFIX)
        return {k[n:]: v for k, v in state.items() if k.startswith(MMDET_PREFIX)}
    return dict(state)


def is_backbone_state(state: Mapping[str, Tensor]) -> bool:
    """True when the detection norms are present (a backbone), False for a classifier."""
    return any(k.startswith(f"{norm}.") for k in state for norm in NORM_KEYS)


def drop_feature_norms(model: PartialNet) -> PartialNet:
    """Replace ``norm0/2/4/6`` by identities in place: the raw stage outputs are the maps."""
    for name in NORM_KEYS:
        setattr(model, name, nn.Identity())
    return model


def backbone_from_checkpoint(
    path: str | os.PathLike[str], variant: str | None = None
) -> tuple[PartialNet, str]:
    """A ``features_only`` PartialNet in eval mode with the checkpoint's weights, and the rule
    applied (one sentence for the manifest). Loading is strict in both cases.

    Raises ``CheckpointMismatchError`` for a backbone state dict that lacks some norms or has
    a head, and for anything that does not fit the model.
    """
    state, hparams = load_state_dict(path)
    state = _strip_backbone_prefix(state)
    cfg = config_from_checkpoint(state, hparams, variant)
    if is_backbone_state(state):
        missing = [n for n in NORM_KEYS if f"{n}.weight" not in state]
        if missing:
            raise CheckpointMismatchError(
                f"{path} has some detection norms but not {', '.join(missing)}: a backbone "
                "state dict needs all of norm0, norm2, norm4, norm6"
            )
        model = build_model(cfg, features_only=True)
        load_weights_into(model, state)
        rule = RULE_BACKBONE
    else:
        classifier = build_model(cfg)
        load_weights_into(classifier, state)  # the whole checkpoint must fit, head included
        model = drop_feature_norms(build_model(cfg, features_only=True))
        body = {k: v for k, v in classifier.state_dict().items() if k in model.state_dict()}
        model.load_state_dict(body, strict=True)
        rule = RULE_CLASSIFIER
    model.eval()
    # What export's resolve_source reads for the manifest, as load_checkpoint records it.
    model.checkpoint_info = {
        "path": str(path),
        "sha256": sha256_path(Path(path)),
        "backbone_rule": rule,
    }
    return model, rule
