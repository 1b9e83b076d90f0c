"""What a CoreML package declares, read without running it: inputs, outputs, metadata, and
the ML program's op and weight-dtype histograms. Used by the exporter's manifest facts and by
the tests that check a conversion."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from partialnet.errors import UsageError


def coreml_spec_summary(path: Path) -> dict[str, Any]:
    """Inputs, outputs, metadata and the MIL op histogram of a saved package (no prediction)."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} is not a CoreML .mlpackage directory")
    from partialnet.runtimes.base import import_sdk

    ct = import_sdk("coremltools", "coreml", "reading a CoreML package")
    return spec_summary(ct.utils.load_spec(str(path)))


def spec_summary(spec: Any) -> dict[str, Any]:
    """What ``coreml_spec_summary`` reports, from an in-memory ``Model_pb2.Model``."""
    desc = spec.description
    ops: Counter[str] = Counter()
    weight_dtypes: Counter[str] = Counter()
    if spec.WhichOneof("Type") == "mlProgram":
        from coremltools.proto import MIL_pb2

        for function in spec.mlProgram.functions.values():
            for block in function.block_specializations.values():
                _walk(block, ops, weight_dtypes, MIL_pb2)
    return {
        "model_type": spec.WhichOneof("Type"),
        "specification_version": spec.specificationVersion,
        "inputs": [_feature(f) for f in desc.input],
        "outputs": [_feature(f) for f in desc.output],
        "predicted_feature": desc.predictedFeatureName or None,
        "metadata": dict(desc.metadata.userDefined),
        "author": desc.metadata.author,
        "short_description": desc.metadata.shortDescription,
        "ops": ops,
        "weight_dtypes": weight_dtypes,
    }


def _walk(block: Any, ops: Counter[str], weights: Counter[str], mil: Any) -> None:
    for op in block.operations:
        ops[op.type] += 1
        if op.type == "const" and "val" in op.attributes:
            value = op.attributes["val"]
            if value.WhichOneof("value") == "blobFileValue":
                weights[mil.DataType.Name(value.type.tensorType.dataType)] += 1
        for inner in op.blocks:
            _walk(inner, ops, weights, mil)


def _feature(feature: Any) -> dict[str, Any]:
    kind = feature.type.WhichOneof("Type")
    out: dict[str, Any] = {"name": feature.name, "type": kind}
    if kind == "multiArrayType":
        array = feature.type.multiArrayType
        out["shape"] = [int(d) for d in array.shape]
        out["dtype"] = type(array).ArrayDataType.Name(array.dataType)
    elif kind == "imageType":
        image = feature.type.imageType
        out["shape"] = [int(image.height), int(image.width)]
        out["color_space"] = type(image).ColorSpace.Name(image.colorSpace)
    return out
