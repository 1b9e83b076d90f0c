"""``export()``: the Python API behind ``partialnet-export``.

eager model -> reparameterize -> ONNX -> {OpenVINO IR, TensorRT engine}; inference form ->
CoreML. Every option is checked before anything is written. Each artifact is built in a
scratch directory inside the output directory, checked against the eager model there (the
parity gate) where its runtime runs here, and only then moved into place; the manifest is
rewritten with what is in place. A failed, interrupted or rejected export leaves the earlier
artifacts and manifest as they were.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

import partialnet
from partialnet.errors import PartialNetError, UsageError
from partialnet.export.builders import (
    BuiltArtifact,
    TargetContext,
    build_target,
    check_sdks,
    check_target_options,
)
from partialnet.export.errors import ExportFailure, ParityFailure
from partialnet.export.files import (
    describe_os_error,
    place,
    prepare_output_dir,
    sha256_path,
    size_bytes,
)
from partialnet.export.gate.inputs import load_inputs
from partialnet.export.gate.parity import reference_outputs, rule_record, run_parity, unverified
from partialnet.export.gate.reference import write_reference
from partialnet.export.manifest import ArtifactRecord, Manifest, load_manifest
from partialnet.export.metadata import artifact_metadata
from partialnet.export.options import (
    DEFAULT_MAX_DROP,
    ExportOptions,
    Precision,
    Target,
    default_opset,
    parse_dynamic_batch,
    parse_imgsz,
    parse_precision,
    parse_targets,
)
from partialnet.export.serving.checks import check_serving_options, write_triton
from partialnet.export.source import RANDOM_WEIGHTS_NOTE, ExportSource, resolve_source
from partialnet.inference import to_fp16
from partialnet.machine import cpu_isa, cpu_model, isa_summary
from partialnet.reparam import reparameterize
from partialnet.versions import package_versions

Progress = Callable[[str], None]
SIMULATED_BY = "MIL reference interpreter (numpy); approximates, not reproduces, an Apple device"


class _Reference:
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
                self._cache[key] = {f"feat{i}": t.numpy() for i, t in enumerate(out)}
            else:
                self._cache[key] = out.numpy()
        return self._cache[key]


@dataclass
class _Checked:
    built: BuiltArtifact
    parity: dict[str, object]
    seconds: float

    @property
    def passed(self) -> bool:
        return bool(self.parity.get("passed", True))  # unverified artifacts carry no verdict


def export(
    model_or_checkpoint: partialnet.PartialNet | str | Path | None = None,
    *,
    variant: str | None = None,
    targets: str | list[str] = "onnx",
    precision: str = "fp32",
    imgsz: str | int | tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: str | tuple[int, int, int] | None = None,
    opset: int | None = None,
    output_dir: str | Path | None = None,
    verify: bool = True,
    trt_compute_capability: str = "SM89",
    workspace_mb: int | None = None,
    coreml_min_target: str = "iOS16",
    coreml_image_input: bool = False,
    coreml_class_labels: str | Path | None = None,
    coreml_simulate: bool = False,
    features: bool = False,
    triton_repo: str | Path | None = None,
    triton_ov_threads: int | None = None,
    triton_ov_hint: str = "latency",
    eval_data: str | Path | None = None,
    calibration_data: str | Path | None = None,
    calibration_images: int = 300,
    int8_fallback: bool = True,
    max_drop: float | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Export to every requested target; returns the manifest (also written to disk).

    ``features``: export the four stage maps (strides 4, 8, 16, 32) of a backbone instead of
    logits; each output is checked on its own. ``triton_repo``: also lay out a Triton model
    repository of the placed onnx/openvino/trt artifacts (``partialnet.export.serving.triton``).

    ``eval_data`` (a labelled ImageFolder) and ``calibration_data`` (any image folder) are
    what the gate checks on (see ``partialnet.export.gate.inputs``); with labels every verified
    record gains its accuracy. int8 needs ``calibration_data``.

    int8: ``max_drop`` (top-1 points, default 1.0) is the budget; with ``int8_fallback`` an
    artifact that misses it gets its worst layers returned to float until it holds
    (``partialnet.export.int8_fallback``).

    Raises UsageError subclasses for bad input (nothing written), ExportFailure when an
    artifact could not be produced (those that passed before it are placed, earlier ones
    otherwise untouched), ParityFailure when an artifact disagrees with the eager model
    (it is not placed; the others are).
    """
    if str(precision).lower() == "auto":  # the fastest candidate that holds, per target
        from partialnet.export.auto import export_auto

        if not verify or triton_repo is not None:
            raise UsageError(
                "--precision auto judges every candidate: drop --no-verify/--triton-repo"
            )
        return export_auto(
            export,
            model_or_checkpoint,
            variant=variant,
            targets=targets,
            max_drop=max_drop,
            eval_data=eval_data,
            calibration_data=calibration_data,
            output_dir=output_dir,
            progress=progress,
            imgsz=imgsz,
            batch=batch,
            dynamic_batch=dynamic_batch,
            opset=opset,
            features=features,
            calibration_images=calibration_images,
            int8_fallback=int8_fallback,
        )
    say = progress or (lambda _msg: None)
    opts = ExportOptions(
        targets=parse_targets(targets),
        precision=parse_precision(precision),
        input_size=parse_imgsz(imgsz),
        batch=batch,
        dynamic_batch=parse_dynamic_batch(dynamic_batch),
        opset=opset or default_opset(parse_precision(precision)),
        verify=verify,
        trt_compute_capability=trt_compute_capability,
        workspace_mb=workspace_mb,
        coreml_min_target=coreml_min_target,
        coreml_image_input=coreml_image_input,
        coreml_class_labels=Path(coreml_class_labels) if coreml_class_labels else None,
        coreml_simulate=coreml_simulate,
        int8_fallback=int8_fallback,
        max_drop=DEFAULT_MAX_DROP if max_drop is None else max_drop,
    )
    check_sdks(opts)
    check_serving_options(opts, features, eval_data, triton_repo, triton_ov_hint)
    source = resolve_source(model_or_checkpoint, variant, features=features)
    coreml = check_target_options(opts, source.eager.cfg.num_classes)
    if source.random_weights:
        say(f"warning: {RANDOM_WEIGHTS_NOTE}")
    size = opts.input_size or source.eager.cfg.meta.input_size
    opts = replace(opts, input_size=size, in_chans=source.eager.cfg.in_chans)
    if eval_data is not None or calibration_data is not None:
        say("reading and preprocessing the image folders")
    inputs = load_inputs(
        source.eager.cfg.meta,
        (opts.in_chans, *size),
        opts.precision,
        opts.sample_batch,
        eval_data=eval_data,
        calibration_data=calibration_data,
        calibration_images=calibration_images,
    )
    out_dir = prepare_output_dir(Path(output_dir or Path("exports") / source.variant))

    say(f"reparameterize: {source.variant} -> inference form at {size[0]}x{size[1]}")
    inference = reparameterize(source.eager, size)
    reference = _Reference(source.eager)
    stem = f"partialnet-{source.variant}-{size[0]}x{size[1]}-{opts.precision.value}"
    stem += "-features" if features else ""
    metadata = artifact_metadata(
        source.variant,
        inference,
        precision=opts.precision.value,
        batch=opts.batch,
        dynamic_batch=opts.dynamic_batch,
        checkpoint=source.checkpoint,
        extra={"preprocessing": inputs.record["preprocessing"]},
    )
    data = dict(inputs.record)
    if source.backbone_rule is not None:
        data["backbone_rule"] = source.backbone_rule
    checked: list[_Checked] = []
    try:
        with tempfile.TemporaryDirectory(prefix=".partialnet-export-", dir=out_dir) as scratch:
            ctx = TargetContext(
                options=opts,
                inference=inference,
                exported=to_fp16(inference) if opts.precision is Precision.FP16 else inference,
                metadata=metadata,
                scratch=Path(scratch),
                stem=stem,
                say=say,
                coreml=coreml,
                gate_images=inputs.gate,
                calibration=inputs.calibration,
                reference=reference,
            )
            refs = _write_reference(ctx, reference, inputs.record) if opts.verify else None
            try:
                for index, target in enumerate(opts.targets, 1):
                    say(f"[{index}/{len(opts.targets)}] {target.value}: exporting")
                    started = time.perf_counter()
                    for built in _build(target, ctx, out_dir):
                        parity = _verify(built, ctx, reference, say)
                        elapsed = time.perf_counter() - started
                        checked.append(_Checked(built, parity, elapsed))
            except Exception:
                # What passed is placed even when a later target fails. An interrupt
                # (KeyboardInterrupt is not an Exception) places nothing.
                _place_passed(checked, out_dir, source, opts, say, data, refs)
                raise
            manifest = _place_passed(checked, out_dir, source, opts, say, data, refs)
            if triton_repo is not None:
                placed = [(c.built, c.passed) for c in checked]
                write_triton(
                    ctx, placed, out_dir, Path(triton_repo), triton_ov_threads, triton_ov_hint
                )
    except OSError as exc:  # the scratch directory itself (creation or clean-up)
        raise ExportFailure(describe_os_error(exc, "writing scratch files", out_dir)) from exc
    rejected = [c for c in checked if not c.passed]
    if rejected:
        raise ParityFailure(_rejection_message(rejected, out_dir), manifest, _records(rejected))
    return manifest


