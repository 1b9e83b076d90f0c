"""``partialnet-export``: the command-line front door of the toolchain."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

from partialnet.config import list_variants
from partialnet.errors import PartialNetError
from partialnet.export.cli.errors import EXIT_OK, debug_requested, run_guarded
from partialnet.export.cli.progress import progress_to_stderr
from partialnet.export.errors import ParityFailure
from partialnet.export.options import (
    DEFAULT_CALIBRATION_IMAGES,
    DEFAULT_OPSET,
    INT8_OPSET,
    PRECISIONS,
    Precision,
    parse_targets,
)
from partialnet.export.output.manifest import ArtifactRecord, Manifest
from partialnet.export.serving.triton import served_names
from partialnet.export.targets import TARGETS, TargetOption

PROG = "partialnet-export"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" only where there is a default and the help does not already
    say what it is (else "(default: None)" follows a help that states the real default)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or "(default" in text or "%(default)" in text:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Export PartialNet to verified "
        + ", ".join(spec.summary for spec in TARGETS)
        + ". Every artifact is built from the re-parameterized inference form and, where its "
        "runtime runs here, checked against the eager model.",
        formatter_class=_HelpFormatter,
    )
    src = p.add_argument_group("model")
    src.add_argument(
        "--variant",
        metavar="{" + ",".join(list_variants()) + "}",
        help="PartialNet variant; taken from the checkpoint when omitted",
    )
    src.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="authors' .ckpt, a .pth state dict or .safetensors; without it the weights are random",
    )
    src.add_argument(
        "--features",
        action="store_true",
        help="export the backbone's four stage maps feat0..feat3 (strides 4, 8, 16, 32) "
        "instead of logits; a classifier checkpoint's head is dropped (the manifest says how)",
    )
    out = p.add_argument_group("artifacts")
    out.add_argument(
        "--target",
        default="onnx",
        help=f"comma-separated {', '.join(s.name for s in TARGETS)}, or all ("
        + "; ".join(f"{s.name}: {s.summary}" for s in TARGETS)
        + ")",
    )
    calibrated = [p.value for p, s in PRECISIONS.items() if s.needs_calibration]
    out.add_argument(
        "--precision",
        default=Precision.FP32.value,
        choices=[p.value for p in PRECISIONS],
        help=f"{', '.join(calibrated)} needs --calibration-data; "
        + "; ".join(f"{p.value}: {s.summary}" for p, s in PRECISIONS.items() if s.selection),
    )
    out.add_argument(
        "--imgsz",
        metavar="H[,W]",
        default=None,
        help="input size, multiples of 32 (default: the variant's, 224)",
    )
    batch = out.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="static batch size")
    batch.add_argument(
        "--dynamic-batch",
        metavar="MIN:OPT:MAX",
        default=None,
        help="dynamic batch axis with this range "
        f"({', '.join(s.display for s in TARGETS if s.dynamic_batch)})",
    )
    out.add_argument(
        "--opset",
        type=int,
        default=None,
        help=f"ONNX opset (default: {DEFAULT_OPSET}; {INT8_OPSET} for int8, whose native Gelu "
        "runs faster between quantized convs)",
    )
    out.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help="output directory (default: exports/<variant>/)",
    )
    out.add_argument(
        "--replace",
        action="store_true",
        help="the output directory may hold another model's export (other variant, size, "
        "checkpoint or --features): remove the files its manifest lists when this one is placed",
    )
    out.add_argument(
        "--no-verify", action="store_true", help="skip the parity gate against the eager model"
    )
    out.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of a failure (also PARTIALNET_DEBUG=1)",
    )
    out.add_argument(
        "--int8-fallback",
        default="on",
        choices=["on", "off"],
        help="int8: when an artifact misses the int8 rule, return its most damaging layers to "
        "float one at a time until it holds (off: refuse it, as before)",
    )
    out.add_argument(
        "--max-drop",
        type=float,
        default=None,
        metavar="P",
        help="int8 and auto: top-1 points the artifact may lose against the eager fp32 model "
        "on --eval-data (default 1.0; without labels the agreement rules apply)",
    )
    data = p.add_argument_group("images (checked and preprocessed before anything is written)")
    data.add_argument(
        "--eval-data",
        metavar="DIR",
        default=None,
        help="labelled images (one sub-folder per class, sorted names = class indices): the "
        "gate checks on them and the manifest gains each artifact's top-1/top-5",
    )
    data.add_argument(
        "--calibration-data",
        metavar="DIR",
        default=None,
        help="any folder of images (searched recursively): calibrates int8, and is what the "
        "gate checks on when there are no eval images (default: seeded noise)",
    )
    data.add_argument(
        "--calibration-images",
        type=int,
        default=DEFAULT_CALIBRATION_IMAGES,
        metavar="N",
        help="a seeded sample of this many calibration images",
    )
    serve = p.add_argument_group("Triton Inference Server")
    serve.add_argument(
        "--triton-repo",
        metavar="DIR",
        default=None,
        help="also lay out a Triton model repository here: one model per "
        f"{served_names('/', '/')} artifact, with config.pbtxt and 1/model.*",
    )
    for spec in TARGETS:  # the serving options of the targets' Triton backends
        for option in spec.triton.options if spec.triton else ():
            _add_target_option(serve, option)
    for spec in TARGETS:  # each target's own options, under its name
        if spec.options:
            group = p.add_argument_group(spec.display)
            for option in spec.options:
                _add_target_option(group, option)
    return p


def _add_target_option(group: argparse._ArgumentGroup, option: TargetOption) -> None:
    if option.switch:
        group.add_argument(option.flag, dest=option.name, action="store_true", help=option.help)
        return
    group.add_argument(
        option.flag,
        dest=option.name,
        default=option.default,
        type=option.type,
        metavar=option.metavar,
        choices=option.choices,
        help=option.help,
    )


def _verdict(a: ArtifactRecord) -> str:
    if a.parity.get("status") == "unverified":
        return f"unverified: {a.parity['reason']}"
    simulated = " simulated" if a.parity.get("status") == "simulated" else ""
    text = ("pass" if a.status == "ok" else "FAIL") + simulated
    text += f" (cos {a.parity['cosine']:.6f}, rel {a.parity['max_rel']:.1e}"
    if a.parity.get("outputs"):
        text += f", worst of {len(a.parity['outputs'])} outputs"
    else:
        text += f", top-1 agreement {a.parity['top1_agreement']:.1%}"
    accuracy = a.accuracy or a.parity.get("accuracy")
    if accuracy:
        text += (
            f", accuracy {accuracy['top1']:.2%} top-1 / {accuracy['top5']:.2%} top-5, eager "
            f"fp32 {accuracy['reference_top1']:.2%}"
        )
    if a.parity.get("inputs"):
        text += f"; {a.parity['images']} {a.parity['inputs']}"
    return text + ")"


def _table(records: list[ArtifactRecord]) -> str:
    rows = [("target", "file", "size", "seconds", "parity")]
    for a in records:
        rows.append((a.target, a.path, f"{a.bytes / 1e6:.1f} MB", f"{a.seconds:.1f}", _verdict(a)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    ]
    return "\n".join(lines)


def _asked(manifest: object, targets: set[str]) -> list[ArtifactRecord]:
    records = manifest.artifacts if isinstance(manifest, Manifest) else []
    return [a for a in records if a.target in targets]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()

    def line(_record: logging.LogRecord, text: str) -> str:
        return f"[{time.perf_counter() - started:6.1f}s] {text}"

    def body() -> int:
        from partialnet.export.api import export

        manifest = export(
            args.checkpoint,
            variant=args.variant,
            targets=args.target,
            precision=args.precision,
            imgsz=args.imgsz,
            batch=args.batch,
            dynamic_batch=args.dynamic_batch,
            opset=args.opset,
            output_dir=args.output,
            verify=not args.no_verify,
            features=args.features,
            triton_repo=args.triton_repo,
            triton_ov_threads=args.triton_ov_threads,
            triton_ov_hint=args.triton_ov_hint,
            eval_data=args.eval_data,
            calibration_data=args.calibration_data,
            calibration_images=args.calibration_images,
            replace=args.replace,
            int8_fallback=args.int8_fallback == "on",
            max_drop=args.max_drop,
            **{o.name: getattr(args, o.name) for spec in TARGETS for o in spec.options},
        )
        print(_table(_asked(manifest, _targets(args.target))))
        return EXIT_OK

    def on_failure(exc: PartialNetError) -> None:
        if isinstance(exc, ParityFailure):
            print(_table(_asked(exc.manifest, _targets(args.target)) + list(exc.rejected)))

    # --debug also prints the SDKs' build chatter the library logs at DEBUG.
    level = logging.DEBUG if debug_requested(args.debug) else logging.INFO
    with progress_to_stderr(line, level):
        return run_guarded(
            PROG, body, debug=args.debug, on_failure=on_failure, interrupted=INTERRUPTED
        )


# An interrupt is held back while the commit step places the artifacts, so the directory
# holds the earlier export or the whole new one, never a mix.
INTERRUPTED = (
    "interrupted; the output directory was left as it was (or, when the interrupt came "
    "while the finished export was being placed, holds all of it)"
)


def _targets(target_arg: str) -> set[str]:
    return {t.value for t in parse_targets(target_arg)}
