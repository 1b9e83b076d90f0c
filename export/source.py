"""Where the weights come from: a model, a checkpoint file, or a variant's random init."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from partialnet.checkpoint import load_checkpoint
from partialnet.errors import UsageError
from partialnet.model import PartialNet, create_model

RANDOM_WEIGHTS_NOTE = (
    "no --checkpoint given: exporting RANDOM weights (no pretrained PartialNet weights are "
    "published; pass --checkpoint PATH with weights trained with the authors' code)"
)


@dataclass(frozen=True)
class ExportSource:
    eager: PartialNet
    variant: str
    checkpoint: dict[str, Any] | None  # path, sha256, format; None for random weights
    backbone_rule: str | None = None  # with features: how the stage maps were obtained

    @property
    def random_weights(self) -> bool:
        return self.checkpoint is None


def resolve_source(
    model_or_checkpoint: PartialNet | str | Path | None,
    variant: str | None,
    features: bool = False,
) -> ExportSource:
    """Build the eager fp32 reference model the export starts from.

    ``features``: a backbone returning the four stage maps (see ``partialnet.backbone`` for
    the rule applied to a classifier checkpoint, stated in the manifest).
    """
    if features:
        return _backbone_source(model_or_checkpoint, variant)
    if isinstance(model_or_checkpoint, PartialNet):
        model = model_or_checkpoint
        if model.features_only:
            raise UsageError("this model is a features-only backbone: export it with --features")
        info = getattr(model, "checkpoint_info", None)
    elif isinstance(model_or_checkpoint, (str, Path)):
        model = load_checkpoint(model_or_checkpoint, variant=variant)
        info = model.checkpoint_info
    elif model_or_checkpoint is None:
        if variant is None:
            raise UsageError(
                "nothing to export: give --variant (t0, t1, t2, s, m, l) and/or --checkpoint PATH"
            )
        torch.manual_seed(0)  # reproducible random weights across runs of the same command
        model, info = create_model(variant), None
    else:
        raise UsageError(
            f"cannot export a {type(model_or_checkpoint).__name__}: pass a "
            "PartialNet model, a checkpoint path, or None with a variant"
        )
    model = model.float().eval()
    return ExportSource(model, model.cfg.name, info)


def _backbone_source(
    model_or_checkpoint: PartialNet | str | Path | None, variant: str | None
) -> ExportSource:
    from partialnet.backbone import RULE_CLASSIFIER, backbone_from_checkpoint, drop_feature_norms

    if isinstance(model_or_checkpoint, PartialNet):
        model = model_or_checkpoint
        if not model.features_only:
            raise UsageError(
                "--features needs a backbone: pass a checkpoint path or a model built with "
                "create_model(..., features_only=True)"
            )
        info, rule = getattr(model, "checkpoint_info", None), "the model as given"
    elif isinstance(model_or_checkpoint, (str, Path)):
        model, rule = backbone_from_checkpoint(model_or_checkpoint, variant=variant)
        info = model.checkpoint_info
    elif variant is not None:
        torch.manual_seed(0)  # the same random weights as the classifier export's body
        model = drop_feature_norms(create_model(variant, features_only=True))
        info, rule = None, RULE_CLASSIFIER
    else:
        raise UsageError(
            "nothing to export: give --variant (t0, t1, t2, s, m, l) and/or --checkpoint PATH"
        )
    model = model.float().eval()
    return ExportSource(model, model.cfg.name, info, rule)
