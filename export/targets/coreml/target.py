"""How the CoreML target is built in scratch (from the inference form through torch.export),
its options (labels file included) checked before any work, and its package opened to verify
it: Core ML on macOS, the MIL reference interpreter elsewhere (``simulated``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partialnet.errors import UsageError
from partialnet.export.options import ExportOptions, Precision, Target
from partialnet.export.targets.base import BuiltArtifact, TargetContext, TargetOption, opener
from partialnet.quiet import muted
from partialnet.runtimes.base import Runtime

OPTIONS = (
    TargetOption(
        "coreml_min_target",
        "--coreml-min-target",
        "iOS16",
        "minimum deployment target (iOS15.., macOS12..)",
    ),
    TargetOption(
        "coreml_image_input",
        "--coreml-image-input",
        False,
        "take an RGB image input with the normalization built in",
        switch=True,
    ),
    TargetOption(
        "coreml_simulate",
        "--coreml-simulate",
        False,
        "verify in the MIL reference interpreter even on macOS (always so elsewhere)",
        switch=True,
    ),
    TargetOption(
        "coreml_class_labels",
        "--coreml-labels",
        None,
        "class labels, one per line: makes a CoreML classifier",
        metavar="FILE",
    ),
)


def check_options(options: ExportOptions, num_classes: int) -> Any:
    """The conversion options, the labels file read and checked against the classes."""
    from partialnet.export.targets.coreml.convert import CoreMLOptions

    own = options.target_options
    labels = None
    if own.get("coreml_class_labels") is not None:
        path = Path(own["coreml_class_labels"])
        labels = _read_labels(path)
        if len(labels) != num_classes:
            raise UsageError(
                f"{path} has {len(labels)} labels for a model with "
                f"{num_classes} classes: give exactly one label per line, one per class"
            )
    # int8: converted in fp32, then its weights quantized (W8).
    precision = "fp32" if options.precision is Precision.INT8 else options.precision.value
    return CoreMLOptions(
        precision=precision,
        minimum_deployment_target=own.get("coreml_min_target", "iOS16"),
        image_input=bool(own.get("coreml_image_input", False)),
        class_labels=labels,
        batch=options.batch,
    )


def _read_labels(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"cannot read class labels file {path}: {reason}") from exc


def build(ctx: TargetContext) -> list[BuiltArtifact]:
    from partialnet.export.targets.coreml.convert import coreml_unverified_reason, export_coreml
    from partialnet.runtimes.coreml import simulate_by_default

    options = ctx.target_options.get(Target.COREML) or check_options(ctx.options, 0)
    name = ctx.artifact_name(Target.COREML)
    staged = ctx.scratch / name
    # coremltools draws tqdm bars on stderr for every pass; the CLI has its own progress.
    with muted(["coremltools"], stderr=True):
        if ctx.int8:  # 8-bit weights (W8); W8A8 calibrates by running the model: macOS only
            from partialnet.export.targets.coreml.int8 import quantize_coreml

            fp32 = ctx.scratch / f"{ctx.stem}-fp32-source.mlpackage"
            facts = export_coreml(ctx.inference, fp32, options, ctx.metadata)
            facts |= quantize_coreml(fp32, staged)
        else:
            facts = export_coreml(ctx.inference, staged, options, ctx.metadata)
    reason = coreml_unverified_reason()
    if reason is None and (options.image_input or options.class_labels):
        reason = "parity runs on the plain tensor-input CoreML model only"
    # None: simulated off macOS only.
    simulate = True if ctx.options.target_options.get("coreml_simulate") else None
    if reason is None and (simulate or simulate_by_default()):
        # The runner runs the program in the MIL reference interpreter: parity then checks
        # the program's semantics, not an Apple device's arithmetic.
        facts["verification"] = "simulated"
    runner = opener(Runtime.COREML, simulate=simulate)
    return [BuiltArtifact(Target.COREML, staged, name, facts, reason, runner)]
