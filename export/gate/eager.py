"""The eager fp32 model's outputs the gate compares every artifact against, and the reference
file written from them beside the artifacts (what a device check repeats the gate with).

Needs torch; ``partialnet.export.gate.reference`` (reading and writing the file) does not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from partialnet.export.gate.parity import reference_outputs, rule_record
from partialnet.export.gate.reference import write_reference
from partialnet.outputs import name_outputs

if TYPE_CHECKING:
    from partialnet.export.targets.base import TargetContext


class EagerReference:
    """Eager fp32 outputs, computed once per batch and shared by every target."""

    def __init__(self, eager: torch.nn.Module) -> None:
        self.eager = eager
        self._cache: dict[bytes, np.ndarray] = {}

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        key = hashlib.sha1(batch.tobytes()).digest() + bytes(str(batch.shape), "ascii")
        if key not in self._cache:
            out = self.eager(torch.from_numpy(batch))
            if isinstance(out, (tuple, list)):  # a backbone: its maps, named as exported
                self._cache[key] = {k: t.numpy() for k, t in name_outputs(out).items()}
            else:
                self._cache[key] = out.numpy()
        return self._cache[key]


def write_gate_reference(
    ctx: TargetContext, reference: EagerReference, record: dict[str, object]
) -> Path:
    """The gate's inputs, the eager outputs on them and the rule, in scratch (placed with
    the first artifact). The outputs are computed here, in the batches the gate feeds, and
    cached: the gate's own comparisons reuse them."""
    opts = ctx.options
    features = ctx.inference.feature_norms is not None
    outputs = reference_outputs(reference, ctx.gate_images, opts.sample_batch)
    return write_reference(
        ctx.scratch,
        ctx.gate_images,
        outputs,
        precision=opts.precision.value,
        batch=opts.sample_batch,
        preprocessing=record["preprocessing"],  # type: ignore[arg-type]
        rule=rule_record(opts.precision, features, max_drop=opts.max_drop / 100),
    )
