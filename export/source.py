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

    @property
    def random_weights(self) -> bool:
        return self.checkpoint is None


def resolve_source(
    model_or_checkpoint: PartialNet | str | Path | None, variant: str | None
) -> ExportSource:
    """Build the eager fp32 reference model the export starts from."""
    if isinstance(model_or_checkpoint, PartialNet):
        model = model_or_checkpoint
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
