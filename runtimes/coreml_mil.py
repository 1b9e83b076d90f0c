"""A reference interpreter for saved CoreML ML programs (.mlpackage), in numpy, on any OS.

Core ML itself predicts only on macOS. The ML program inside a package can still be read
anywhere: coremltools rebuilds its MIL program from the package's spec and weight file
(``coremltools.converters.mil.frontend.milproto.load``, private API, hence the pinned
range in ``SUPPORTED_COREMLTOOLS``). ``MilInterpreter`` walks the ``main`` function once at
load, refusing any op type it does not implement (by name), and then runs the op list
with the numpy implementations in ``coreml_ops``.

Precision: every op's result is rounded to the dtype the program declares for it, so an
fp16 program keeps fp16 tensors between ops as Core ML does; inside conv, linear, matmul,
reductions, softmax and the normalizations the arithmetic is float32 (see ``coreml_ops``).
Apple's CPU, GPU and Neural Engine pick their own accumulation, so this approximates, not
reproduces, what a device computes: it checks the program's semantics (op choice, casts,
constants, layouts, preprocessing), not a device's rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from partialnet.errors import InputShapeError, UsageError

from .base import RuntimeUnavailableError
from .coreml_ops import OPS

SUPPORTED_COREMLTOOLS = ((9, 0), (10, 0))
"""coremltools versions whose private MIL loader this was tested with: [9.0, 10.0)."""

_WEIGHTS_DIR = ("Data", "com.apple.CoreML", "weights")


class UnsupportedOpError(RuntimeUnavailableError):
    """The program uses a MIL op type the reference interpreter does not implement."""


def coremltools_unsupported_reason() -> str | None:
    """Why the interpreter cannot load packages with the installed coremltools (None: it can)."""
    import importlib.metadata as md

    try:
        version = md.version("coremltools")
    except md.PackageNotFoundError:
        return "coremltools is not installed: pip install 'partialnet-export[coreml]'"
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(version).release  # a pre-release of 9.0 counts as 9.0
    except InvalidVersion:
        release = ()
    (lo, hi), here = SUPPORTED_COREMLTOOLS, (*release, 0, 0)[:2]
    if lo <= here < hi:
        return None
    return (
        f"the CoreML reference interpreter reads programs with coremltools' private MIL "
        f"loader, tested with coremltools {lo[0]}.x; this is {version}: "
        f"pip install 'coremltools>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}'"
    )


def import_coremltools() -> Any:
    from partialnet.errors import missing_dependency

    reason = coremltools_unsupported_reason()
    if reason is not None and "not installed" in reason:
        raise missing_dependency("coremltools", "coreml", "the CoreML reference interpreter")
    if reason is not None:
        raise RuntimeUnavailableError(reason)
    from .base import import_sdk

    return import_sdk("coremltools", "coreml", "the CoreML reference interpreter")


def load_program(path: str | Path) -> tuple[Any, Any]:
    """(MIL program, Model spec) of a saved ``.mlpackage``, read from disk."""
    ct = import_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load

    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise UsageError(f"{path} is not a CoreML .mlpackage (no Manifest.json): export it first")
    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        kind = spec.WhichOneof("Type")
        raise UsageError(f"{path.name} holds a {kind}, not an ML program: re-export as mlprogram")
    weights = path.joinpath(*_WEIGHTS_DIR)
    program = load(spec, spec.specificationVersion, str(weights) if weights.is_dir() else "")
    return program, spec


@dataclass(frozen=True)
class _Step:
    """One non-const op: its implementation, constant and variable inputs, outputs."""

    op_type: str
    name: str
    consts: dict[str, Any]
    refs: dict[str, str | list[tuple[bool, Any]]]
    outputs: tuple[tuple[str, Any, tuple[int, ...] | None], ...]  # name, dtype, static shape


def _output_kind(var: Any) -> tuple[Any, tuple[int, ...] | None]:
    from coremltools.converters.mil.mil import types

    if not (types.is_tensor(var.sym_type) or types.is_scalar(var.sym_type)):
        return None, None  # str / dict outputs (classify)
    if types.is_str(var.dtype):
        return None, None
    dtype = np.dtype(types.nptype_from_builtin(var.dtype))
    shape = tuple(var.shape)
    static = all(isinstance(d, (int, np.integer)) for d in shape)
    return dtype, tuple(int(d) for d in shape) if static else None


def _dim(d: Any) -> int:
    """A static dimension, or -1 for a flexible (symbolic) one."""
    return int(d) if isinstance(d, (int, np.integer)) else -1


def _is_const(var: Any) -> bool:
    return var.op is not None and var.op.op_type == "const"


def _compile(function: Any) -> list[_Step]:
    unknown = sorted({op.op_type for op in function.operations} - set(OPS) - {"const"})
    if unknown:
        where = next(op.name for op in function.operations if op.op_type == unknown[0])
        raise UnsupportedOpError(
            f"the CoreML reference interpreter does not implement MIL op "
            f"{', '.join(repr(u) for u in unknown)} (first at {where!r}): supported: "
            f"{', '.join(sorted(OPS))}"
        )
    steps = []
    for op in function.operations:
        if op.op_type == "const":
            continue
        consts: dict[str, Any] = {}
        refs: dict[str, Any] = {}
        for key, value in op.inputs.items():
            if isinstance(value, (tuple, list)):
                refs[key] = [(_is_const(v), v.val if _is_const(v) else v.name) for v in value]
            elif _is_const(value):
                consts[key] = value.val
            else:
                refs[key] = value.name
        outs = tuple((v.name, *_output_kind(v)) for v in op.outputs)
        steps.append(_Step(op.op_type, op.name, consts, refs, outs))
    return steps


class MilInterpreter:
    """Runs one ML program's ``main`` function; ``predict`` mimics ``MLModel.predict``.

    ``MilInterpreter.from_package(path)`` reads a saved package; ``MilInterpreter(program)``
    takes a MIL program already in memory (with ``spec`` for image inputs and metadata).
    """

    def __init__(self, program: Any, spec: Any = None, name: str = "ML program") -> None:
        self.name = name
        self.spec = spec
        function = program.functions["main"]
        self.inputs = {
            key: (_output_kind(var)[0], tuple(_dim(d) for d in var.shape))
            for key, var in function.inputs.items()
        }
        self.outputs = [var.name for var in function.outputs]
        self.steps = _compile(function)
        self.op_types = sorted({s.op_type for s in self.steps})
        self._last_use = self._lifetimes()
        self._image_inputs = _image_inputs(spec)
        self.metadata = dict(spec.description.metadata.userDefined) if spec is not None else {}

    @classmethod
    def from_package(cls, path: str | Path) -> MilInterpreter:
        program, spec = load_program(path)
        return cls(program, spec, name=Path(path).name)

    def _lifetimes(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            for ref in step.refs.values():
                names = [ref] if isinstance(ref, str) else [v for c, v in ref if not c]
                for n in names:
                    last[n] = i
        for n in self.outputs:
            last[n] = len(self.steps)
        return last

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        """Execute the program on ``feeds`` (input name -> array); returns every output."""
        env: dict[str, Any] = {}
        for key, (dtype, shape) in self.inputs.items():
            if key not in feeds:
                raise UsageError(f"{self.name} needs input {key!r}; got {sorted(feeds)}")
            value = np.asarray(feeds[key])
            if value.ndim != len(shape) or any(
                d not in (-1, v) for d, v in zip(shape, value.shape, strict=True)
            ):
                raise InputShapeError(
                    f"{self.name} input {key!r} has shape {shape}, got {value.shape}"
                )
            env[key] = value.astype(dtype, copy=False)
        for i, step in enumerate(self.steps):
            args = dict(step.consts)
            for key, ref in step.refs.items():
                if isinstance(ref, str):
                    args[key] = env[ref]
                else:
                    args[key] = [v if c else env[v] for c, v in ref]
            try:
                result = OPS[step.op_type](args)
            except Exception as exc:
                raise RuntimeError(
                    f"MIL op {step.op_type!r} ({step.name}) failed in {self.name}: {exc}"
                ) from exc
            results = result if isinstance(result, (list, tuple)) else (result,)
            for (name, dtype, shape), value in zip(step.outputs, results, strict=True):
                if dtype is not None:
                    value = np.asarray(value).astype(dtype, copy=False)
                    if shape is not None and value.shape != shape:
                        raise RuntimeError(
                            f"MIL op {step.op_type!r} ({step.name}) gave shape {value.shape}, "
                            f"the program declares {shape}"
                        )
                env[name] = value
            for ref in step.refs.values():  # free what no later op reads
                for n in [ref] if isinstance(ref, str) else [v for c, v in ref if not c]:
                    if self._last_use.get(n) == i:
                        env.pop(n, None)
        return {name: env[name] for name in self.outputs}

    def predict(self, features: dict[str, Any]) -> dict[str, Any]:
        """Like ``MLModel.predict``: image inputs take a PIL image or uint8 HWC/NHWC array,
        tensor inputs an array; a classifier returns the label and the label -> probability
        dictionary; tensor outputs come back as numpy arrays."""
        feeds = {}
        for key, value in features.items():
            if key in self._image_inputs:
                feeds[key] = _image_to_tensor(value, self._image_inputs[key], self.inputs[key])
            else:
                feeds[key] = np.asarray(value)
        return self.run(feeds)


def _image_inputs(spec: Any) -> dict[str, tuple[str, int, int]]:
    """Image input name -> (color space, height, width), from the package's description."""
    if spec is None:
        return {}
    out = {}
    for feature in spec.description.input:
        if feature.type.WhichOneof("Type") == "imageType":
            image = feature.type.imageType
            space = type(image).ColorSpace.Name(image.colorSpace)
            out[feature.name] = (space, int(image.height), int(image.width))
    return out


