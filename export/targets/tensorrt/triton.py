"""The TensorRT target as a Triton model: the ``tensorrt_plan`` platform on the GPU. An
engine cannot be inspected without a GPU, so its inputs and outputs are read from the ONNX
it was built from; its build flavour and compute capability go to the config parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from partialnet.export.errors import ExportFailure
from partialnet.export.serving.backend import TritonBackend
from partialnet.export.targets.onnx.triton import onnx_io


def _parameters(details: Mapping[str, Any], _options: Mapping[str, Any]) -> dict[str, str]:
    params: dict[str, str] = {}
    if details.get("flavour"):
        params["tensorrt.flavour"] = details["flavour"]
        if details.get("compute_capability"):
            params["tensorrt.compute_capability"] = details["compute_capability"]
    return params


def _check_batch(name: str, details: Mapping[str, Any], max_batch: int) -> None:
    """An engine serves only the batches of its optimization profile."""
    profile = details.get("batch_range")
    if profile and int(profile[-1]) < max_batch:
        raise ExportFailure(
            f"{name} was built for batches up to {profile[-1]}, not {max_batch}: "
            "rebuild the engine with the same --dynamic-batch"
        )


def _caveat(details: Mapping[str, Any]) -> str | None:
    if details.get("flavour") != "tensorrt-rtx":
        return None
    return (
        "a TensorRT-RTX engine; Triton's tensorrt_plan backend loads engines of full "
        "TensorRT built for the server's GPU and TensorRT version"
    )


TRITON = TritonBackend(
    config_field="platform",
    config_value="tensorrt_plan",
    filename="model.plan",
    instance_kind="KIND_GPU",
    read_io=onnx_io,
    io_from_source="an engine cannot be inspected without a GPU",
    parameters=_parameters,
    check_batch=_check_batch,
    caveat=_caveat,
)