def _build(target: Target, ctx: TargetContext, out_dir: Path) -> list[BuiltArtifact]:
    """Build one target in scratch; any failure becomes one ExportFailure line."""
    try:
        return build_target(target, ctx)
    except PartialNetError:
        raise
    except OSError as exc:
        raise ExportFailure(describe_os_error(exc, f"{target.value} export", out_dir)) from exc
    except Exception as exc:  # an SDK's own error type; the CLI shows one line of it
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ExportFailure(
            f"{target.value} export failed: {type(exc).__name__}: {first}; rerun with --debug "
            "for the traceback and report it if the input was valid"
        ) from exc


def _verify(
    built: BuiltArtifact, ctx: TargetContext, reference: _Reference, say: Progress
) -> dict[str, object]:
    target = built.target.value
    if not ctx.options.verify:
        return unverified("parity check skipped (--no-verify)")
    if built.unverified_reason:
        say(f"      {target}: not verified here: {built.unverified_reason}")
        return unverified(built.unverified_reason)
    try:
        with built.open_runner(built.staged) as runner:
            features = ctx.inference.feature_norms is not None
            result = run_parity(
                reference,
                runner.infer_all if features else runner.infer,
                ctx.gate_images,
                ctx.options.sample_batch,
                ctx.options.precision,
                runner.info().batch_range,
                max_drop=ctx.options.max_drop / 100,
            )
            simulated = bool(runner.info().extra.get("simulated"))
    except PartialNetError:
        raise
    except Exception as exc:  # the runtime could not load or run what was built
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ExportFailure(
            f"{target}: the runtime could not run the built artifact ({type(exc).__name__}: "
            f"{first}); nothing was placed for it"
        ) from exc
    record = result.to_dict()
    # What the verdict was measured on: int8 kernels (VNNI or not) and OpenVINO's bf16 differ
    # by CPU, so a pass holds for this ISA; another device re-checks with the reference.
    record["machine"] = {"cpu": cpu_model(), "isa": isa_summary(), "flags": cpu_isa()}
    if simulated:  # the MIL interpreter: checks the program, not an Apple device's arithmetic
        record["status"] = "simulated"
        record["simulated_by"] = SIMULATED_BY
    say(f"      {target}: parity {'(simulated) ' if simulated else ''}{result.summary()}")
    return record


