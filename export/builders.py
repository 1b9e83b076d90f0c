"""How each target's artifact is built in the scratch directory, and how it is opened to
verify it before it is placed.

ONNX comes first; OpenVINO and TensorRT are built from it (whether or not the ONNX itself was
asked for). CoreML is converted from the inference-form torch model. Every builder writes
under ``ctx.scratch`` only: nothing reaches the output directory until the export has
checked it (see ``partialnet.export.api``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partialnet.errors import UsageError
from partialnet.export.options import ARTIFACT_SUFFIX, ExportOptions, Precision, Target
from partialnet.export.targets.onnx.convert import export_onnx
from partialnet.inference import InferencePartialNet


@dataclass
class TargetContext:
    options: ExportOptions
    inference: InferencePartialNet  # fp32 inference form (CoreML converts this one)
    exported: InferencePartialNet  # what goes to ONNX: fp32, or fp16 with fp32 islands
    metadata: dict[str, object]
    scratch: Path
    stem: str
    say: Callable[[str], None]
    coreml: Any = None  # CoreMLOptions, validated up front by check_target_options
    gate_images: Any = None  # parity.GateImages the gate runs on
    calibration: Any = None  # N x C x H x W float32 int8 calibration images, else None
    reference: Any = None  # batch -> eager fp32 outputs (the gate's reference), for int8 search
    _onnx: tuple[Path, dict[str, Any]] | None = field(default=None, init=False)
    _qdq: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict, init=False)

    def artifact_name(self, target: Target) -> str:
        return f"{self.stem}{ARTIFACT_SUFFIX[target]}"

    def onnx(self) -> tuple[Path, dict[str, Any]]:
        """The ONNX of ``exported`` in scratch, written once and shared by ONNX/OV/TRT."""
        if self._onnx is None:
            path = self.scratch / self.artifact_name(Target.ONNX)
            if self.int8:  # the fp32 source of the quantizers; the int8 ONNX takes the name
                path = path.with_name(f"{self.stem}-fp32-source.onnx")
            facts = export_onnx(
                self.exported,
                path,
                batch=self.options.batch,
                dynamic_batch=self.options.dynamic_batch,
                opset=self.options.opset,
                metadata=self.metadata,
                warn=lambda msg: self.say(f"warning: {msg}"),
            )
            self._onnx = (path, facts)
        return self._onnx

    @property
    def int8(self) -> bool:
        return self.options.precision is Precision.INT8

    def judge(self, path: Path, open_runner: Callable[[Path], Any]) -> Any:
        """The gate's verdict (a ParityResult) on an artifact in scratch, before it is built
        into others: the int8 fallback's check."""
        from partialnet.export.gate.parity import run_parity

        features = self.inference.feature_norms is not None
        with open_runner(path) as runner:
            return run_parity(
                self.reference,
                runner.infer_all if features else runner.infer,
                self.gate_images,
                self.options.sample_batch,
                self.options.precision,
                runner.info().batch_range,
                max_drop=self.options.max_drop / 100,
            )

    def calibration_batches(self, batch: int = 8) -> list[Any]:
        """The int8 calibration images in batches (a dynamic-batch graph takes any size; a
        fixed one is cut to its batch by the quantizers)."""
        images = self.calibration
        return [images[i : i + batch] for i in range(0, len(images), batch)]

    def qdq_onnx(self, flavour: str) -> tuple[Path, dict[str, Any]]:
        """The int8 Q/DQ ONNX of one flavour (onnxruntime or tensorrt), written once."""
        from partialnet.export.targets.onnx.int8 import QdqFlavour, quantize_onnx

        if flavour not in self._qdq:
            fp32, _ = self.onnx()
            suffix = "" if flavour == QdqFlavour.ONNXRUNTIME.value else f"-{flavour}"
            path = self.scratch / f"{self.stem}{suffix}{ARTIFACT_SUFFIX[Target.ONNX]}"
            self.say(f"      int8: calibrating the {flavour} Q/DQ ONNX")
            if self.options.int8_fallback and self.options.verify:
                from partialnet.export.int8_fallback import onnx_with_fallback

                facts = onnx_with_fallback(self, fp32, path, flavour)
            else:
                facts = quantize_onnx(fp32, path, self.calibration_batches(), flavour=flavour)
            self._qdq[flavour] = (path, facts)
        return self._qdq[flavour]


@dataclass
class BuiltArtifact:
    """An artifact in scratch: ``staged`` is moved to ``<output>/<name>`` once it passes."""

    target: Target
    staged: Path
    name: str
    details: dict[str, Any]
    unverified_reason: str | None
    open_runner: Callable[[Path], Any]