def _image_to_tensor(
    value: Any, image: tuple[str, int, int], program_input: tuple[Any, Sequence[int]]
) -> np.ndarray:
    """Pixels as Core ML hands them to the program: NCHW, 0..255, in the color layout."""
    space, h, w = image
    gray = space.startswith("GRAYSCALE")
    images = value if isinstance(value, (list, tuple)) else [value]
    arrays = []
    for img in images:
        if hasattr(img, "convert") and hasattr(img, "size"):  # a PIL image
            if tuple(img.size) != (w, h):
                raise InputShapeError(
                    f"the package takes {w}x{h} images, got {img.size[0]}x{img.size[1]}: "
                    "resize (and crop) it first"
                )
            img = np.asarray(img.convert("L" if gray else "RGB"))
        arr = np.asarray(img)
        if arr.dtype != np.uint8:
            raise TypeError(f"image inputs take uint8 pixels (or PIL images), got {arr.dtype}")
        if arr.ndim == 4:
            arrays.extend(arr)
        else:
            arrays.append(arr)
    batch = np.stack([a if a.ndim == 3 else a[..., None] for a in arrays])
    channels = 1 if gray else 3
    if batch.shape[1:] != (h, w, channels):
        raise InputShapeError(
            f"the package takes {h}x{w}x{channels} uint8 images (HWC), got {batch.shape[1:]}"
        )
    if space == "BGR":
        batch = batch[..., ::-1]
    tensor = batch.transpose(0, 3, 1, 2).astype(np.float32)
    if program_input[1][0] not in (-1, tensor.shape[0]):
        raise InputShapeError(
            f"the package takes a batch of {program_input[1][0]} images, got {tensor.shape[0]}"
        )
    return tensor