def _write_reference(ctx: TargetContext, reference: _Reference, record: dict[str, object]) -> Path:
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


def _place_reference(staged: Path | None, out_dir: Path) -> dict[str, object] | None:
    """Move the reference beside the artifacts once; its record for every artifact."""
    if staged is None:
        return None
    final = out_dir / staged.name
    # Named by content: an earlier file of that name holds the same arrays. It is kept, so
    # that earlier records' sha256 (the zip's timestamps differ) stay true.
    if not final.is_file():
        place(staged, final)
    return {"path": final.name, "sha256": sha256_path(final), "bytes": size_bytes(final)}


def _record(item: _Checked, sha256: str, size: int, opts: ExportOptions) -> ArtifactRecord:
    return ArtifactRecord(
        target=item.built.target.value,
        path=item.built.name,
        precision=opts.precision.value,
        input_shape=[opts.sample_batch, opts.in_chans, *(opts.input_size or ())],
        dynamic_batch=list(opts.dynamic_batch) if opts.dynamic_batch else None,
        sha256=sha256,
        bytes=size,
        seconds=round(item.seconds, 2),
        parity=item.parity,
        status="ok" if item.passed else "failed",
        details=item.built.details,
        accuracy=item.parity.get("accuracy"),  # type: ignore[arg-type]
    )


