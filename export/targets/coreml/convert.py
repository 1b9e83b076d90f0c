"""CoreML export: the inference-form torch model -> torch.export -> ML program (.mlpackage).

coremltools converts on any OS but predicts only on macOS; off macOS an exported package is
checked by reading its spec (``coreml_spec_summary``) and by running its program in the MIL
reference interpreter (``partialnet.runtimes.coreml_mil``, a simulation, not a device).

Image input: Core ML's ImageType computes ``scale * pixel + bias[c]`` with one scalar scale,
while the model wants ``(pixel / 255 - mean[c]) / std[c]``. With ``scale = 1/255`` and
``bias[c] = -mean[c]`` Core ML yields ``pixel / 255 - mean[c]``; the traced model starts
with a fixed per-channel multiply by ``1 / std[c]``, which completes the normalization.
"""

from __future__ import annotations

import difflib
import logging
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import partialnet
from partialnet import outputs
from partialnet.errors import UsageError, first_line
from partialnet.export.errors import ExportFailure
from partialnet.export.output.files import atomic_dir, check_destination
from partialnet.export.output.metadata import artifact_metadata, encode_metadata
from partialnet.export.targets.coreml.spec import spec_summary
from partialnet.inference import InferencePartialNet
from partialnet.quiet import muted
from partialnet.runtimes.base import import_sdk

TENSOR_INPUT = "input"
IMAGE_INPUT = "image"
LOGITS_OUTPUT = outputs.LOGITS
# A Core ML classifier's dictionary output is documented as probabilities, so with class
# labels a softmax is appended to the logits; its tensor feeds coremltools' `classify` op,
# whose outputs are the label and the label -> probability dictionary (named by coremltools
# after the label output).
PROBABILITIES_OUTPUT = "probabilities"
LABEL_OUTPUT = "classLabel"
CLASSIFIER_OUTPUTS = (LABEL_OUTPUT, f"{LABEL_OUTPUT}_probs")

# ct.target names that produce an ML program (iOS15 / macOS12 / watchOS8 / tvOS15 and later).
ML_PROGRAM_TARGETS: tuple[str, ...] = (
    *(f"iOS{v}" for v in (15, 16, 17, 18, 26)),
    *(f"macOS{v}" for v in (12, 13, 14, 15, 26)),
    *(f"watchOS{v}" for v in (8, 9, 10, 11, 26)),
    *(f"tvOS{v}" for v in (15, 16, 17, 18, 26)),
)
_NEURAL_NETWORK_ONLY = ("iOS13", "iOS14", "macOS10_15", "macOS10_16", "macOS11", "watchOS6")
_NEURAL_NETWORK_ONLY += ("watchOS7", "tvOS13", "tvOS14")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoreMLOptions:
    """How to convert: precision, deployment target, input kind, classifier labels, batch.

    ``class_labels`` is stored as a tuple (the options are immutable); its length must equal
    the model's number of classes, which ``export_coreml`` checks.
    """

    precision: str = "fp32"
    minimum_deployment_target: str = "iOS16"
    image_input: bool = False
    class_labels: Sequence[str] | None = None
    batch: int = 1

    def __post_init__(self) -> None:
        precision = str(getattr(self.precision, "value", self.precision))
        if precision not in ("fp32", "fp16"):
            raise UsageError(f"unknown CoreML precision {self.precision!r}; valid: fp32, fp16")
        object.__setattr__(self, "precision", precision)
        _check_target(self.minimum_deployment_target)
        if not isinstance(self.image_input, bool):
            raise UsageError(f"image_input must be True or False, got {self.image_input!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise UsageError(f"CoreML batch must be a positive integer, got {self.batch!r}")
        if self.class_labels is not None:
            object.__setattr__(self, "class_labels", _check_labels(self.class_labels))


def _check_target(name: object) -> None:
    if name in ML_PROGRAM_TARGETS:
        return
    valid = ", ".join(ML_PROGRAM_TARGETS)
    if name in _NEURAL_NETWORK_ONLY:
        raise UsageError(
            f"minimum deployment target {name} predates ML programs (iOS15/macOS12/watchOS8/"
            f"tvOS15): choose one of {valid}"
        )
    near = difflib.get_close_matches(str(name), ML_PROGRAM_TARGETS, n=1, cutoff=0.5)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    raise UsageError(f"unknown CoreML minimum deployment target {name!r}{hint}; valid: {valid}")


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str) or not all(isinstance(s, str) for s in labels):
        raise UsageError("class_labels must be a list of strings, one per class")
    out = tuple(labels)
    if not out:
        raise UsageError("class_labels is empty: pass None for a plain 'logits' output")
    dupes = sorted(s for s, n in Counter(out).items() if n > 1)
    if dupes:
        raise UsageError(
            f"class_labels must be unique (a Core ML classifier maps label -> score); "
            f"repeated: {dupes[:5]}"
        )
    return out


