"""How each target is produced from the inference form, and how it is opened to verify it.

ONNX comes first; OpenVINO and TensorRT are built from it (from a scratch copy when the
ONNX itself was not asked for). CoreML is converted from the inference-form torch model.
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

from partialnet.export.onnx_export import export_onnx
from partialnet.export.options import ARTIFACT_SUFFIX, ExportOptions, Precision, Target
from partialnet.inference import InferencePartialNet


@dataclass
class TargetContext:
    options: ExportOptions
    inference: InferencePartialNet  # fp32 inference form (CoreML converts this one)
    exported: InferencePartialNet  # what goes to ONNX: fp32, or fp16 with fp32 islands
    metadata: dict[str, object]
    out_dir: Path
    scratch: Path
    stem: str
    say: Callable[[str], None]
    _onnx: Path | None = field(default=None, init=False)

    def final_path(self, target: Target) -> Path:
        return self.out_dir / f"{self.stem}{ARTIFACT_SUFFIX[target]}"

    def onnx(self, path: Path | None = None) -> tuple[Path, dict[str, Any]]:
        """The ONNX of ``exported``: written to ``path``, or once to scratch for OV/TRT."""
        if path is None and self._onnx is not None:
            return self._onnx, {}
        target = path or self.scratch / f"{self.stem}.onnx"
        facts = export_onnx(
            self.exported,
            target,
            batch=self.options.batch,
            dynamic_batch=self.options.dynamic_batch,
            opset=self.options.opset,
            metadata=self.metadata,
            warn=lambda msg: self.say(f"warning: {msg}"),
        )
        self._onnx = target
        return target, facts


@dataclass
class BuiltArtifact:
    path: Path
    details: dict[str, Any]
    unverified_reason: str | None
    open_runner: Callable[[], Any] | None = None


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
    for module, extra, purpose in needed:
        if (module in sys.modules and sys.modules[module] is None) or not _findable(module):
            raise missing_dependency(module, extra, purpose)
    if Target.TRT in options.targets:
        from partialnet.export.tensorrt import import_tensorrt

        import_tensorrt()


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _onnx(ctx: TargetContext) -> BuiltArtifact:
    from partialnet.runtimes import open_runner

    path, facts = ctx.onnx(ctx.final_path(Target.ONNX))
    return BuiltArtifact(path, facts, None, lambda: open_runner("onnxruntime", path))


def _openvino(ctx: TargetContext) -> BuiltArtifact:
    from partialnet.export.openvino_export import export_openvino
    from partialnet.runtimes import open_runner

    onnx_path, _ = ctx.onnx()
    xml = ctx.final_path(Target.OPENVINO)
    meta = {k: str(v) for k, v in ctx.metadata.items()}
    facts = export_openvino(
        onnx_path, xml, metadata=meta, compress_to_fp16=ctx.options.precision is Precision.FP16
    )
    return BuiltArtifact(xml, facts, None, lambda: open_runner("openvino", xml))


def _tensorrt(ctx: TargetContext) -> BuiltArtifact:
    from partialnet.export.tensorrt import TensorRTBuildConfig, build_engine
    from partialnet.runtimes import open_runner
    from partialnet.runtimes.tensorrt import tensorrt_unavailable_reason

    onnx_path, _ = ctx.onnx()
    engine = ctx.final_path(Target.TRT)
    config = TensorRTBuildConfig(
        compute_capability=ctx.options.trt_compute_capability,
        workspace_mb=ctx.options.workspace_mb,
        dynamic_batch=ctx.options.dynamic_batch,
    )
    facts = build_engine(onnx_path, engine, config, progress=None)
    reason = tensorrt_unavailable_reason()
    return BuiltArtifact(engine, facts, reason, lambda: open_runner("tensorrt", engine))


def _coreml(ctx: TargetContext) -> BuiltArtifact:
    from partialnet.export.coreml import CoreMLOptions, coreml_unverified_reason, export_coreml
    from partialnet.runtimes import open_runner
    from partialnet.runtimes.coreml import simulate_by_default

    labels = None
    if ctx.options.coreml_class_labels is not None:
        labels = _read_labels(ctx.options.coreml_class_labels)
    options = CoreMLOptions(
        precision=ctx.options.precision.value,
        minimum_deployment_target=ctx.options.coreml_min_target,
        image_input=ctx.options.coreml_image_input,
        class_labels=labels,
        batch=ctx.options.batch,
    )
    path = ctx.final_path(Target.COREML)
    # coremltools draws tqdm bars on stderr for every pass; the CLI has its own progress.
    with contextlib.redirect_stderr(io.StringIO()):
        facts = export_coreml(ctx.inference, path, options, progress=None)
    reason = coreml_unverified_reason()
    if reason is None and (options.image_input or labels):
        reason = "parity runs on the plain tensor-input CoreML model only"
    if reason is None and simulate_by_default():
        # Off macOS the runner runs the program in the MIL reference interpreter: parity
        # then checks the program's semantics, not an Apple device's arithmetic.
        facts["verification"] = "simulated"
    return BuiltArtifact(path, facts, reason, lambda: open_runner("coreml", path))


def _read_labels(path: Path) -> list[str]:
    from partialnet.errors import UsageError

    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise UsageError(f"cannot read class labels file {path}: {exc.strerror}") from exc


_BUILDERS: dict[Target, Callable[[TargetContext], BuiltArtifact]] = {
    Target.ONNX: _onnx,
    Target.OPENVINO: _openvino,
    Target.TRT: _tensorrt,
    Target.COREML: _coreml,
}


def build_target(target: Target, ctx: TargetContext) -> BuiltArtifact:
    return _BUILDERS[target](ctx)
