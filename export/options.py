"""What an export is asked to do: targets, precision, shapes, as validated enums/dataclasses."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from partialnet.errors import UsageError
from partialnet.runtimes.base import Runtime


class Target(str, enum.Enum):
    ONNX = "onnx"
    OPENVINO = "openvino"
    COREML = "coreml"
    TRT = "trt"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # needs calibration images


# Export order: OpenVINO and TensorRT are built from the ONNX, so it comes first.
TARGET_ORDER = (Target.ONNX, Target.OPENVINO, Target.TRT, Target.COREML)

ARTIFACT_SUFFIX = {
    Target.ONNX: ".onnx",
    Target.OPENVINO: ".openvino",  # a directory: the .xml/.bin pair moves as one
    Target.TRT: ".engine",
    Target.COREML: ".mlpackage",
}


# The runtime that runs each target's artifact, and back: the one mapping between them.
TARGET_RUNTIME: dict[Target, Runtime] = {
    Target.ONNX: Runtime.ONNXRUNTIME,
    Target.OPENVINO: Runtime.OPENVINO,
    Target.TRT: Runtime.TENSORRT,
    Target.COREML: Runtime.COREML,
}
RUNTIME_TARGET: dict[Runtime, Target] = {r: t for t, r in TARGET_RUNTIME.items()}


def runtime_of(target: str | Target) -> str | None:
    """The runtime name ('onnxruntime', ...) for a target name, None for an unknown one."""
    try:
        return TARGET_RUNTIME[Target(target)].value
    except ValueError:
        return None


def target_of(runtime: str | Runtime) -> str | None:
    """The target name ('onnx', ...) whose artifacts a runtime runs; None for torch."""
    try:
        found = RUNTIME_TARGET.get(Runtime(runtime))
    except ValueError:
        return None
    return found.value if found is not None else None


def parse_targets(text: str | list[str] | tuple[str, ...]) -> tuple[Target, ...]:
    """'onnx,trt' or 'all' (or a list of names) -> targets in export order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = {str(i).strip().lower() for i in items if str(i).strip()}
    if not names:
        raise UsageError(
            "no target given: use --target with one or more of onnx, openvino, coreml, trt, or all"
        )
    if "all" in names:
        return TARGET_ORDER
    valid = {t.value for t in Target}
    unknown = sorted(names - valid)
    if unknown:
        raise UsageError(
            f"unknown target(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}, all"
        )
    return tuple(t for t in TARGET_ORDER if t.value in names)


def parse_precision(text: str | Precision) -> Precision:
    try:
        return Precision(str(getattr(text, "value", text)).lower())
    except ValueError:
        valid = ", ".join(p.value for p in Precision)
        raise UsageError(f"unknown precision '{text}'; valid: {valid}") from None


def parse_dynamic_batch(text: str | tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """'MIN:OPT:MAX' (or three ints) -> (min, opt, max) with 1 <= min <= opt <= max.

    The one place a batch range is validated (the exporter, the TensorRT builder, Triton).
    """
    if text is None:
        return None
    try:
        parts = tuple(int(p) for p in text.split(":")) if isinstance(text, str) else tuple(text)
    except (TypeError, ValueError):
        parts = ()
    if any(isinstance(p, bool) for p in parts):
        parts = ()
    if len(parts) != 3 or not 1 <= parts[0] <= parts[1] <= parts[2]:
        raise UsageError(
            f"dynamic batch '{text}' is not MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (e.g. 1:8:32)"
        )
    return parts  # type: ignore[return-value]


def parse_imgsz(text: str | int | tuple[int, int] | None) -> tuple[int, int] | None:
    """'224' or '256,320' -> (H, W), validated against what the model can take."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            parts = [int(p) for p in text.replace("x", ",").split(",")]
        except ValueError:
            raise UsageError(f"image size '{text}' is not H or H,W (e.g. 224 or 256,320)") from None
        size = (parts[0], parts[0]) if len(parts) == 1 else tuple(parts)
    else:
        size = text
    from partialnet.reparam import validate_input_size  # torch: only the export side parses sizes

    return validate_input_size(size)  # type: ignore[arg-type]


DEFAULT_OPSET = 18
# int8: opset 20's native Gelu sits between the quantized convs. Measured (t1 224 px, batch 1,
# 2 threads, AVX-512 VNNI, one runtime at a time): ONNX Runtime int8 6.01 -> 5.22 ms (int8/fp32
# 0.74 -> 0.64), OpenVINO int8 unchanged within noise; fp32 and fp16 gain nothing in ONNX
# Runtime, so they keep 18, the widest-supported choice.
INT8_OPSET = 20


def default_opset(precision: Precision) -> int:
    return INT8_OPSET if precision is Precision.INT8 else DEFAULT_OPSET


def check_workspace(workspace_mb: int | None) -> None:
    """A TensorRT builder workspace is a positive whole number of MiB, or None (TensorRT's)."""
    w = workspace_mb
    # 0 MB is refused too: the builder cannot compile even a tiny graph without scratch.
    if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
        raise UsageError(
            f"--workspace {w!r} is not a positive whole number of MiB: pass e.g. 1024, or "
            "leave it out to let TensorRT use what the GPU has"
        )


DEFAULT_MAX_DROP = 1.0


def check_max_drop(points: float) -> None:
    """A top-1 budget is a number of points between 0 and 100."""
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not 0 <= points <= 100:
        raise UsageError(
            f"--max-drop {points!r} is not a number of top-1 points between 0 and 100 "
            "(e.g. --max-drop 1.0)"
        )


@dataclass(frozen=True)
class ExportOptions:
    """Validated export settings (the CLI and the Python API both build one)."""

    targets: tuple[Target, ...] = (Target.ONNX,)
    precision: Precision = Precision.FP32
    input_size: tuple[int, int] | None = None  # None: the variant's metadata
    in_chans: int = 3
    batch: int = 1
    dynamic_batch: tuple[int, int, int] | None = None
    opset: int = 18
    verify: bool = True
    trt_compute_capability: str = "SM89"
    workspace_mb: int | None = None
    coreml_min_target: str = "iOS16"
    coreml_image_input: bool = False
    coreml_class_labels: Path | None = None
    coreml_simulate: bool = False  # verify CoreML in the MIL interpreter even on macOS
    int8_fallback: bool = True  # int8: return the worst layers to float until the gate holds
    max_drop: float = DEFAULT_MAX_DROP  # int8 top-1 budget in points (with labels)

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise UsageError(f"--batch must be >= 1, got {self.batch}")
        if not 17 <= self.opset <= 23:
            raise UsageError(
                f"--opset {self.opset} is not supported; use 17..23 (default 18, int8 20)"
            )
        check_workspace(self.workspace_mb)
        check_max_drop(self.max_drop)
        if self.dynamic_batch is not None and Target.COREML in self.targets:
            raise UsageError(
                "CoreML export takes a fixed batch: drop --dynamic-batch for "
                "--target coreml, or export coreml separately with --batch"
            )

    @property
    def sample_batch(self) -> int:
        """The batch of the example input used to trace and to verify."""
        return self.dynamic_batch[1] if self.dynamic_batch else self.batch