def _place_passed(
    checked: list[_Checked],
    out_dir: Path,
    source: ExportSource,
    opts: ExportOptions,
    say: Progress,
    data: dict[str, object],
    reference: Path | None = None,
) -> Manifest:
    """Move every artifact that passed (or cannot be verified here) into place, recording
    each in the manifest as soon as it is there, with the reference the gate used."""
    manifest = _start_manifest(out_dir, source, opts)
    manifest.data = data
    placed_reference: dict[str, object] | None = None
    for item in checked:
        if not item.passed:
            continue
        final = out_dir / item.built.name
        sha, size = sha256_path(item.built.staged), size_bytes(item.built.staged)
        try:
            if placed_reference is None and reference is not None:
                placed_reference = _place_reference(reference, out_dir)
            place(item.built.staged, final)
            record = _record(item, sha, size, opts)
            record.reference = placed_reference  # None with --no-verify
            manifest.add(record)
            manifest.write(out_dir)
        except OSError as exc:
            raise ExportFailure(
                describe_os_error(exc, f"placing {item.built.name}", out_dir)
            ) from exc
        say(f"      {item.built.target.value}: placed {final}")
    return manifest


def _records(items: list[_Checked]) -> list[ArtifactRecord]:
    """Records of rejected artifacts for the summary table (they are not in the manifest)."""
    return [
        ArtifactRecord(
            target=i.built.target.value,
            path=f"{i.built.name} (not placed)",
            precision=str(i.parity.get("precision", "")),
            input_shape=[],
            dynamic_batch=None,
            sha256="",
            bytes=size_bytes(i.built.staged) if i.built.staged.exists() else 0,
            seconds=round(i.seconds, 2),
            parity=i.parity,
            status="failed",
            details=i.built.details,
        )
        for i in items
    ]


def _rejection_message(rejected: list[_Checked], out_dir: Path) -> str:
    parts = []
    for item in rejected:
        p = item.parity
        parts.append(
            f"{item.built.target.value} (max|diff| {p.get('max_rel', float('nan')):.3g} x "
            f"max|ref|, cosine {p.get('cosine', float('nan')):.6f}, top-1 "
            f"{p.get('top1_agreement', float('nan')):.1%})"
        )
        fallback = item.built.details.get("fallback") or {}
        if fallback.get("needed"):
            parts[-1] += (
                f" after the int8 fallback returned {len(fallback.get('float_layers', []))} of "
                f"{fallback.get('quantizable_layers')} layers to float"
            )
    return (
        f"parity violation for {', '.join(parts)}: not placed, earlier artifacts in {out_dir} "
        "were kept"
    )


def _start_manifest(out_dir: Path, source: ExportSource, opts: ExportOptions) -> Manifest:
    """Keep earlier records of the same model and size whose files are still there."""
    fresh = Manifest(
        source.variant,
        source.checkpoint,
        package_versions(installed_only=True),
        list(opts.input_size or ()),
    )
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
