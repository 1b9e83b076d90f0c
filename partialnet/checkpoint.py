"""Loading a PartialNet from a checkpoint: read the file, infer the architecture, load strictly.

Reading and safe unpickling live in ``partialnet.checkpoint_io``, the architecture inference
in ``partialnet.checkpoint_config``; their public functions are re-exported here.
"""

from __future__ import annotations

from torch import nn

from partialnet.checkpoint_config import config_from_checkpoint
from partialnet.checkpoint_io import PathLike, load_state_dict, load_weights_into, read_checkpoint
from partialnet.files import sha256_path
from partialnet.model import build_model

__all__ = ["config_from_checkpoint", "load_checkpoint", "load_state_dict", "load_weights_into"]


def load_checkpoint(path: PathLike, variant: str | None = None) -> nn.Module:
    """A PartialNet in eval mode with the checkpoint's weights, strictly loaded."""
    loaded = read_checkpoint(path)
    cfg = config_from_checkpoint(loaded.state_dict, loaded.hparams, variant)
    model = build_model(cfg)
    load_weights_into(model, loaded.state_dict)
    model.eval()
    model.checkpoint_info = {
        "path": str(path),
        "sha256": sha256_path(path),
        "format": loaded.fmt,
        "epoch": loaded.epoch,
        "global_step": loaded.global_step,
    }
    return model