def coreml_unverified_reason() -> str | None:
    """Why a CoreML package cannot be checked here (None: it can).

    On macOS Core ML predicts; elsewhere the runner simulates it with the MIL reference
    interpreter, which needs a coremltools in its tested range.
    """
    if sys.platform == "darwin":
        return None
    from partialnet.runtimes.coreml_mil import coremltools_unsupported_reason

    reason = coremltools_unsupported_reason()
    return (
        f"CoreML prediction needs macOS ({platform.system()} here) and {reason}" if reason else None
    )


class CoreMLWrapper(nn.Module):
    """What is traced: ``softmax?(model(x * inv_std?))``.

    ``inv_std`` completes an ImageType's normalization (see the module docstring); the
    softmax turns logits into the probabilities a Core ML classifier reports.
    """

    def __init__(self, model: nn.Module, inv_std: Tensor | None, softmax: bool) -> None:
        super().__init__()
        self.model = model
        self.softmax = softmax
        self.register_buffer("inv_std", inv_std.view(1, -1, 1, 1) if inv_std is not None else None)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if self.inv_std is not None:
            x = x * self.inv_std
        out = self.model(x)
        return torch.softmax(out, dim=-1) if self.softmax else out


def image_preprocessing(model: InferencePartialNet) -> tuple[float, list[float], Tensor]:
    """(ImageType scale, ImageType per-channel bias, per-channel multiplier inside the model)."""
    mean, std = model.cfg.meta.mean, model.cfg.meta.std
    inv_std = torch.tensor([1.0 / s for s in std], dtype=torch.float32)
    return 1.0 / 255.0, [-float(m) for m in mean], inv_std


def wrap_for_coreml(model: InferencePartialNet, options: CoreMLOptions) -> nn.Module:
    """The module torch.export traces: the model itself, or a ``CoreMLWrapper`` around it."""
    inv_std = image_preprocessing(model)[2] if options.image_input else None
    softmax = options.class_labels is not None
    if inv_std is None and not softmax:
        return model
    return CoreMLWrapper(model, inv_std, softmax)


def output_names(model: InferencePartialNet, options: CoreMLOptions) -> list[str]:
    """The traced model's output tensors (a classifier's package exposes CLASSIFIER_OUTPUTS)."""
    if options.class_labels is not None and not outputs.is_backbone(model):
        return [PROBABILITIES_OUTPUT]
    return outputs.output_names(model)


def _check_request(model: nn.Module, path: Path, options: CoreMLOptions) -> None:
    if not isinstance(model, InferencePartialNet):
        raise UsageError(
            f"CoreML export takes the inference form, got {type(model).__name__}: "
            "call partialnet.reparameterize(model, input_size) first"
        )
    if model.precision != "fp32":
        raise UsageError(
            "CoreML export converts the fp32 inference form (not a to_fp16 copy): pass the fp32 "
            "model and CoreMLOptions(precision='fp16')"
        )
    if path.suffix != ".mlpackage":
        raise UsageError(f"a CoreML ML program is saved as a .mlpackage, got {path.name!r}")
    if options.image_input and model.cfg.in_chans != 3:
        raise UsageError(
            f"an RGB image input needs a 3-channel model, this one takes {model.cfg.in_chans}: "
            "export with a tensor input (image_input=False)"
        )
    labels = options.class_labels
    if labels is not None and model.feature_norms is not None:
        raise UsageError("class_labels need a classifier; this model is a features-only backbone")
    if labels is not None and len(labels) != model.cfg.num_classes:
        raise UsageError(
            f"{len(labels)} class labels given for a model with {model.cfg.num_classes} classes: "
            "give exactly one label per class"
        )


