"""What an export is asked to do: targets, precision, shapes, as validated enums/dataclasses."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from partialnet.errors import UsageError
from partialnet.images import DEFAULT_CALIBRATION_IMAGES  # noqa: F401 (re-exported)


class Target(str, enum.Enum):
    ONNX = "onnx"
    OPENVINO = "openvino"
    COREML = "coreml"
    TRT = "trt"
    LITERT = "litert"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # needs calibration images
    AUTO = "auto"  # a selection among the others (partialnet.export.auto), no artifact's own


DEFAULT_OPSET = 18
# int8: opset 20's native Gelu sits between the quantized convs. Measured (t1 224 px, batch 1,
# 2 threads, AVX-512 VNNI, one runtime at a time): ONNX Runtime int8 6.01 -> 5.22 ms (int8/fp32
# 0.74 -> 0.64), OpenVINO int8 unchanged within noise; fp32 and fp16 gain nothing in ONNX
# Runtime, so they keep 18, the widest-supported choice.
INT8_OPSET = 20


@dataclass(frozen=True)
class PrecisionSpec:
    """One precision, registered once: CLI choices and help, opset defaults and the need for
    calibration images are read from here (its gate rule: ``gate.parity.GATE_RULES``)."""

    precision: Precision
    summary: str  # one line for the CLI's help
    default_opset: int = DEFAULT_OPSET
    needs_calibration: bool = False
    # A choice among the artifact precisions per target (auto), not a precision an artifact
    # is built in: no gate rule, no target lists it, ExportOptions never holds it.
    selection: bool = False


PRECISIONS: dict[Precision, PrecisionSpec] = {
    spec.precision: spec
    for spec in (
        PrecisionSpec(Precision.FP32, "float32"),
        PrecisionSpec(Precision.FP16, "float16 weights and activations, fp32 islands"),
        PrecisionSpec(Precision.INT8, "int8, calibrated", INT8_OPSET, needs_calibration=True),
        PrecisionSpec(
            Precision.AUTO,
            "per target the fastest of fp32/fp16/bf16/int8 on this CPU within --max-drop",
            selection=True,
        ),
    )
}
# What an artifact can be built in (the precisions with a gate rule).
ARTIFACT_PRECISIONS: tuple[Precision, ...] = tuple(
    p for p, spec in PRECISIONS.items() if not spec.selection
)


def needs_calibration(precision: str | Precision) -> bool:
    """Whether an export at ``precision`` calibrates on images (int8)."""
    return PRECISIONS[Precision(precision)].needs_calibration


def parse_targets(text: str | list[str] | tuple[str, ...]) -> tuple[Target, ...]:
    """'onnx,trt' or 'all' (or a list of names) -> targets in export order."""
    from partialnet.export.targets import TARGETS

    order = tuple(spec.target for spec in TARGETS)
    valid = [t.value for t in order]
    items = text.split(",") if isinstance(text, str) else list(text)
    names = {str(i).strip().lower() for i in items if str(i).strip()}
    if not names:
        raise UsageError(
            f"no target given: use --target with one or more of {', '.join(valid)}, or all "
            f"(all but {', '.join(s.name for s in TARGETS if not s.in_all) or 'none'})"
        )
    if "all" in names:  # every target but those named on their own (LiteRT: all,litert)
        names = (names - {"all"}) | {spec.name for spec in TARGETS if spec.in_all}
    unknown = sorted(names - set(valid))
    if unknown:
        raise UsageError(
            f"unknown target(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}, all"
        )
    return tuple(t for t in order if t.value in names)


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


def default_opset(precision: Precision) -> int:
    return PRECISIONS[precision].default_opset


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
    opset: int = DEFAULT_OPSET
    verify: bool = True
    # Each target's own options by export() keyword (TargetSpec.options), defaults filled.
    target_options: Mapping[str, Any] = field(default_factory=dict)
    int8_fallback: bool = True  # int8: return the worst layers to float until the gate holds
    max_drop: float = DEFAULT_MAX_DROP  # int8 top-1 budget in points (with labels)
    # Write only what each target's own runtime runs: int8 ONNX then skips the TensorRT
    # flavour (--precision auto's candidates are timed on the target's runtime only).
    own_runtime_only: bool = False

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise UsageError(f"--batch must be >= 1, got {self.batch}")
        if not 17 <= self.opset <= 23:
            raise UsageError(
                f"--opset {self.opset} is not supported; use 17..23 (default "
                f"{DEFAULT_OPSET}, int8 {INT8_OPSET})"
            )
        check_max_drop(self.max_drop)
        if PRECISIONS[self.precision].selection:  # export() hands auto to partialnet.export.auto
            raise UsageError(
                f"--precision {self.precision.value} selects among artifact precisions: "
                "call export(), not ExportOptions, with it"
            )
        from partialnet.export.targets import TARGETS, spec_of

        for option in (o for spec in TARGETS for o in spec.options):
            if option.check is not None and option.name in self.target_options:
                option.check(self.target_options[option.name])
        for spec in map(spec_of, self.targets):
            if self.dynamic_batch is not None and not spec.dynamic_batch:
                raise UsageError(
                    f"{spec.display} export takes a fixed batch: drop --dynamic-batch for "
                    f"--target {spec.name}, or export {spec.name} separately with --batch"
                )
            if self.precision not in spec.precisions:
                valid = ", ".join(p.value for p in spec.precisions)
                raise UsageError(
                    f"{spec.display} export takes --precision {valid}, not "
                    f"{self.precision.value}: export {spec.name} separately"
                )

    @property
    def sample_batch(self) -> int:
        """The batch of the example input used to trace and to verify."""
        return self.dynamic_batch[1] if self.dynamic_batch else self.batch
