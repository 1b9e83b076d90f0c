"""What every target is made of: its spec (registered once in ``partialnet.export.targets``),
the context its builder works in, and what a builder hands back to be verified and placed.

A builder writes under ``ctx.scratch`` only: nothing reaches the output directory until the
export has checked it (see ``partialnet.export.api``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from partialnet.export.options import ARTIFACT_PRECISIONS, ExportOptions, Precision, Target
from partialnet.runtimes.base import Runtime

if TYPE_CHECKING:  # torch: the device path imports the specs without it
    from partialnet.export.serving.backend import TritonBackend
    from partialnet.inference import InferencePartialNet

log = logging.getLogger(__name__)


class BuiltFrom(str, enum.Enum):
    ONNX = "onnx"  # the exported ONNX (written once per export, shared)
    INFERENCE = "inference"  # the inference-form torch model


@dataclass(frozen=True)
class Sdk:
    """An SDK a target needs to build: looked up (not imported) before any work."""

    module: str
    extra: str  # the pyproject extra that installs it
    purpose: str  # "ONNX export", said in the missing-dependency message


@dataclass(frozen=True)
class TargetOption:
    """A target's own option: its ``export()`` keyword, its CLI flag, default and help.

    ``check`` validates a value before anything is done (whatever the targets); the
    target's ``check_options`` reads the values from ``ExportOptions.target_options``.
    """

    name: str  # the export() keyword, the key in ExportOptions.target_options
    flag: str  # "--<target>-<option>" by convention
    default: Any = None
    help: str = ""
    metavar: str | None = None
    type: Callable[[str], Any] | None = None
    switch: bool = False  # a store_true flag
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class QdqRecipe:
    """An int8 Q/DQ ONNX shaped for one consumer (the Q/DQ quantizer's settings),
    declared by the target that consumes it (``TargetSpec.qdq``). An int8 export of the ONNX
    target writes one graph per recipe (``partialnet.export.targets.onnx.int8``); each
    recipe's module says why its consumer needs it so."""

    flavour: str  # its name in manifests and file names
    serves: str  # who runs it, as the manifest says
    symmetric: bool  # int8 symmetric activations and weights (else uint8 asymmetric activations)
    int32_biases: bool  # biases quantized to int32 (else left in float)
    reduce_range: bool  # weights in a 7-bit range by default


@dataclass(frozen=True)
class TargetSpec:
    """Everything the toolchain knows about one target, in one place.

    ``build`` returns the target's artifacts in scratch; ``check_options`` validates the
    target's own options before anything is written and returns what ``build`` reads back as
    ``ctx.target_options[target]``; ``check_sdk`` goes beyond a package look-up (an SDK
    that must load to say which flavour is installed). ``runner_options`` are the options its
    runtime's runner is opened with to check an artifact of a precision (gate and bench).
    """

    target: Target
    suffix: str  # the artifact's suffix (a directory's too, with ``directory``)
    runtime: Runtime
    built_from: BuiltFrom
    build: Callable[[TargetContext], list[BuiltArtifact]]
    display: str  # the name in messages and help
    summary: str  # one line for the CLI's help
    sdks: tuple[Sdk, ...] = ()
    int8_sdks: tuple[Sdk, ...] = ()
    packages: tuple[str, ...] = ()  # optional tools whose versions manifests record
    precisions: tuple[Precision, ...] = ARTIFACT_PRECISIONS
    options: tuple[TargetOption, ...] = ()
    check_options: Callable[[ExportOptions, int], Any] | None = None
    check_sdk: Callable[[], object] | None = None
    runner_options: Callable[[Precision], dict[str, Any]] = lambda _p: {}
    # What its runner must be told to run a recorded artifact as it was built, from the
    # manifest's precision and details (an execution precision, the SDK flavour it needs).
    artifact_runner_options: Callable[[str, Mapping[str, Any]], dict[str, Any]] = (
        lambda _precision, _details: {}
    )
    # Precisions its runner can be asked to compute in whatever the artifact's (its
    # ``precision`` option; bench's --ov-precision), "auto" the runtime's own pick.
    execution_precisions: tuple[str, ...] = ()
    dynamic_batch: bool = True  # False: a fixed batch only
    # Whether the target's runtime runs this artifact (from its manifest details): not so
    # for an intermediate another target consumes (int8 ONNX: another target's Q/DQ graph).
    for_runtime: Callable[[Mapping[str, Any]], bool] = lambda _details: True
    parity_default: bool = False  # among partialnet-bench parity's default runtimes
    auto: bool = False  # --precision auto builds and times its candidates on this CPU
    directory: bool = False  # the artifact is a directory (an IR pair, an .mlpackage)
    in_all: bool = True  # False: `--target all` leaves it out (its SDK's pins: README)
    # Further files a precision writes beside the artifact (int8 ONNX: other Q/DQ flavours).
    also_writes: Callable[[str, Precision], tuple[str, ...]] = lambda _stem, _p: ()
    triton: TritonBackend | None = None  # how Triton serves it; None: not served
    qdq: QdqRecipe | None = None  # the int8 Q/DQ ONNX it runs or builds from, if any

    @property
    def name(self) -> str:
        return self.target.value

    def planned_names(self, stem: str, precision: Precision) -> dict[str, bool]:
        """Every name an export of this target may place, and whether it is a directory."""
        names = {f"{stem}{self.suffix}": self.directory}
        names.update(dict.fromkeys(self.also_writes(stem, precision), False))
        return names


def opener(runtime: Runtime, **options: Any) -> Callable[[Path], Any]:
    """Opens the artifact at a path with ``runtime``'s runner (lazily: no SDK import now)."""

    def open_it(path: Path) -> Any:
        from partialnet.runtimes import open_runner

        return open_runner(runtime, path, **options)

    return open_it


@dataclass
class BuiltArtifact:
    """An artifact in scratch: ``staged`` is moved to ``<output>/<name>`` once it passes."""

    target: Target
    staged: Path
    name: str
    details: dict[str, Any]
    unverified_reason: str | None
    open_runner: Callable[[Path], Any]


@dataclass
class TargetContext:
    options: ExportOptions
    inference: InferencePartialNet  # fp32 inference form (what INFERENCE targets convert)
    exported: InferencePartialNet  # what goes to ONNX: fp32, or fp16 with fp32 islands
    metadata: dict[str, object]
    scratch: Path
    stem: str
    target_options: dict[Target, Any] = field(default_factory=dict)  # from check_options
    gate_images: Any = None  # parity.GateImages the gate runs on
    calibration: Any = None  # N x C x H x W float32 int8 calibration images, else None
    reference: Any = None  # batch -> eager fp32 outputs (the gate's reference), for int8 search
    _onnx: tuple[Path, dict[str, Any]] | None = field(default=None, init=False)
    _qdq: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict, init=False)
    # path -> (its sha256, the verdict judge() gave those bytes, simulated): the int8
    # fallback's last verdict is the gate's, so the gate does not run the same bytes twice.
    _verdicts: dict[Path, tuple[str, Any, bool]] = field(default_factory=dict, init=False)

    def artifact_name(self, target: Target) -> str:
        from partialnet.export.targets import spec_of

        return f"{self.stem}{spec_of(target).suffix}"

    def onnx(self) -> tuple[Path, dict[str, Any]]:
        """The ONNX of ``exported`` in scratch, written once and shared by the ONNX targets."""
        from partialnet.export.targets.onnx.convert import export_onnx

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
            )
            self._onnx = (path, facts)
        return self._onnx

    @property
    def int8(self) -> bool:
        return self.options.precision is Precision.INT8

    @property
    def int8_fallback(self) -> bool:
        """Whether an int8 build that misses the gate returns layers to float: only when the
        gate runs (``--no-verify`` has nothing to judge a candidate by)."""
        return self.int8 and self.options.int8_fallback and self.options.verify

    def judge(self, path: Path, open_runner: Callable[[Path], Any]) -> Any:
        """The gate's verdict (a ParityResult) on an artifact in scratch, before it is built
        into others: the int8 fallback's check."""
        from partialnet.files import sha256_path

        with open_runner(path) as runner:
            result = self.judge_runner(runner)
            simulated = bool(runner.info().extra.get("simulated"))
        self._verdicts[path.resolve()] = (sha256_path(path), result, simulated)
        return result

    def earlier_verdict(self, path: Path) -> tuple[Any, bool] | None:
        """(verdict, simulated) ``judge`` gave exactly these bytes at ``path`` (None if it did
        not judge them): the gate reuses it instead of running the same images again."""
        from partialnet.files import sha256_path

        found = self._verdicts.get(path.resolve())
        return found[1:] if found and found[0] == sha256_path(path) else None

    def judge_runner(self, runner: Any) -> Any:
        """The gate's verdict (a ParityResult) on an open runner: the gate's own images and
        rule against the eager reference (every output of a backbone)."""
        from partialnet.export.gate.parity import run_parity

        features = self.inference.feature_norms is not None
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
        """The int8 Q/DQ ONNX of one recipe's flavour (``QdqRecipe``), written once; the
        ONNX target's own takes the ONNX artifact's name, the others a ``-<flavour>`` stem."""
        from partialnet.export.targets import spec_of
        from partialnet.export.targets.onnx.int8 import quantize_onnx

        if flavour not in self._qdq:
            fp32, _ = self.onnx()
            own = spec_of(Target.ONNX).qdq
            suffix = "" if own is not None and flavour == own.flavour else f"-{flavour}"
            path = self.scratch / f"{self.artifact_name(Target.ONNX)}"
            path = path.with_name(f"{self.stem}{suffix}{path.suffix}")
            log.info("      int8: calibrating the %s Q/DQ ONNX", flavour)
            if self.int8_fallback:  # a consumer builds from its flavour's fallback result
                from partialnet.export.targets.onnx.fallback import onnx_with_fallback

                facts = onnx_with_fallback(self, fp32, path, flavour)
            else:
                facts = quantize_onnx(fp32, path, self.calibration_batches(), flavour=flavour)
            self._qdq[flavour] = (path, facts)
        return self._qdq[flavour]