def export_coreml(
    model: InferencePartialNet,
    path: Path,
    options: CoreMLOptions,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert ``model`` (fp32 inference form) to an ML program saved at ``path``.

    ``metadata``: what the export embeds in every artifact (``artifact_metadata``; built
    from ``model`` and ``options`` when not given), stored in the package's user-defined
    metadata with the encoding the other targets' artifacts use.

    The package is written beside ``path`` and moved into place only when complete; a
    failure leaves an earlier package at ``path`` as it was. Returns facts for the manifest.
    Raises UsageError for a bad request, ExportFailure when tracing or conversion fails.
    """
    path = Path(path)
    _check_request(model, path, options)
    check_destination(path, is_dir=True)
    ct = import_sdk("coremltools", "coreml", "CoreML export")
    target = getattr(ct.target, options.minimum_deployment_target, None)
    if target is None:
        raise UsageError(
            f"coremltools {ct.__version__} does not know deployment target "
            f"{options.minimum_deployment_target}: upgrade coremltools or choose an older target"
        )
    started = time.perf_counter()
    log.debug("coreml: torch.export of the inference form")
    program = _torch_export(wrap_for_coreml(model, options), model, options.batch)
    log.debug("coreml: converting to an ML program (%s)", options.precision)
    with muted(["coremltools"]):  # per-pass advice; the manifest records what matters
        mlmodel = _convert(ct, program, model, options, target)
    _describe(mlmodel, model, options, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.debug("coreml: saving %s", path)
    _save_atomically(mlmodel, path)
    summary = spec_summary(mlmodel.get_spec())
    return {
        "coremltools": ct.__version__,
        "precision": options.precision,
        "minimum_deployment_target": options.minimum_deployment_target,
        "input": summary["inputs"][0],
        "outputs": [o["name"] for o in summary["outputs"]],
        "image_input": options.image_input,
        "classifier": options.class_labels is not None,
        "ops": dict(sorted(summary["ops"].items())),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _torch_export(
    module: nn.Module, model: InferencePartialNet, batch: int
) -> torch.export.ExportedProgram:
    sample = torch.zeros(batch, model.cfg.in_chans, *model.input_size)
    try:
        with torch.no_grad():
            program = torch.export.export(module, (sample,))
        # coremltools takes the ATEN dialect; export() gives the TRAINING one.
        return program.run_decompositions({})
    except Exception as exc:
        raise ExportFailure(
            f"torch.export of the {model.cfg.name} inference form failed: {exc}"
        ) from exc


def _convert(
    ct: Any,
    program: torch.export.ExportedProgram,
    model: InferencePartialNet,
    options: CoreMLOptions,
    target: Any,
) -> Any:
    import numpy as np

    shape = (options.batch, model.cfg.in_chans, *model.input_size)
    if options.image_input:
        scale, bias, _ = image_preprocessing(model)
        inputs = [
            ct.ImageType(
                name=IMAGE_INPUT,
                shape=shape,
                scale=scale,
                bias=bias,
                color_layout=ct.colorlayout.RGB,
            )
        ]
    else:
        inputs = [ct.TensorType(name=TENSOR_INPUT, shape=shape, dtype=np.float32)]
    names = output_names(model, options)
    classifier = None
    if options.class_labels is not None:
        classifier = ct.ClassifierConfig(
            list(options.class_labels),
            predicted_feature_name=LABEL_OUTPUT,
            predicted_probabilities_output=PROBABILITIES_OUTPUT,
        )
    precision = ct.precision.FLOAT16 if options.precision == "fp16" else ct.precision.FLOAT32
    try:
        return ct.convert(
            program,
            convert_to="mlprogram",
            inputs=inputs,
            # float32 outputs in fp16 too (as the ONNX export): coremltools adds the cast.
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n in names],
            classifier_config=classifier,
            minimum_deployment_target=target,
            compute_precision=precision,
            # Loading compiles the model (macOS only); parity loads the saved package instead.
            skip_model_load=True,
        )
    except Exception as exc:
        raise ExportFailure(_conversion_message(exc, program, model.cfg.name)) from exc


def _conversion_message(exc: BaseException, program: Any, variant: str) -> str:
    """Name the torch op (and the modules that use it) when coremltools rejects one."""
    text = first_line(exc, None)
    message = f"coremltools could not convert the {variant} inference form: {text}"
    kind = _unsupported_kind(text)
    if kind is None:
        return message
    where = locate_op(program, kind)
    found = f" used by {', '.join(where[:5])}" if where else ""
    return (
        f"{message}\ncoremltools has no converter for torch op '{kind}'{found}: that op must be "
        "replaced in the inference form (partialnet/inference.py), or a newer coremltools used"
    )


def _unsupported_kind(text: str) -> str | None:
    marker = "convert function for op '"
    start = text.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = text.find("'", start)
    return text[start:end] if end > start else None


def locate_op(program: Any, kind: str) -> list[str]:
    """The module paths (``stages.0.0.mixer.gate``) whose graph nodes call torch op ``kind``."""
    base = kind.lower().removeprefix("aten::").removeprefix("aten.").split(".")[0].strip("_")
    found: list[str] = []
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        parts = str(node.target).split(".")
        name = (parts[1] if parts[0] == "aten" and len(parts) > 1 else parts[-1]).lower()
        if name.strip("_") != base:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        where = next(reversed(stack.values()))[0] if stack else "<top level>"
        where = where or "<top level>"
        if where not in found:
            found.append(where)
    return found


def _describe(
    mlmodel: Any,
    model: InferencePartialNet,
    options: CoreMLOptions,
    metadata: dict[str, Any] | None,
) -> None:
    """The export's one metadata schema (as every other target's artifact carries it) plus
    Core ML's own descriptive fields, which Xcode shows."""
    h, w = model.input_size
    if metadata is None:
        metadata = artifact_metadata(
            model.cfg.name,
            model,
            precision=options.precision,
            batch=options.batch,
            dynamic_batch=None,
            checkpoint=None,
        )
    metadata = {**metadata, "image_input": options.image_input}
    mlmodel.author = f"partialnet-export {partialnet.__version__}"
    if model.feature_norms is not None:
        produces = "4 stage feature maps"
    elif options.class_labels is not None:
        produces = "class label and probabilities"
    else:
        produces = f"logits over {model.cfg.num_classes} classes"
    mlmodel.short_description = (
        f"PartialNet-{model.cfg.name} ({h}x{w}, {metadata['precision']}): {produces}"
    )
    mlmodel.user_defined_metadata.update(encode_metadata(metadata))
    if options.image_input:
        mlmodel.input_description[IMAGE_INPUT] = (
            f"RGB image {w}x{h}; normalized inside the model with the mean/std in the metadata"
        )
    else:
        mlmodel.input_description[TENSOR_INPUT] = (
            f"float32 NCHW batch, RGB scaled to [0,1] then (x - mean) / std, {h}x{w}"
        )


def _save_atomically(mlmodel: Any, path: Path) -> None:
    """Save beside ``path`` and swap it in; an earlier package survives any failure."""
    try:
        with atomic_dir(path) as staged:
            try:
                mlmodel.save(str(staged))
            except Exception as exc:
                raise ExportFailure(f"saving the CoreML package to {path} failed: {exc}") from exc
            if not (staged / "Manifest.json").is_file():
                raise ExportFailure(f"coremltools wrote no complete package for {path.name}")
    except OSError as exc:
        raise ExportFailure(f"moving the CoreML package into {path} failed: {exc}") from exc