def check_sdks(options: ExportOptions) -> None:
    """Fail before any work when an SDK a target needs is missing (names the extra).

    Looks the packages up without importing them (coremltools is noisy to import).
    """
    from partialnet.errors import missing_dependency

    needed: list[tuple[str, str, str]] = []
    if {Target.ONNX, Target.OPENVINO, Target.TRT} & set(options.targets):
        needed += [("onnx", "onnx", "ONNX export"), ("onnxscript", "onnx", "ONNX export")]
    if Target.OPENVINO in options.targets:
        needed.append(("openvino", "openvino", "OpenVINO export"))
    if Target.COREML in options.targets:
        needed.append(("coremltools", "coreml", "CoreML export"))
    if options.precision is Precision.INT8:
        if {Target.ONNX, Target.TRT} & set(options.targets):
            needed.append(("onnxruntime", "onnx", "INT8 ONNX quantization"))
        if Target.OPENVINO in options.targets:
            needed.append(("nncf", "int8", "INT8 OpenVINO quantization"))
    for module, extra, purpose in needed:
        if (module in sys.modules and sys.modules[module] is None) or not _findable(module):
            raise missing_dependency(module, extra, purpose)
    if Target.TRT in options.targets:
        from partialnet.export.targets.tensorrt.build import import_tensorrt

        import_tensorrt()


def check_target_options(options: ExportOptions, num_classes: int) -> Any:
    """Validate every target-specific option before anything is written. Returns the
    CoreML conversion options when CoreML is a target (labels file read and checked)."""
    if Target.TRT in options.targets:
        _trt_config(options)  # refuses an unknown compute capability or batch range
    if Target.COREML not in options.targets:
        return None
    from partialnet.export.targets.coreml.convert import CoreMLOptions

    labels = None
    if options.coreml_class_labels is not None:
        labels = _read_labels(options.coreml_class_labels)
        if len(labels) != num_classes:
            raise UsageError(
                f"{options.coreml_class_labels} has {len(labels)} labels for a model with "
                f"{num_classes} classes: give exactly one label per line, one per class"
            )
    # int8: converted in fp32, then its weights quantized (W8).
    precision = "fp32" if options.precision is Precision.INT8 else options.precision.value
    return CoreMLOptions(
        precision=precision,
        minimum_deployment_target=options.coreml_min_target,
        image_input=options.coreml_image_input,
        class_labels=labels,
        batch=options.batch,
    )


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _runner(runtime: str, **options: Any) -> Callable[[Path], Any]:
    def open_it(path: Path) -> Any:
        from partialnet.runtimes import open_runner

        return open_runner(runtime, path, **options)

    return open_it


def _onnx(ctx: TargetContext) -> BuiltArtifact | list[BuiltArtifact]:
    if ctx.int8:
        # One graph cannot serve both: ONNX Runtime is fastest with uint8 activations and
        # int32 biases, which TensorRT refuses (see partialnet.export.targets.onnx.int8).
        built = []
        for flavour in ("onnxruntime", "tensorrt"):
            path, facts = ctx.qdq_onnx(flavour)
            facts = {**facts, "serves": "ONNX Runtime" if flavour == "onnxruntime" else "TensorRT"}
            runner = _runner("onnxruntime", allow_spinning=False)
            built.append(BuiltArtifact(Target.ONNX, path, path.name, facts, None, runner))
        return built
    path, facts = ctx.onnx()
    name = ctx.artifact_name(Target.ONNX)
    # Spinning off: the gate runs right after torch's reference, on the same cores.
    return BuiltArtifact(
        Target.ONNX, path, name, facts, None, _runner("onnxruntime", allow_spinning=False)
    )


def _openvino(ctx: TargetContext) -> BuiltArtifact:
    from partialnet.export.targets.openvino.convert import export_openvino

    onnx_path, _ = ctx.onnx()
    name = ctx.artifact_name(Target.OPENVINO)
    staged = ctx.scratch / name
    if ctx.int8:
        from partialnet.export.targets.openvino.convert import ir_xml
        from partialnet.export.targets.openvino.int8 import quantize_openvino

        ctx.say("      int8: NNCF calibration of the OpenVINO model")
        # Unquantized ops in f32, as the fp32 IR's check (OpenVINO would pick bf16 here).
        runner = _runner("openvino", precision="fp32")
        if ctx.options.int8_fallback and ctx.options.verify:
            from partialnet.export.int8_fallback import openvino_with_fallback

            facts = openvino_with_fallback(ctx, onnx_path, staged, runner)
        else:
            facts = quantize_openvino(
                onnx_path, ir_xml(staged), ctx.calibration_batches(), metadata=ctx.metadata
            )
        return BuiltArtifact(Target.OPENVINO, staged, name, facts, None, runner)
    facts = export_openvino(
        onnx_path,
        staged,
        metadata=ctx.metadata,
        compress_to_fp16=ctx.options.precision is Precision.FP16,
    )
    precision = "fp16" if ctx.options.precision is Precision.FP16 else "fp32"
    return BuiltArtifact(
        Target.OPENVINO, staged, name, facts, None, _runner("openvino", precision=precision)
    )


