"""``export()``: the Python API behind ``partialnet-export``.

eager model -> reparameterize -> each target's artifact, built from the ONNX or from the
inference form (``partialnet.export.targets``). Every option, and the output directory
(another model's export, a name taken by something else), is checked before anything is
written. Each artifact is built in a scratch directory inside the output directory and
checked against the eager model there (the parity gate) where its runtime runs here; then one
commit step (``partialnet.export.output.commit``) moves every artifact that passed into place
and writes the manifest last. An export where nothing passed, or that is interrupted or runs
out of space before the commit, changes nothing.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import partialnet
from partialnet.errors import PartialNetError, UsageError, exception_chain, first_line
from partialnet.export.builders import (
    BuiltArtifact,
    TargetContext,
    build_target,
    check_sdks,
    check_target_options,
)
from partialnet.export.errors import ExportFailure, ParityFailure
from partialnet.export.gate.eager import EagerReference, write_gate_reference
from partialnet.export.gate.inputs import load_inputs
from partialnet.export.gate.parity import BACKBONE_PARITY_IMAGES, PARITY_IMAGES, unverified
from partialnet.export.options import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_MAX_DROP,
    PRECISIONS,
    ExportOptions,
    Precision,
    Target,
    default_opset,
    parse_dynamic_batch,
    parse_imgsz,
    parse_precision,
    parse_targets,
)
from partialnet.export.output.commit import Staged, check_names, commit, disk_is_short, scratch_dir
from partialnet.export.output.existing import Earlier, earlier_export
from partialnet.export.output.files import (
    describe_os_error,
    prepare_output_dir,
    sha256_path,
    size_bytes,
)
from partialnet.export.output.manifest import ArtifactRecord, Manifest, load_manifest
from partialnet.export.output.metadata import artifact_metadata
from partialnet.export.serving.checks import check_serving_options, write_triton
from partialnet.export.source import RANDOM_WEIGHTS_NOTE, ExportSource, resolve_source
from partialnet.export.targets import spec_of, toolchain_packages, with_defaults
from partialnet.inference import to_fp16
from partialnet.machine import cpu_isa, cpu_model, isa_summary
from partialnet.memory import check_export_fits
from partialnet.reparam import reparameterize
from partialnet.versions import package_versions

log = logging.getLogger(__name__)
SIMULATED_BY = "MIL reference interpreter (numpy); approximates, not reproduces, an Apple device"


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
    features: bool = False,
    triton_repo: str | Path | None = None,
    triton_ov_threads: int | None = None,
    triton_ov_hint: str = "latency",
    eval_data: str | Path | None = None,
    calibration_data: str | Path | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    replace: bool = False,
    int8_fallback: bool = True,
    max_drop: float | None = None,
    own_runtime_only: bool = False,
    progress: Callable[[str], None] | None = None,
    **target_options: Any,
) -> Manifest:
    """Export to every requested target; returns the manifest (also written to disk).

    ``features``: export the four stage maps (strides 4, 8, 16, 32) of a backbone instead of
    logits; each output is checked on its own. ``triton_repo``: also lay out a Triton model
    repository of the placed artifacts Triton serves (``partialnet.export.serving.triton``).

    ``eval_data`` (a labelled ImageFolder) and ``calibration_data`` (any image folder) are
    what the gate checks on (see ``partialnet.export.gate.inputs``); with labels every verified
    record gains its accuracy. int8 needs ``calibration_data``.

    ``replace``: the output directory may hold another model's export (other variant, size,
    checkpoint or ``features``); its listed files are removed when this one is placed.
    Without it such a directory is refused before anything is built.

    int8: ``max_drop`` (top-1 points, default 1.0) is the budget; with ``int8_fallback`` an
    artifact that misses it gets its worst layers returned to float until it holds
    (``partialnet.export.int8_fallback``). ``precision="auto"`` (a selection, not an artifact
    precision) places per target the fastest candidate within ``max_drop``
    (``partialnet.export.auto``). ``own_runtime_only``: write only what each target's own
    runtime runs (int8 ONNX without the Q/DQ graphs other targets build from).

    Raises UsageError subclasses for bad input (nothing written), ExportFailure when an
    artifact could not be produced, ParityFailure when an artifact disagrees with the eager
    model. Either way the artifacts that passed are placed in the one commit step (with
    their records added to the earlier ones of the same model); when none passed, the
    directory is left byte-identical.

    ``target_options``: each target's own options by keyword (each ``TargetSpec.options``;
    ``partialnet-export --help`` lists them by target), ignored for targets not asked for.

    Progress goes to the standard ``logging`` logger ``partialnet`` (INFO; warnings at
    WARNING); ``progress`` is deprecated and ignored: configure logging instead.
    """
    if progress is not None:
        warnings.warn(
            "export(progress=...) is ignored: progress is logged to the 'partialnet' logger",
            DeprecationWarning,
            stacklevel=2,
        )
    if PRECISIONS[parse_precision(precision)].selection:  # auto: the fastest that holds
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
            replace=replace,
            imgsz=imgsz,
            batch=batch,
            dynamic_batch=dynamic_batch,
            opset=opset,
            features=features,
            calibration_images=calibration_images,
            int8_fallback=int8_fallback,
            **target_options,
        )
    opts = ExportOptions(
        targets=parse_targets(targets),
        precision=parse_precision(precision),
        input_size=parse_imgsz(imgsz),
        batch=batch,
        dynamic_batch=parse_dynamic_batch(dynamic_batch),
        opset=opset or default_opset(parse_precision(precision)),
        verify=verify,
        target_options=with_defaults(target_options),
        int8_fallback=int8_fallback,
        max_drop=DEFAULT_MAX_DROP if max_drop is None else max_drop,
        own_runtime_only=own_runtime_only,
    )
    check_sdks(opts)
    check_serving_options(opts, features, eval_data, triton_repo, triton_ov_hint)
    source = resolve_source(model_or_checkpoint, variant, features=features)
    checked_options = check_target_options(opts, source.eager.cfg.num_classes)
    if source.random_weights:
        log.warning(RANDOM_WEIGHTS_NOTE)
    size = opts.input_size or source.eager.cfg.meta.input_size
    opts = dataclasses.replace(opts, input_size=size, in_chans=source.eager.cfg.in_chans)
    check_export_fits(source.eager, size, opts.sample_batch)  # --imgsz 8192: refused here
    if eval_data is not None or calibration_data is not None:
        log.info("reading and preprocessing the image folders")
    inputs = load_inputs(
        source.eager.cfg.meta,
        (opts.in_chans, *size),
        opts.precision,
        opts.sample_batch,
        eval_data=eval_data,
        calibration_data=calibration_data,
        calibration_images=calibration_images,
        noise_count=BACKBONE_PARITY_IMAGES if features else PARITY_IMAGES,
    )
    out_dir = prepare_output_dir(Path(output_dir or Path("exports") / source.variant))
    fresh = _fresh_manifest(source, opts, features)
    earlier = earlier_export(out_dir, fresh, replace)  # another model's export: refused here
    stem = f"partialnet-{source.variant}-{size[0]}x{size[1]}-{opts.precision.value}"
    stem += "-features" if features else ""
    check_names(out_dir, _planned_names(stem, opts))  # a file where a directory goes, ...

    log.info("reparameterize: %s -> inference form at %dx%d", source.variant, *size)
    inference = reparameterize(source.eager, size)
    reference = EagerReference(source.eager)
    metadata = artifact_metadata(
        source.variant,
        inference,
        precision=opts.precision.value,
        batch=opts.batch,
        dynamic_batch=opts.dynamic_batch,
        checkpoint=source.checkpoint,
        extra={"preprocessing": inputs.record["preprocessing"]},
    )
    fresh.data = dict(inputs.record)
    if source.backbone_rule is not None:
        fresh.data["backbone_rule"] = source.backbone_rule
    for record in earlier.keep:
        fresh.add(record)
    checked: list[_Checked] = []
    try:
        with scratch_dir(out_dir) as scratch:
            ctx = TargetContext(
                options=opts,
                inference=inference,
                exported=to_fp16(inference) if opts.precision is Precision.FP16 else inference,
                metadata=metadata,
                scratch=Path(scratch),
                stem=stem,
                target_options=checked_options,
                gate_images=inputs.gate,
                calibration=inputs.calibration,
                reference=reference,
            )
            refs = write_gate_reference(ctx, reference, inputs.record) if opts.verify else None
            try:
                for index, target in enumerate(opts.targets, 1):
                    log.info("[%d/%d] %s: exporting", index, len(opts.targets), target.value)
                    started = time.perf_counter()
                    for built in _build(target, ctx, out_dir):
                        parity = _verify(built, ctx)
                        elapsed = time.perf_counter() - started
                        checked.append(_Checked(built, parity, elapsed))
            except Exception:
                # What passed is placed even when a later target fails. An interrupt
                # (KeyboardInterrupt is not an Exception) places nothing.
                try:
                    _commit_passed(checked, out_dir, scratch, fresh, earlier, refs, opts)
                except PartialNetError as exc:  # the target's failure is the news
                    log.info("      nothing was placed: %s", exc)
                raise
            manifest = _commit_passed(checked, out_dir, scratch, fresh, earlier, refs, opts)
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
    except Exception as exc:  # an SDK's own error type; the CLI shows one line of it
        chain = exception_chain(exc)
        if any(isinstance(e, KeyboardInterrupt) for e in chain):
            # torch.onnx wraps an interrupt in its own error: it is still an interrupt.
            raise KeyboardInterrupt from exc
        os_error = next((e for e in chain if isinstance(e, OSError) and e.errno), None)
        if os_error is None and disk_is_short(ctx.scratch, _weight_bytes(ctx)):
            # SDK writers report a full disk their own way (an iostream error without an
            # errno, say); the free space says what they do not.
            os_error = OSError(errno.ENOSPC, "No space left on device")
        if os_error is not None:
            raise ExportFailure(
                describe_os_error(os_error, f"{target.value} export", out_dir)
            ) from exc
        first = first_line(exc, default="")
        raise ExportFailure(
            f"{target.value} export failed: {type(exc).__name__}: {first}; rerun with --debug "
            "for the traceback and report it if the input was valid"
        ) from exc


def _verify(built: BuiltArtifact, ctx: TargetContext) -> dict[str, object]:
    target = built.target.value
    if not ctx.options.verify:
        return unverified("parity check skipped (--no-verify)")
    if built.unverified_reason:
        log.info("      %s: not verified here: %s", target, built.unverified_reason)
        return unverified(built.unverified_reason)
    try:
        earlier = ctx.earlier_verdict(built.staged)
        if earlier is not None:  # the int8 fallback judged these bytes last, by the same rule
            result, simulated = earlier
            log.debug("      %s: the int8 fallback's last verdict is the gate's", target)
        else:
            with built.open_runner(built.staged) as runner:
                result = ctx.judge_runner(runner)
                simulated = bool(runner.info().extra.get("simulated"))
    except PartialNetError:
        raise
    except Exception as exc:  # the runtime could not load or run what was built
        first = first_line(exc, default="")
        raise ExportFailure(
            f"{target}: the runtime could not run the built artifact ({type(exc).__name__}: "
            f"{first}); nothing was placed for it"
        ) from exc
    record = result.to_dict()
    # What the verdict was measured on: int8 kernels (VNNI or not) and a runtime's choice of
    # bf16 differ by CPU, so a pass holds for this ISA; another device re-checks with the
    # reference.
    record["machine"] = {"cpu": cpu_model(), "isa": isa_summary(), "flags": cpu_isa()}
    if simulated:  # the MIL interpreter: checks the program, not an Apple device's arithmetic
        record["status"] = "simulated"
        record["simulated_by"] = SIMULATED_BY
    log.info("      %s: parity %s%s", target, "(simulated) " if simulated else "", result.summary())
    return record


def _reference_record(staged: Path | None, out_dir: Path) -> tuple[dict[str, object], bool]:
    """The reference's record for every artifact, and whether the commit must place it.

    Named by content: an earlier file of that name holds the same arrays. It is kept, so
    that earlier records' sha256 (the zip's timestamps differ) stay true."""
    assert staged is not None
    final = out_dir / staged.name
    kept = final.is_file()
    source = final if kept else staged
    return {
        "path": staged.name,
        "sha256": sha256_path(source),
        "bytes": size_bytes(source),
    }, not kept


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


def _commit_passed(
    checked: list[_Checked],
    out_dir: Path,
    scratch: Path,
    manifest: Manifest,
    earlier: Earlier,
    reference: Path | None,
    opts: ExportOptions,
) -> Manifest:
    """Place every artifact that passed (or cannot be verified here), the gate's reference
    and the manifest listing them with the earlier records, in one step; nothing when none
    passed. A reference no record names any more is removed in the same step."""
    passed = [item for item in checked if item.passed]
    if not passed:
        return load_manifest(out_dir) or manifest
    items = [Staged(i.built.staged, i.built.name) for i in passed]
    ref_record: dict[str, object] | None = None
    if reference is not None:
        ref_record, place_it = _reference_record(reference, out_dir)
        if place_it:
            items.append(Staged(reference, reference.name))
    for item in passed:
        staged = item.built.staged
        record = _record(item, sha256_path(staged), size_bytes(staged), opts)
        record.reference = ref_record  # None with --no-verify
        manifest.add(record)
    listed = {str(r.reference["path"]) for r in manifest.artifacts if r.reference}
    orphans = [p for name, p in earlier.references.items() if name not in listed]
    commit(out_dir, scratch, items, manifest, [*earlier.remove, *orphans])
    for item in passed:
        log.info("      %s: placed %s", item.built.target.value, out_dir / item.built.name)
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


def _fresh_manifest(source: ExportSource, opts: ExportOptions, features: bool) -> Manifest:
    return Manifest(
        source.variant,
        source.checkpoint,
        package_versions(installed_only=True, sdks=toolchain_packages()),
        list(opts.input_size or ()),
        features=features,
    )


def _planned_names(stem: str, opts: ExportOptions) -> dict[str, bool]:
    """Every name this export may place, and whether it is a directory."""
    names: dict[str, bool] = {}
    for target in opts.targets:
        names |= spec_of(target).planned_names(stem, opts.precision)
    return names


def _weight_bytes(ctx: TargetContext) -> int:
    """About what one artifact of this model takes on disk: its weights."""
    return sum(t.numel() * t.element_size() for t in ctx.exported.state_dict().values())
