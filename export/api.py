"""``export()``: the Python API behind ``partialnet-export``.

eager model -> reparameterize -> ONNX -> {OpenVINO IR, TensorRT engine}; inference form ->
CoreML. Each artifact that can run here is checked against the eager model (the parity
gate) before the manifest records it.
"""

from __future__ import annotations

import hashlib
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import partialnet
from partialnet.export.errors import ParityFailure
from partialnet.export.files import prepare_output_dir, sha256_path, size_bytes
from partialnet.export.manifest import ArtifactRecord, Manifest, load_manifest
from partialnet.export.options import (
    ExportOptions,
    Precision,
    Target,
    parse_dynamic_batch,
    parse_imgsz,
    parse_precision,
    parse_targets,
)
from partialnet.export.parity import run_parity, unverified
from partialnet.export.plan import TargetContext, build_target, check_sdks
from partialnet.export.source import RANDOM_WEIGHTS_NOTE, ExportSource, resolve_source
from partialnet.inference import InferencePartialNet, to_fp16
from partialnet.reparam import reparameterize

Progress = Callable[[str], None]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {
        "partialnet-export": partialnet.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    names = [
        "onnx",
        "onnxruntime",
        "onnxsim",
        "openvino",
        "coremltools",
        "tensorrt",
        "tensorrt-rtx-cu12-bindings",
    ]
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def _metadata(
    source: ExportSource, model: InferencePartialNet, opts: ExportOptions, precision: Precision
) -> dict[str, object]:
    meta = model.cfg.meta
    ckpt = source.checkpoint or {}
    return {
        "variant": source.variant,
        "input_size": list(model.input_size),
        "input_layout": "NCHW float32, RGB scaled to [0,1] then (x - mean) / std",
        "mean": list(meta.mean),
        "std": list(meta.std),
        "crop_pct": meta.crop_pct,
        "classes": model.cfg.num_classes,
        "precision": precision.value,
        "batch": opts.batch,
        "dynamic_batch": list(opts.dynamic_batch) if opts.dynamic_batch else None,
        "split_indices": model.split_indices,
        "checkpoint_sha256": ckpt.get("sha256", "random-weights"),
        "toolchain": f"partialnet-export {partialnet.__version__}",
        "torch": torch.__version__,
    }


class _Reference:
    """Eager fp32 outputs, computed once per batch size and shared by every target."""

    def __init__(self, eager: torch.nn.Module) -> None:
        self.eager = eager
        self._cache: dict[bytes, np.ndarray] = {}

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(batch.tobytes()).digest() + bytes(str(batch.shape), "ascii")
        if key not in self._cache:
            out = self.eager(torch.from_numpy(batch))
            self._cache[key] = (out[0] if isinstance(out, (tuple, list)) else out).numpy()
        return self._cache[key]


def export(
    model_or_checkpoint: partialnet.PartialNet | str | Path | None = None,
    *,
    variant: str | None = None,
    targets: str | list[str] = "onnx",
    precision: str = "fp32",
    imgsz: str | int | tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: str | tuple[int, int, int] | None = None,
    opset: int = 18,
    output_dir: str | Path | None = None,
    verify: bool = True,
    trt_compute_capability: str = "SM89",
    workspace_mb: int | None = None,
    coreml_min_target: str = "iOS16",
    coreml_image_input: bool = False,
    coreml_class_labels: str | Path | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Export to every requested target; returns the manifest (also written to disk).

    Raises UsageError subclasses for bad input (nothing written), ExportFailure when an
    artifact could not be produced (earlier artifacts untouched), ParityFailure after writing
    the manifest when an artifact disagrees with the eager model.
    """
    say = progress or (lambda _msg: None)
    opts = ExportOptions(
        targets=parse_targets(targets),
        precision=parse_precision(precision),
        input_size=parse_imgsz(imgsz),
        batch=batch,
        dynamic_batch=parse_dynamic_batch(dynamic_batch),
        opset=opset,
        verify=verify,
        trt_compute_capability=trt_compute_capability,
        workspace_mb=workspace_mb,
        coreml_min_target=coreml_min_target,
        coreml_image_input=coreml_image_input,
        coreml_class_labels=Path(coreml_class_labels) if coreml_class_labels else None,
    )
    check_sdks(opts)
    source = resolve_source(model_or_checkpoint, variant)
    if source.random_weights:
        say(f"warning: {RANDOM_WEIGHTS_NOTE}")
    size = opts.input_size or source.eager.cfg.meta.input_size
    opts = replace(opts, input_size=size)
    out_dir = prepare_output_dir(Path(output_dir or Path("exports") / source.variant))

    say(f"reparameterize: {source.variant} -> inference form at {size[0]}x{size[1]}")
    inference = reparameterize(source.eager, size)
    manifest = _start_manifest(out_dir, source, opts)
    reference = _Reference(source.eager)
    stem = f"partialnet-{source.variant}-{size[0]}x{size[1]}-{opts.precision.value}"
    with tempfile.TemporaryDirectory(prefix=".partialnet-export-", dir=out_dir) as scratch:
        ctx = TargetContext(
            options=opts,
            inference=inference,
            exported=to_fp16(inference) if opts.precision is Precision.FP16 else inference,
            metadata=_metadata(source, inference, opts, opts.precision),
            out_dir=out_dir,
            scratch=Path(scratch),
            stem=stem,
            say=say,
        )
        for index, target in enumerate(opts.targets, 1):
            say(f"[{index}/{len(opts.targets)}] {target.value}: exporting")
            started = time.perf_counter()
            built = build_target(target, ctx)
            parity = _verify(built, target, ctx, reference, say)
            path = built.path
            record = ArtifactRecord(
                target=target.value,
                path=path.relative_to(out_dir).as_posix(),
                precision=opts.precision.value,
                input_shape=[opts.sample_batch, inference.cfg.in_chans, *size],
                dynamic_batch=list(opts.dynamic_batch) if opts.dynamic_batch else None,
                sha256=sha256_path(path),
                bytes=size_bytes(path),
                seconds=round(time.perf_counter() - started, 2),
                parity=parity,
                status="ok" if parity.get("passed", True) else "failed",
                details=built.details,
            )
            manifest.add(record)
            manifest.write(out_dir)
    failed = [
        a
        for a in manifest.artifacts
        if a.status != "ok" and a.target in {t.value for t in opts.targets}
    ]
    if failed:
        names = ", ".join(f"{a.target} ({a.path})" for a in failed)
        raise ParityFailure(
            f"parity violation for {names}; see {out_dir / 'manifest.json'}", manifest
        )
    return manifest


def _start_manifest(out_dir: Path, source: ExportSource, opts: ExportOptions) -> Manifest:
    """Keep earlier records of the same model and size whose files are still there."""
    fresh = Manifest(source.variant, source.checkpoint, _versions(), list(opts.input_size or ()))
    earlier = load_manifest(out_dir)
    if earlier and (earlier.variant, earlier.checkpoint, earlier.input_size) == (
        fresh.variant,
        fresh.checkpoint,
        fresh.input_size,
    ):
        for record in earlier.artifacts:
            if (out_dir / record.path).exists():
                fresh.add(record)
    return fresh


def _verify(
    built, target: Target, ctx: TargetContext, reference: _Reference, say: Progress
) -> dict[str, object]:
    if not ctx.options.verify:
        return unverified("parity check skipped (--no-verify)")
    if built.unverified_reason:
        say(f"      {target.value}: not verified here: {built.unverified_reason}")
        return unverified(built.unverified_reason)
    shape = (ctx.inference.cfg.in_chans, *ctx.inference.input_size)
    with built.open_runner() as runner:
        result = run_parity(
            reference, runner.infer, shape, ctx.options.sample_batch, ctx.options.precision
        )
    say(f"      {target.value}: parity {result.summary()}")
    return result.to_dict()
