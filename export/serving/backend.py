"""What Triton needs to know to serve one target's artifacts: declared by the target in its
own package (``TargetSpec.triton``), read by ``partialnet.export.serving.triton``, which
knows no target by name. A target without one is not served."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the targets' packages import this module while they register
    from partialnet.export.targets.base import TargetOption


@dataclass(frozen=True)
class TensorSpec:
    """An input or output as Triton sees it; ``-1`` marks a dynamic dimension."""

    name: str
    data_type: str  # a Triton DataType name, e.g. "TYPE_FP32"
    shape: tuple[int, ...]


IO = tuple[list[TensorSpec], list[TensorSpec]]


def _no_parameters(_details: Mapping[str, Any], _options: Mapping[str, Any]) -> dict[str, str]:
    return {}


def _nothing_to_check(_name: str, _details: Mapping[str, Any], _max_batch: int) -> None:
    return None


@dataclass(frozen=True)
class TritonBackend:
    """One target as a Triton model: its ``config.pbtxt`` fragment, its file layout and how
    its inputs and outputs are read.

    ``read_io`` reads the artifact itself, or where ``io_from_source`` says why it cannot,
    the ONNX it was built from (``details["onnx"]``). ``parameters`` are the backend's own
    config parameters from the artifact's details and the serving options; ``options`` are
    those options' flags, checked whatever the targets (``check_options``).
    """

    config_field: str  # "platform" or "backend"
    config_value: str  # the platform or backend name Triton knows
    filename: str  # the file's name in the version directory
    instance_kind: str  # a ModelInstanceGroup kind, "KIND_CPU" or "KIND_GPU"
    read_io: Callable[[Path], IO]
    io_from_source: str | None = None  # why the artifact's own I/O cannot be read here
    # The file Triton loads, from the artifact as placed (an IR directory: its .xml).
    model_file: Callable[[Path], Path] = lambda path: path
    # Files beside the model file that travel with it: (suffix, name in the version dir).
    companions: tuple[tuple[str, str], ...] = ()
    parameters: Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, str]] = _no_parameters
    options: tuple[TargetOption, ...] = ()
    check_options: Callable[[Mapping[str, Any]], None] | None = None
    # Refuses an artifact that cannot serve batches up to the given size (name, details).
    check_batch: Callable[[str, Mapping[str, Any], int], None] = _nothing_to_check
    # A warning to log for an artifact Triton may not load (details), else None.
    caveat: Callable[[Mapping[str, Any]], str | None] = lambda _details: None
