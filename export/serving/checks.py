"""Options and output for serving: the checks ``--features``/``--triton-repo`` need before
anything is written, and the Triton model repository laid out from the placed artifacts."""

from __future__ import annotations

import logging
from pathlib import Path

from partialnet.export.builders import BuiltArtifact, TargetContext
from partialnet.export.errors import ExportFailure
from partialnet.export.options import ExportOptions, Target
from partialnet.export.output.files import describe_os_error
from partialnet.export.targets import spec_of

log = logging.getLogger(__name__)


def check_serving_options(
    opts: ExportOptions,
    features: bool,
    eval_data: object,
    triton_repo: str | Path | None,
    ov_hint: str,
) -> None:
    from partialnet.errors import UsageError
    from partialnet.export.output.files import check_destination

    if features and eval_data is not None:
        raise UsageError(
            "--eval-data measures classification accuracy; a --features backbone has no "
            "classes: check it on --calibration-data images instead"
        )
    if triton_repo is None:
        return
    from partialnet.export.serving.triton import served_names, served_targets

    if not set(served_targets()) & set(opts.targets):
        raise UsageError(
            f"--triton-repo serves {served_names()} artifacts: add one of them to --target"
        )
    if opts.dynamic_batch is not None and opts.dynamic_batch[0] != 1:
        raise UsageError(
            f"Triton batches requests from 1: use --dynamic-batch 1:{opts.dynamic_batch[1]}:"
            f"{opts.dynamic_batch[2]} with --triton-repo"
        )
    if ov_hint not in ("latency", "throughput"):
        raise UsageError(f"--triton-ov-hint {ov_hint!r} is not one of: latency, throughput")
    check_destination(Path(triton_repo), is_dir=True)


def write_triton(
    ctx: TargetContext,
    built: list[tuple[BuiltArtifact, bool]],
    out_dir: Path,
    repo: Path,
    ov_threads: int | None,
    ov_hint: str,
) -> None:
    """A Triton model per placed artifact of a served target (an artifact that cannot be
    inspected here: I/O from the ONNX it was built from)."""
    from partialnet.export.output.manifest import resolve_artifact
    from partialnet.export.serving.triton import write_triton_repository

    items = []
    for artifact, passed in built:
        target, spec = artifact.target, spec_of(artifact.target)
        if not passed or spec.triton is None:
            continue
        if not spec.for_runtime(artifact.details):
            continue  # an intermediate for another target (int8: a second Q/DQ flavour)
        # The placed artifact, proved inside the output directory like every reader's.
        path = resolve_artifact(out_dir, {"target": target.value, "path": artifact.name})
        details = dict(artifact.details)
        if spec.triton.io_from_source:  # the ONNX it was built from: placed, or in scratch
            onnx_path = ctx.onnx()[0]
            placed = out_dir / ctx.artifact_name(Target.ONNX)
            details["onnx"] = str(onnx_path if onnx_path.exists() else placed)
        items.append((target, path, details))
    keys = ("input_size", "input_layout", "mean", "std", "crop_pct", "precision")
    preprocessing = {k: ctx.metadata[k] for k in keys}
    try:
        written = write_triton_repository(
            repo,
            ctx.stem,
            items,
            dynamic_batch=ctx.options.dynamic_batch,
            preprocessing=preprocessing,
            ov_threads=ov_threads,
            ov_hint=ov_hint,
        )
    except OSError as exc:
        raise ExportFailure(describe_os_error(exc, "writing the Triton repository", repo)) from exc
    for directory in written:
        log.info("      triton: wrote %s", directory)