def _trt_config(options: ExportOptions) -> Any:
    from partialnet.export.targets.tensorrt.build import TensorRTBuildConfig

    return TensorRTBuildConfig(
        compute_capability=options.trt_compute_capability,
        workspace_mb=options.workspace_mb,
        dynamic_batch=options.dynamic_batch,
    )


def _tensorrt(ctx: TargetContext) -> BuiltArtifact:
    from partialnet.export.targets.tensorrt.build import build_engine
    from partialnet.runtimes.tensorrt import tensorrt_unavailable_reason

    # int8: the symmetric Q/DQ graph with float biases that TensorRT's parser takes.
    onnx_path, _ = ctx.qdq_onnx("tensorrt") if ctx.int8 else ctx.onnx()
    name = ctx.artifact_name(Target.TRT)
    staged = ctx.scratch / name
    facts = build_engine(onnx_path, staged, _trt_config(ctx.options), progress=None)
    # Scratch paths mean nothing once the export is done.
    facts.pop("engine", None)
    facts["onnx"] = onnx_path.name
    if facts.get("timing_cache"):
        facts["timing_cache"] = Path(facts["timing_cache"]).name
    reason = tensorrt_unavailable_reason()
    runner = _runner("tensorrt", flavour=facts["flavour"])  # scratch has no manifest beside it
    return BuiltArtifact(Target.TRT, staged, name, facts, reason, runner)


def _coreml(ctx: TargetContext) -> BuiltArtifact:
    from partialnet.export.targets.coreml.convert import coreml_unverified_reason, export_coreml
    from partialnet.runtimes.coreml import simulate_by_default

    options = ctx.coreml
    name = ctx.artifact_name(Target.COREML)
    staged = ctx.scratch / name
    # coremltools draws tqdm bars on stderr for every pass; the CLI has its own progress.
    with contextlib.redirect_stderr(io.StringIO()):
        if ctx.int8:  # 8-bit weights (W8); W8A8 calibrates by running the model: macOS only
            from partialnet.export.targets.coreml.int8 import quantize_coreml

            fp32 = ctx.scratch / f"{ctx.stem}-fp32-source.mlpackage"
            facts = export_coreml(ctx.inference, fp32, options, progress=None)
            facts |= quantize_coreml(fp32, staged)
        else:
            facts = export_coreml(ctx.inference, staged, options, progress=None)
    reason = coreml_unverified_reason()
    if reason is None and (options.image_input or options.class_labels):
        reason = "parity runs on the plain tensor-input CoreML model only"
    simulate = True if ctx.options.coreml_simulate else None  # None: off macOS only
    if reason is None and (simulate or simulate_by_default()):
        # The runner runs the program in the MIL reference interpreter: parity then checks
        # the program's semantics, not an Apple device's arithmetic.
        facts["verification"] = "simulated"
    runner = _runner("coreml", simulate=simulate)
    return BuiltArtifact(Target.COREML, staged, name, facts, reason, runner)


def _read_labels(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot read class labels file {path}: {reason}") from exc


_BUILDERS: dict[Target, Callable[[TargetContext], BuiltArtifact | list[BuiltArtifact]]] = {
    Target.ONNX: _onnx,
    Target.OPENVINO: _openvino,
    Target.TRT: _tensorrt,
    Target.COREML: _coreml,
}


def build_target(target: Target, ctx: TargetContext) -> list[BuiltArtifact]:
    """The target's artifacts in scratch (int8 ONNX: one per Q/DQ flavour)."""
    from partialnet.backbone import describe_outputs

    built = _BUILDERS[target](ctx)
    built = built if isinstance(built, list) else [built]
    batch = None if ctx.options.dynamic_batch else ctx.options.batch
    for item in built:
        # Every output's name, shape and stride (a backbone's four maps, or the logits).
        item.details["outputs"] = describe_outputs(ctx.inference, batch)
    return built
