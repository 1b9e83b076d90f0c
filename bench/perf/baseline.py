"""The baseline the inference form is measured against: the eager model exported directly.

``torch.onnx.export`` (its default dynamo exporter, default optimizations) of the eager
PartialNet, no re-parameterization and no simplification: what a user gets without this
toolchain, given an eager model that exports at all.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from partialnet.export.targets.onnx.convert import INPUT_NAME, quiet_onnx_exporter
from partialnet.outputs import LOGITS


def export_eager_onnx(
    model: nn.Module, path: Path, input_size: tuple[int, int], batch: int = 1, opset: int = 18
) -> Path:
    sample = torch.zeros(batch, model.cfg.in_chans, *input_size)
    with quiet_onnx_exporter():
        program = torch.onnx.export(
            model.eval(),
            (sample,),
            input_names=[INPUT_NAME],
            output_names=[LOGITS],
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))
    return path


def node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)
